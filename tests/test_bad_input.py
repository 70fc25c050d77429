"""Bad input: one HubtuneError naming the file/column/key, CLI exit code 2 with one error line, no run folder."""

from __future__ import annotations

import copy
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from pipelines import HubtuneError, Recipe
from pipelines.commands.cli import main


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


# Each case turns a valid recipe (dict) into a broken one and returns the substrings its error must contain.
Case = Callable[[dict, Path], list[str]]


def missing_text_column(values: dict, tmp: Path) -> list[str]:
    path = write(tmp / "train.csv", "sentence,label\nthe film was good,positive\nawful plot,negative\n")
    values["data"]["files"]["train"] = path
    return [path, "'text'", "data.text_column"]


def missing_label_column(values: dict, tmp: Path) -> list[str]:
    path = write(tmp / "test.csv", "text,sentiment\nthe film was good,positive\nawful plot,negative\n")
    values["data"]["files"]["test"] = path
    return [path, "'label'", "data.label_column"]


def label_not_in_labels(values: dict, tmp: Path) -> list[str]:
    path = write(
        tmp / "validation.csv",
        "text,label\nthe film was good,positive\nthe film was fine,neutral\nawful plot,negative\n",
    )
    values["data"]["files"]["validation"] = path
    return [path, "row 2", "'neutral'", "'label'"]


def empty_split(values: dict, tmp: Path) -> list[str]:
    path = write(tmp / "test.csv", "text,label\n")
    values["data"]["files"]["test"] = path
    return [path, "empty"]


def data_file_missing(values: dict, tmp: Path) -> list[str]:
    path = str(tmp / "no-such-train.csv")
    values["data"]["files"]["train"] = path
    return [path, "does not exist"]


def malformed_csv(values: dict, tmp: Path) -> list[str]:
    path = write(tmp / "train.csv", "text,label\nthe film was good,positive\nawful,plot,negative,extra\n")
    values["data"]["files"]["train"] = path
    return [path, "does not parse"]


def unsupported_extension(values: dict, tmp: Path) -> list[str]:
    path = write(tmp / "train.txt", "text,label\n")
    values["data"]["files"]["train"] = path
    return [path, "'.txt'"]


def text_cell_not_text(values: dict, tmp: Path) -> list[str]:
    path = write(
        tmp / "train.jsonl", '{"text": "the film was good", "label": "positive"}\n{"text": 42, "label": "negative"}\n'
    )
    values["data"]["files"]["train"] = path
    return [path, "row 2", "'text'"]


def cell_over_the_size_limit(values: dict, tmp: Path) -> list[str]:
    from pipelines.data.splits import MAX_CELL_BYTES

    long_text = ("the film was good " * (MAX_CELL_BYTES // 18 + 1))[: MAX_CELL_BYTES + 1]
    path = write(
        tmp / "train.csv", f"text,label\nawful plot,negative\n{long_text},positive\nthe film was good,positive\n"
    )
    values["data"]["files"]["train"] = path
    return [f"{path}', row 2: column 'text' holds 1,048,577 bytes of text", "more than the 1,048,576 (1 MiB)"]


def jsonl_line_that_does_not_parse(values: dict, tmp: Path) -> list[str]:
    path = write(
        tmp / "train.jsonl",
        '{"text": "the film was good", "label": "positive"}\n\n'
        '{"text": "awful plot", "label": "negative"}\n{"text": "dull", "label": }\n',
    )
    values["data"]["files"]["train"] = path
    # The editor's line (the blank line counts) and column, not pyarrow's 0-based row within a block.
    return [f"data file '{path}', line 4, column 27: Expecting value"]


def jsonl_stray_comma(values: dict, tmp: Path) -> list[str]:
    path = write(tmp / "train.jsonl", '{"text": "good", "label": "positive"},\n{"text": "bad", "label": "negative"}\n')
    values["data"]["files"]["train"] = path
    return [f"data file '{path}', line 1, column 38: Extra data"]  # pyarrow: "The document is empty"


def jsonl_line_that_is_not_an_object(values: dict, tmp: Path) -> list[str]:
    path = write(tmp / "test.jsonl", '{"text": "good", "label": "positive"}\n["bad", "negative"]\n')
    values["data"]["files"]["test"] = path
    return [f"data file '{path}', line 2: holds an array, not an object"]


def empty_data_file(values: dict, tmp: Path) -> list[str]:
    path = write(tmp / "validation.jsonl", "")
    values["data"]["files"]["validation"] = path
    return [f"data file '{path}' is empty"]


def missing_split(values: dict, tmp: Path) -> list[str]:
    del values["data"]["files"]["test"]
    return ["test split 'test'", "data.test_split"]


def unknown_recipe_key(values: dict, tmp: Path) -> list[str]:
    values["adapt"] = {"strategi": "peft"}
    return ["'adapt.strategi'", "'adapt.strategy'"]


def unknown_training_key(values: dict, tmp: Path) -> list[str]:
    values["training"]["num_train_epoch"] = 1
    return ["'training.num_train_epoch'", "'training.num_train_epochs'"]


def unknown_strategy(values: dict, tmp: Path) -> list[str]:
    values["adapt"] = {"strategy": "freeze_backbon"}
    return ["'freeze_backbon'", "'adapt.strategy'", "'freeze_backbone'"]


def wrong_type_training_value(values: dict, tmp: Path) -> list[str]:
    values["training"]["learning_rate"] = "fast"
    return ["'training.learning_rate'"]


def hub_checkpoint_offline(values: dict, tmp: Path) -> list[str]:
    values["model"]["checkpoint"] = "no-such-org/no-such-model"
    return ["'no-such-org/no-such-model'", "HF_HUB_OFFLINE", "model.checkpoint"]


def missing_checkpoint_folder(values: dict, tmp: Path) -> list[str]:
    path = str(tmp / "no-such-checkpoint")
    values["model"]["checkpoint"] = path
    return [path, "does not exist", "model.checkpoint"]


def lora_on_unknown_modules(values: dict, tmp: Path) -> list[str]:
    values["adapt"] = {"strategy": "peft", "peft": {"method": "lora", "target_modules": ["q_proj"]}}
    return ["'bert'", "adapt.peft.target_modules"]


def peft_rank_zero(values: dict, tmp: Path) -> list[str]:
    values["adapt"] = {"strategy": "peft", "peft": {"method": "lora", "r": 0}}
    return ["recipe key 'adapt.peft.r' must be at least 1, got 0"]


def legacy_lora_dropout_above_one(values: dict, tmp: Path) -> list[str]:
    values["adapt"] = {"strategy": "lora", "lora": {"dropout": 1.5}}
    return ["recipe key 'adapt.lora.dropout' must lie in [0, 1), got 1.5"]


def training_value(key: str, value, rule: str) -> Case:
    def case(values: dict, tmp: Path) -> list[str]:
        values["training"][key] = value
        return [f"'training.{key}'", rule]

    case.__name__ = f"training_{key}_{value}"
    return case


def max_train_samples_zero(values: dict, tmp: Path) -> list[str]:
    values["data"]["max_train_samples"] = 0
    return ["'data.max_train_samples'", "at least 1"]


def names_in_train_ids_in_test(values: dict, tmp: Path) -> list[str]:
    path = write(tmp / "test.csv", "text,label\nthe film was good,1\nawful plot,0\n")
    values["data"]["files"]["test"] = path
    return [path, "row 1", "integer id", "names"]


def digit_labels_among_names(values: dict, tmp: Path) -> list[str]:
    path = write(
        tmp / "train.jsonl",
        '{"text": "the film was good", "label": "positive"}\n'
        '{"text": "awful plot", "label": "negative"}\n'
        '{"text": "the film was fine", "label": "1"}\n',
    )
    values["data"]["files"]["train"] = path
    del values["data"]["labels"]
    return [path, "row 3", "'1'", "digit names", "row 1"]


def ids_and_names_in_one_split(values: dict, tmp: Path) -> list[str]:
    path = write(
        tmp / "validation.jsonl",
        '{"text": "the film was good", "label": "positive"}\n{"text": "awful plot", "label": 0}\n',
    )
    values["data"]["files"]["validation"] = path
    return [path, "row 2", "integer id"]


def relative_data_path_missing(values: dict, tmp: Path) -> list[str]:
    values["data"]["files"]["train"] = "data/no-such-train.csv"
    return ["'data.files.train'", "does not exist", "working directory"]


def max_length_beyond_positions(values: dict, tmp: Path) -> list[str]:
    values["data"]["max_length"] = 1024  # the tiny BERT has 64 positions: training died with "expanded size"
    return ["'data.max_length' is 1024", "at most 64 tokens", "'bert.embeddings.position_embeddings'", "64 or less"]


def config_overrides_the_model_rejects(values: dict, tmp: Path) -> list[str]:
    values["model"]["config_overrides"] = {"num_attention_heads": 3}  # hidden size 32
    return ["'model.config_overrides'", "num_attention_heads: 3", "ValueError", "not a multiple"]


def config_override_of_the_wrong_type(values: dict, tmp: Path) -> list[str]:
    values["model"]["config_overrides"] = {"hidden_size": "wide"}
    return ["'model.config_overrides'", "hidden_size: 'wide'", "expected int"]


CASES: list[Case] = [
    missing_text_column,
    missing_label_column,
    label_not_in_labels,
    empty_split,
    data_file_missing,
    malformed_csv,
    unsupported_extension,
    text_cell_not_text,
    cell_over_the_size_limit,
    jsonl_line_that_does_not_parse,
    jsonl_stray_comma,
    jsonl_line_that_is_not_an_object,
    empty_data_file,
    missing_split,
    unknown_recipe_key,
    unknown_training_key,
    unknown_strategy,
    wrong_type_training_value,
    hub_checkpoint_offline,
    missing_checkpoint_folder,
    lora_on_unknown_modules,
    peft_rank_zero,
    legacy_lora_dropout_above_one,
    max_train_samples_zero,
    names_in_train_ids_in_test,
    digit_labels_among_names,
    ids_and_names_in_one_split,
    relative_data_path_missing,
    max_length_beyond_positions,
    config_overrides_the_model_rejects,
    config_override_of_the_wrong_type,
    training_value("per_device_train_batch_size", 0, "at least 1"),
    training_value("per_device_train_batch_size", -1, "at least 1"),
    training_value("per_device_eval_batch_size", 0, "at least 1"),
    training_value("gradient_accumulation_steps", 0, "at least 1"),
    training_value("num_train_epochs", 0, "train nothing"),
    training_value("max_steps", 0, "positive"),
    training_value("learning_rate", -0.001, "positive"),
    training_value("save_total_limit", 0, "at least 1"),
]


@pytest.fixture(params=CASES, ids=[case.__name__ for case in CASES])
def broken(request, recipe_values, tmp_path):
    """(recipe YAML path, output_dir, expected substrings) for one broken recipe."""
    values = copy.deepcopy(recipe_values)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    expected = request.param(values, inputs)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path, Path(values["output_dir"]), expected


def test_recipe_raises_one_line_error_naming_the_culprit(broken):
    path, output_dir, expected = broken
    with pytest.raises(HubtuneError) as caught:
        Recipe.from_yaml(path).run()
    message = str(caught.value)
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"
    assert "\n" not in message
    assert not output_dir.exists()


def test_cli_exits_2_with_one_error_line(broken, capsys):
    path, output_dir, expected = broken
    code = main(["train", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    error_lines = [line for line in err.splitlines() if line.startswith("hubtune: error:")]
    assert len(error_lines) == 1, err
    # It is the last thing written (progress bars of the data loading may come before it), and it is whole.
    assert err.rstrip("\n").splitlines()[-1] == error_lines[0]
    for part in expected:
        assert part in error_lines[0]
    assert "Traceback" not in err
    assert not output_dir.exists()


def test_cli_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["train"])
    assert caught.value.code == 2
    with pytest.raises(SystemExit) as caught:
        main(["fly", "recipe.yaml"])
    assert caught.value.code == 2


def test_cli_missing_recipe_file(tmp_path, capsys):
    path = tmp_path / "absent.yaml"
    assert main(["train", str(path), "training.num_train_epochs=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"hubtune: error: recipe file '{path}' does not exist"]


def test_cli_bad_override(tmp_path, capsys, recipe_values):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe_values))
    assert main(["train", str(path), "adapt.strategy=peft", "adapt.peft.rr=4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["hubtune: error: unknown recipe key 'adapt.peft.rr'; did you mean 'adapt.peft.r'?"]
    assert not Path(recipe_values["output_dir"]).exists()


def test_cli_predict_on_missing_run_folder(tmp_path, capsys):
    assert main(["predict", str(tmp_path / "no-run"), "the film was good"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"hubtune: error: run folder '{tmp_path / 'no-run'}' does not exist"]


def test_cli_recipe_that_is_a_directory(tmp_path, capsys):
    assert main(["train", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"hubtune: error: '{tmp_path}' is a folder, not a recipe file"]


def offline_checkpoint_error(recipe_values, tmp_path, capsys) -> str:
    values = copy.deepcopy(recipe_values)
    values["model"]["checkpoint"] = "no-such-org/no-such-model"
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(values))
    assert main(["train", str(path)]) == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_offline_because_the_user_set_hf_hub_offline(recipe_values, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    error = offline_checkpoint_error(recipe_values, tmp_path, capsys)
    assert error == (
        "hubtune: error: checkpoint 'no-such-org/no-such-model' (revision 'main') cannot be loaded: it is not in the "
        "local Hugging Face cache and HF_HUB_OFFLINE is set in your environment, so only the local cache is read; "
        "run `hf download no-such-org/no-such-model` where there is network, or set 'model.checkpoint' to a local "
        "folder"
    )


def test_offline_because_the_hub_could_not_be_reached(recipe_values, tmp_path, capsys, monkeypatch):
    from pipelines.hub_access import UNREACHABLE_VARIABLE

    with socket.socket() as probe:  # a port nothing listens on: the connection is refused at once
        probe.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    # Restored (HF_HUB_OFFLINE) and removed (the marker) after the test, whatever the command set.
    monkeypatch.setenv(UNREACHABLE_VARIABLE, "")
    monkeypatch.delenv(UNREACHABLE_VARIABLE)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    error = offline_checkpoint_error(recipe_values, tmp_path, capsys)
    assert "HF_HUB_OFFLINE" not in error  # the user never set it
    assert (
        f"it is not in the local Hugging Face cache and the Hugging Face Hub ({endpoint}) could not be reached, so "
        "hubtune works from the local cache alone;" in error
    )


def test_row_numbers_are_the_files_rows_in_a_random_subset(recipe_values, tmp_path):
    rows = [f"the film was good {i},positive" if i != 37 else "awful plot,neutral" for i in range(60)]
    path = write(tmp_path / "validation.csv", "text,label\n" + "\n".join(rows) + "\n")
    values = copy.deepcopy(recipe_values)
    values["data"]["files"]["validation"] = path
    values["data"]["max_eval_samples"] = 59  # a shuffled subset that still holds the bad row
    with pytest.raises(HubtuneError) as caught:
        Recipe.from_dict(values).run()
    assert f"{path}', row 38:" in str(caught.value) and "'neutral'" in str(caught.value)


def test_class_without_training_example_is_warned_in_log_and_report(recipe_values, caplog):
    values = copy.deepcopy(recipe_values)
    values["data"]["labels"] = ["negative", "neutral", "positive"]
    values["training"]["num_train_epochs"] = 1
    results = Recipe.from_dict(values).run()
    assert any("1 of 3 classes have no training example" in w and "neutral" in w for w in results["warnings"])
    assert "no training example" in caplog.text
    report = (Path(values["output_dir"]) / "report.md").read_text()
    assert "## Warnings" in report and "neutral" in report


@pytest.mark.parametrize("who", ["user", "hubtune"])
def test_a_hub_dataset_outside_the_cache_says_who_went_offline(who, monkeypatch):
    from pipelines.config import load_recipe_config
    from pipelines.data.splits import load_splits
    from pipelines.hub_access import UNREACHABLE_VARIABLE

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if who == "hubtune":  # as the connectivity check leaves it after one failed connection
        monkeypatch.setenv(UNREACHABLE_VARIABLE, "https://huggingface.co")
    config = load_recipe_config(
        values={"name": "x", "model": {"checkpoint": "org/m"}, "data": {"dataset": "no-such-org/no-such-data"}}
    )
    with pytest.raises(HubtuneError) as caught:
        load_splits(config.data, 0)
    reason = (
        "HF_HUB_OFFLINE is set in your environment, so only the local cache is read"
        if who == "user"
        else "the Hugging Face Hub (https://huggingface.co) could not be reached, so hubtune works from the local "
        "cache alone"
    )
    assert str(caught.value) == (
        f"Hub dataset 'no-such-org/no-such-data' could not be loaded: it is not in the local datasets cache and "
        f"{reason}; load it once where the Hub can be reached, or give local files in 'data.files'"
    )
