"""Recipe config: YAML loading, dotted overrides with YAML types, and one-line errors that name the key."""

from __future__ import annotations

import copy

import pytest
import yaml

from pipelines import HubtuneError, RecipeConfig, load_recipe_config
from pipelines.config import TRAINING_DEFAULTS, read_recipe_file


@pytest.fixture
def minimal() -> dict:
    """The smallest valid recipe (nothing is loaded at config time, so the paths need not exist)."""
    return {"name": "cfg", "model": {"checkpoint": "/models/tiny"}, "data": {"files": {"train": "/data/train.csv"}}}


def write_yaml(path, tree) -> str:
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return str(path)


def test_yaml_file_loads_into_typed_sections(tmp_path):
    tree = {
        "name": "from-yaml",
        "seed": 7,
        "output_dir": str(tmp_path / "out"),
        "model": {"checkpoint": "/models/tiny", "from_scratch": False},
        "data": {
            "files": {"train": "a.csv", "test": "b.csv"},
            "labels": ["neg", "pos"],
            "max_length": 48,
            "validation_split": None,
            "validation_fraction": 0.25,
        },
        "adapt": {
            "strategy": "peft",
            "peft": {"method": "lora", "r": 4, "alpha": 8, "dropout": 0, "target_modules": ["query"]},
        },
        "training": {"learning_rate": 1e-3, "num_train_epochs": 2},
    }
    config = load_recipe_config(write_yaml(tmp_path / "recipe.yaml", tree))

    assert isinstance(config, RecipeConfig)
    assert config.name == "from-yaml" and config.seed == 7
    assert config.resolved_output_dir == tmp_path / "out"
    assert config.model.checkpoint == "/models/tiny"
    assert config.data.files == {"train": "a.csv", "test": "b.csv"}
    assert config.data.labels == ["neg", "pos"]
    assert config.data.max_length == 48
    assert config.data.validation_split is None
    assert config.data.validation_fraction == 0.25
    assert config.adapt.strategy == "peft"
    assert (config.adapt.peft.method, config.adapt.peft.r, config.adapt.peft.alpha) == ("lora", 4, 8)
    # An int given for a float field becomes a float.
    assert config.adapt.peft.dropout == 0.0 and isinstance(config.adapt.peft.dropout, float)
    assert config.adapt.peft.target_modules == ["query"]
    # The training section is merged over hubtune's defaults: given keys win, the others stay.
    assert config.training["learning_rate"] == 1e-3
    assert config.training["num_train_epochs"] == 2
    assert config.training["eval_strategy"] == TRAINING_DEFAULTS["eval_strategy"]
    assert "report_to" not in config.training  # chosen at run time from the installed local trackers
    # Sections not given keep their defaults.
    assert config.hub.push is False and config.overwrite is False


def test_default_output_dir_is_runs_slash_name(minimal):
    assert str(load_recipe_config(values=minimal).resolved_output_dir) == "runs/cfg"


def test_dotted_overrides_get_yaml_types(tmp_path, minimal):
    path = write_yaml(tmp_path / "recipe.yaml", {**minimal, "training": {"num_train_epochs": 4}})
    config = load_recipe_config(
        path,
        overrides=[
            "training.num_train_epochs=7",
            "data.max_length=64",
            "overwrite=true",
            "model.from_scratch=false",
            "adapt.strategy=peft",
            "adapt.peft.target_modules=[query, value]",
            "adapt.peft.dropout=0",
            "data.validation_split=null",
            "data.labels=[neg, pos]",
            "hub.repo_id=me/tiny",
            "training.resume=false",
        ],
    )
    assert config.training["num_train_epochs"] == 7 and type(config.training["num_train_epochs"]) is int
    assert config.data.max_length == 64 and type(config.data.max_length) is int
    assert config.overwrite is True
    assert config.model.from_scratch is False
    assert config.adapt.strategy == "peft"
    assert config.adapt.peft.target_modules == ["query", "value"]
    assert config.adapt.peft.dropout == 0.0 and type(config.adapt.peft.dropout) is float
    assert config.data.validation_split is None
    assert config.data.labels == ["neg", "pos"]
    assert config.hub.repo_id == "me/tiny"
    assert config.training["resume"] is False
    # Untouched values of the file survive next to the overrides.
    assert config.data.files == minimal["data"]["files"]


def test_overrides_apply_in_order_and_win_over_values(minimal):
    config = load_recipe_config(values=minimal, overrides=["seed=1", "seed=3", "data.max_length=16"])
    assert config.seed == 3
    assert config.data.max_length == 16


def test_overrides_do_not_mutate_the_callers_values(minimal):
    values = {**minimal, "training": {"num_train_epochs": 4}}
    before = copy.deepcopy(values)
    load_recipe_config(
        values=values, overrides=["data.max_length=16", "training.num_train_epochs=1", "model.revision=v2"]
    )
    # A dict recipe is often reused (one base, several runs); an override must not leak into it.
    assert values == before
    # And so a second load of the same dict without overrides sees the original values.
    again = load_recipe_config(values=values)
    assert again.data.max_length == 128
    assert again.training["num_train_epochs"] == 4
    assert again.model.revision == "main"


@pytest.mark.parametrize(
    ("override", "key", "suggestion"),
    [
        ("nmae=x", "nmae", "name"),
        ("outptu_dir=/tmp/x", "outptu_dir", "output_dir"),
        ("adapt.strategi=peft", "adapt.strategi", "adapt.strategy"),
        ("data.text_colum=sentence", "data.text_colum", "data.text_column"),
        ("model.chekpoint=/x", "model.chekpoint", "model.checkpoint"),
        ("adapt.peft.target_module=[query]", "adapt.peft.target_module", "adapt.peft.target_modules"),
        ("training.learning_rat=0.1", "training.learning_rat", "training.learning_rate"),
        ("training.num_train_epoch=2", "training.num_train_epoch", "training.num_train_epochs"),
    ],
)
def test_unknown_key_names_full_dotted_key_and_closest(minimal, override, key, suggestion):
    with pytest.raises(HubtuneError) as caught:
        load_recipe_config(values=minimal, overrides=[override])
    message = str(caught.value)
    assert f"'{key}'" in message
    assert f"did you mean '{suggestion}'" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("tree_patch", "key", "suggestion"),
    [
        ({"seeed": 1}, "seeed", "seed"),
        ({"adapt": {"strategi": "peft"}}, "adapt.strategi", "adapt.strategy"),
        ({"data": {"files": {"train": "a.csv"}, "max_lenght": 12}}, "data.max_lenght", "data.max_length"),
        (
            {"training": {"per_device_train_batchsize": 8}},
            "training.per_device_train_batchsize",
            "training.per_device_train_batch_size",
        ),
    ],
)
def test_unknown_key_in_yaml_file(tmp_path, minimal, tree_patch, key, suggestion):
    path = write_yaml(tmp_path / "recipe.yaml", {**minimal, **tree_patch})
    with pytest.raises(HubtuneError, match=f"unknown recipe key '{key}'; did you mean '{suggestion}'"):
        load_recipe_config(path)


def test_unknown_key_without_close_match_lists_valid_keys(minimal):
    with pytest.raises(HubtuneError) as caught:
        load_recipe_config(values=minimal, overrides=["hub.zzzzzz=1"])
    message = str(caught.value)
    assert "'hub.zzzzzz'" in message
    for valid in ("push", "repo_id", "private"):
        assert valid in message


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.max_length=abc", "data.max_length"),
        ("adapt.n=true", "adapt.n"),
        ("adapt.peft.r=2.5", "adapt.peft.r"),
        ("seed=[1, 2]", "seed"),
        ("overwrite=1", "overwrite"),
        ("model.from_scratch=maybe", "model.from_scratch"),
        ("data.labels=negative", "data.labels"),
        ("data.files=train.csv", "data.files"),
        ("model=3", "model"),
        ("adapt.peft.target_modules=[query, 3]", "adapt.peft.target_modules[1]"),
        ("training.resume=3", "training.resume"),
    ],
)
def test_wrong_type_names_the_key(minimal, override, key):
    with pytest.raises(HubtuneError) as caught:
        load_recipe_config(values=minimal, overrides=[override])
    assert f"'{key}'" in str(caught.value)


def test_override_through_a_value_is_an_error(minimal):
    with pytest.raises(HubtuneError, match="override 'name.first'.*'name' is not a section"):
        load_recipe_config(values=minimal, overrides=["name.first=x"])


@pytest.mark.parametrize("override", ["training.num_train_epochs", "=3", "training.x=[unclosed"])
def test_malformed_override(minimal, override):
    with pytest.raises(HubtuneError, match="override"):
        load_recipe_config(values=minimal, overrides=[override])


def test_unknown_adapt_strategy_suggests_closest(minimal):
    with pytest.raises(HubtuneError) as caught:
        load_recipe_config(values=minimal, overrides=["adapt.strategy=pefft"])
    message = str(caught.value)
    assert "'pefft'" in message and "'adapt.strategy'" in message
    assert "did you mean 'peft'" in message and "\n" not in message


def test_unknown_adapt_strategy_without_close_match_lists_them(minimal):
    with pytest.raises(HubtuneError) as caught:
        load_recipe_config(values=minimal, overrides=["adapt.strategy=xyz"])
    message = str(caught.value)
    for strategy in ("full", "freeze_backbone", "train_last_n", "peft", "lp_ft"):
        assert strategy in message


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"name": ""}, "name"),
        ({"model": {}}, "model.checkpoint"),
        ({"data": {"dataset": "imdb", "files": {"train": "a.csv"}}}, "data"),
        ({"data": {"files": {"train": "a.csv"}, "in_memory": {"train": "a list"}}}, "data.in_memory"),
        ({"data": {"files": {"train": "a.csv"}, "validation_fraction": 1.5}}, "data.validation_fraction"),
        ({"data": {"files": {"train": "a.csv"}, "labels": ["a", "b", "a"]}}, "data.labels"),
        ({"adapt": {"strategy": "train_last_n", "n": 0}}, "adapt.n"),
        ({"adapt": {"strategy": "peft"}, "model": {"checkpoint": "/m", "from_scratch": True}}, "model.from_scratch"),
        ({"training": {"output_dir": "/tmp/x"}}, "output_dir"),
    ],
)
def test_invalid_combinations(minimal, patch, key):
    with pytest.raises(HubtuneError) as caught:
        load_recipe_config(values={**minimal, **patch})
    assert key in str(caught.value)


def test_a_data_section_without_files_loads_and_is_refused_where_data_is_read(minimal):
    """`Recipe.run(data=...)` brings the data of a recipe that names none; without it, reading the data says what
    the section needs."""
    config = load_recipe_config(values={**minimal, "data": {}})
    with pytest.raises(HubtuneError, match="^recipe section 'data' needs 'dataset' \\(a Hub id\\) or 'files'"):
        config.data.check_source()
    config = load_recipe_config(values={**minimal, "data": {"in_memory": {"train": "in-memory list, 8 rows"}}})
    with pytest.raises(HubtuneError, match="given to Recipe.run\\(data=...\\) \\(train: in-memory list, 8 rows\\)"):
        config.data.check_source()


def test_missing_recipe_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(HubtuneError) as caught:
        load_recipe_config(path)
    assert str(path) in str(caught.value)
    assert "does not exist" in str(caught.value)


def test_recipe_file_that_does_not_parse(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: tiny\nmodel: {checkpoint: [unclosed\n")
    with pytest.raises(HubtuneError) as caught:
        load_recipe_config(path)
    message = str(caught.value)
    assert str(path) in message and "does not parse" in message
    assert "\n" not in message  # PyYAML's multi-line explanation is folded onto one line


def test_recipe_file_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- name\n- model\n")
    with pytest.raises(HubtuneError, match="must hold a mapping"):
        load_recipe_config(path)


@pytest.mark.parametrize(
    "adapt",
    [
        ["adapt.strategy=peft", "adapt.peft.target_modules=[query]"],
        ["adapt.strategy=train_last_n", "adapt.n=1"],
        ["adapt.strategy=lp_ft", "adapt.lp_ft.then=train_last_n"],
        ["adapt.strategy=freeze_backbone", "adapt.feature_cache=true"],
    ],
)
def test_dumped_recipe_round_trips(tmp_path, minimal, adapt):
    from pipelines.config import dump_recipe_config

    config = load_recipe_config(values=minimal, overrides=[*adapt, "training.num_train_epochs=2"])
    dump_recipe_config(config, tmp_path / "recipe.yaml")
    again = load_recipe_config(tmp_path / "recipe.yaml")
    assert again.to_dict() == config.to_dict() and type(again.adapt) is type(config.adapt)


def test_yaml_1_2_scalars_no_stays_a_string_and_exponent_floats_are_numbers(tmp_path):
    """PyYAML's YAML 1.1 would read `no` as False (an invalid strategy) and `1e-4` as a string."""
    path = tmp_path / "recipe.yaml"
    path.write_text(
        "name: x\nmodel: {checkpoint: a}\ndata: {files: {train: t.csv}}\n"
        "training: {eval_strategy: no, learning_rate: 1e-4, disable_tqdm: true}\n"
    )
    config = load_recipe_config(path, ["training.save_strategy=no", "training.weight_decay=1e-2"])
    assert config.training["eval_strategy"] == "no" and config.training["save_strategy"] == "no"
    assert config.training["learning_rate"] == 1e-4 and config.training["weight_decay"] == 0.01
    assert config.training["disable_tqdm"] is True


def test_a_self_referring_alias_is_one_line_naming_it(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("name: r\nmodel: {checkpoint: x}\ndata:\n  files: &loop {train: *loop}\n")
    with pytest.raises(
        HubtuneError, match=r"does not parse as YAML: the alias at line 4 .* refers to a node that contains it"
    ):
        load_recipe_config(recipe)


@pytest.mark.parametrize(
    ("content", "byte"),
    [("name: caf\u00e9\n".encode("latin-1"), 9), ("name: r\n".encode("utf-16"), 0), (b"name: r\n\xff\xfe\x00", 8)],
    ids=["latin-1", "utf-16", "binary"],
)
def test_a_recipe_that_is_not_utf8_is_one_line(tmp_path, content, byte):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_bytes(content)
    with pytest.raises(
        HubtuneError, match=f"is not UTF-8 text \\(byte {byte} cannot be read as UTF-8\\); save it as UTF-8"
    ):
        load_recipe_config(recipe)


def test_aliases_of_aliases_are_checked_once(tmp_path):
    """Ten levels of nine aliases each name 9**10 nodes; each is read once, not once per path."""
    levels = ["a0: &a0 [1, 2, 3]"] + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("\n".join(levels) + "\nname: r\n")
    assert read_recipe_file(recipe)["name"] == "r"


@pytest.mark.parametrize(
    "key",
    ["per_device_train_batch_size", "learning_rate", "num_train_epochs", "max_steps", "gradient_accumulation_steps"],
)
@pytest.mark.parametrize("written", ["", "null"])
def test_an_empty_or_null_training_value_is_one_line_at_load(recipe_values, key, written):
    """TrainingArguments took None and the run died mid-way with a traceback, leaving a half run folder."""
    with pytest.raises(HubtuneError, match=f"recipe key 'training.{key}' must be .*, got null .*remove the key"):
        load_recipe_config(values=recipe_values, overrides=[f"training.{key}={written}"])
