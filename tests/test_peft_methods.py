"""`adapt.strategy: peft`: LoRA, DoRA, rsLoRA, IA3, LoHa and LoKr each train, save an adapter with the head,
reload to the trained model's logits and merge on export; every `adapt.peft` key is checked against its method."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import make_recipe_values
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, BertForSequenceClassification, TrainerCallback

from pipelines import HubtuneError, Recipe, load_recipe_config
from pipelines.adapt import adapt_model, layer_groups
from pipelines.adapt.strategies.peft import PeftConfig, apply_adapter, peft_config
from pipelines.config import build_adapt_config
from pipelines.serving.export import export_run
from pipelines.serving.predictor import Predictor

# Trains models for seconds each: `make test-fast` leaves this module out.
pytestmark = pytest.mark.slow

# Variant name -> `adapt.peft` section.
METHODS = {
    "lora": {"method": "lora", "r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["query", "value"]},
    "dora": {"method": "lora", "use_dora": True},
    "rslora": {"method": "lora", "r": 4, "use_rslora": True},
    "ia3": {
        "method": "ia3",
        "target_modules": ["key", "value", "output.dense"],
        "feedforward_modules": ["output.dense"],
    },
    "loha": {"method": "loha", "r": 4},
    "lokr": {"method": "lokr", "r": 4, "alpha": 4},
}
PEFT_TYPES = {"lora": "LORA", "dora": "LORA", "rslora": "LORA", "ia3": "IA3", "loha": "LOHA", "lokr": "LOKR"}
ADAPTER_PREFIXES = ("lora_", "ia3_", "hada_", "lokr_")
GROUPS = ["embeddings", "block.0", "block.1", "neck", "head"]
TEXTS = ["the film was good", "awful plot", "a really boring movie", "superb acting and a lovely cast"]


class KeepModel(TrainerCallback):
    """Keeps the model object the Trainer finished with."""

    model = None

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.model = model


@pytest.fixture(scope="module")
def peft_run(tiny_bert, sentiment_files, tmp_path_factory):
    """`peft_run(variant)`: the sentiment recipe with `adapt.strategy: peft` and that variant's section, trained
    once per module; returns (run folder, results, in-memory trained model)."""
    runs: dict[str, tuple] = {}

    def train(variant: str):
        if variant not in runs:
            run_dir = tmp_path_factory.mktemp(f"peft-{variant}") / "run"
            values = make_recipe_values(tiny_bert, sentiment_files, run_dir)
            values["adapt"] = {"strategy": "peft", "peft": METHODS[variant]}
            keep = KeepModel()
            results = Recipe.from_dict(values).run(callbacks=[keep])
            runs[variant] = (run_dir, results, keep.model)
        return runs[variant]

    return train


def logits(model, processor) -> torch.Tensor:
    batch = processor(TEXTS, padding=True, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.parametrize("variant", METHODS)
def test_method_learns_and_saves_adapter_with_head(peft_run, variant, tiny_bert):
    run_dir, results, _ = peft_run(variant)
    assert results["test_accuracy"] >= 0.9, results
    assert not (run_dir / "model.safetensors").exists()
    adapter_config = json.loads((run_dir / "adapter_config.json").read_text())
    assert adapter_config["peft_type"] == PEFT_TYPES[variant]
    assert adapter_config["task_type"] == "SEQ_CLS"
    assert "classifier" in adapter_config["modules_to_save"]
    assert adapter_config["base_model_name_or_path"] == str(tiny_bert)
    if PEFT_TYPES[variant] == "LORA":
        assert adapter_config["use_dora"] is (variant == "dora")
        assert adapter_config["use_rslora"] is (variant == "rslora")
    section = METHODS[variant]
    if "r" in section:
        assert adapter_config["r"] == section["r"]
    for key in ("target_modules", "feedforward_modules"):
        if key in section:
            assert set(adapter_config[key]) == set(section[key])
    saved = load_file(str(run_dir / "adapter_model.safetensors"))
    assert any(".classifier." in name for name in saved), "the trained head is not in the adapter file"
    assert any(part.startswith(ADAPTER_PREFIXES) for name in saved for part in name.split("."))
    # Nothing of the frozen base is duplicated into the adapter file.
    assert not any("embeddings" in name or "pooler" in name or "base_layer" in name for name in saved)


@pytest.mark.parametrize("variant", METHODS)
def test_parameter_table_counts_adapter_in_blocks_and_freezes_base(peft_run, variant, tiny_bert):
    run_dir, results, model = peft_run(variant)
    rows = json.loads((run_dir / "parameters.json").read_text())
    # Every adapter parameter is placed in the block it adapts: no stray "adapter" group.
    assert [row["group"] for row in rows] == GROUPS
    table = {row["group"]: row for row in rows}
    base = BertForSequenceClassification.from_pretrained(tiny_bert)
    groups = layer_groups(base)
    sizes: dict[str, int] = {}
    for name, parameter in base.named_parameters():
        sizes[groups.by_parameter[name]] = sizes.get(groups.by_parameter[name], 0) + parameter.numel()
    assert table["embeddings"]["trainable"] == table["neck"]["trainable"] == 0
    assert table["embeddings"]["total"] == sizes["embeddings"] and table["neck"]["total"] == sizes["neck"]
    for block in ("block.0", "block.1"):
        # The adapter only: some parameters, far fewer than the block's own, which all stay frozen.
        assert 0 < table[block]["trainable"] < sizes[block]
        assert table[block]["total"] == sizes[block] + table[block]["trainable"]
    head_size = base.classifier.weight.numel() + base.classifier.bias.numel()
    assert table["head"]["trainable"] == head_size  # the trained copy; the frozen original is counted in total
    assert table["head"]["total"] == 2 * head_size
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert results["trainable_parameters"] == sum(row["trainable"] for row in rows)
    assert results["trainable_parameters"] == sum(p.numel() for n, p in model.named_parameters() if n in trainable)
    assert results["trainable_share"] == pytest.approx(results["trainable_parameters"] / results["total_parameters"])
    for name in trainable:
        assert "modules_to_save" in name or any(part.startswith(ADAPTER_PREFIXES) for part in name.split(".")), name


@pytest.mark.parametrize("variant", METHODS)
def test_reload_gives_the_trained_logits(peft_run, variant):
    from peft import PeftModel

    run_dir, _, model = peft_run(variant)
    loaded = Predictor(run_dir)
    assert isinstance(loaded.model, PeftModel)
    assert loaded.label_names == ["negative", "positive"]
    expected = logits(model, loaded.processor)
    torch.testing.assert_close(logits(loaded.model, loaded.processor), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("variant", METHODS)
def test_export_merges_into_plain_weights(peft_run, variant, tmp_path, tiny_bert):
    run_dir, _, _ = peft_run(variant)
    out = tmp_path / "merged"
    check = export_run(run_dir, out, merge=True)
    assert check["merged_adapter"] is True and check["max_abs_logit_difference"] < 1e-4
    assert not (out / "adapter_config.json").exists()
    merged = AutoModelForSequenceClassification.from_pretrained(out)
    names = [name for name, _ in merged.named_parameters()]
    assert not any(part.startswith(ADAPTER_PREFIXES) for name in names for part in name.split("."))
    # The trained adapter is folded into the weights it adapts (every variant targets the value projection).
    value = "bert.encoder.layer.0.attention.self.value.weight"
    assert not torch.equal(merged.state_dict()[value], load_file(str(tiny_bert / "model.safetensors"))[value])
    adapter = Predictor(run_dir)
    torch.testing.assert_close(
        logits(merged, adapter.processor), logits(adapter.model, adapter.processor), rtol=0, atol=1e-5
    )


def peft_values(recipe_values: dict, section: dict | None, strategy: str = "peft") -> dict:
    values = dict(recipe_values)
    values["adapt"] = {"strategy": strategy} | ({"peft": section} if section is not None else {})
    return values


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"method": "ia3", "use_dora": True}, "use_dora"),
        ({"method": "ia3", "r": 4}, "r"),
        ({"method": "ia3", "alpha": 8}, "alpha"),
        ({"method": "loha", "use_rslora": True}, "use_rslora"),
        ({"method": "lokr", "dropout": 0.1}, "dropout"),
        ({"method": "lora", "feedforward_modules": ["output.dense"]}, "feedforward_modules"),
        ({"method": "loha", "quantize": "4bit"}, "quantize"),
    ],
)
def test_a_key_the_method_does_not_take_is_an_error_naming_it(recipe_values, section, key):
    with pytest.raises(HubtuneError) as caught:
        load_recipe_config(values=peft_values(recipe_values, section))
    message = str(caught.value)
    assert f"'adapt.peft.{key}' does not apply to method '{section['method']}'" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("adapt", "match"),
    [
        ({"strategy": "peft", "peft": {"method": "adalora"}}, "'adapt.peft.method' must be one of lora, ia3, loha"),
        ({"strategy": "peft", "peft": {"method": "lora", "use_dorra": True}}, "did you mean 'adapt.peft.use_dora'"),
        ({"strategy": "peft", "peft": {"r": 0}}, "'adapt.peft.r' must be at least 1"),
        ({"strategy": "peft", "peft": {"dropout": 1.5}}, r"'adapt.peft.dropout' must lie in \[0, 1\), got 1.5"),
        ({"strategy": "peft", "peft": {"dropout": -0.1}}, r"'adapt.peft.dropout' must lie in \[0, 1\), got -0.1"),
        ({"strategy": "peft", "peft": {"alpha": 0}}, "'adapt.peft.alpha' must be positive, got 0"),
        ({"strategy": "peft", "peft": {"method": "loha", "r": -2}}, "'adapt.peft.r' must be at least 1, got -2"),
        ({"strategy": "peft", "peft": {"method": "lokr", "alpha": -1}}, "'adapt.peft.alpha' must be positive, got -1"),
        # The legacy LoRA form is checked under its own keys, as the recipe writes them.
        ({"strategy": "lora", "lora": {"r": 0}}, "^recipe key 'adapt.lora.r' must be at least 1, got 0$"),
        ({"strategy": "lora", "lora": {"dropout": 1.5}}, r"^recipe key 'adapt.lora.dropout' must lie in \[0, 1\)"),
        ({"strategy": "lora", "lora": {"alpha": 0}}, "^recipe key 'adapt.lora.alpha' must be positive, got 0$"),
        ({"strategy": "peft", "peft": {"use_dora": "yes"}}, "'adapt.peft.use_dora' must be true or false"),
        (
            {"strategy": "peft", "peft": {"method": "ia3", "feedforward_modules": ["output.dense"]}},
            "'adapt.peft.feedforward_modules' names output.dense",
        ),
        ({"strategy": "lora", "peft": {"method": "lora"}}, "'adapt.peft' needs 'adapt.strategy: peft', not 'lora'"),
        ({"strategy": "peft", "lora": {"r": 4}}, "'adapt.lora' belongs to 'adapt.strategy: lora'"),
        ({"strategy": "peft", "unfreeze_schedule": {"every": 1}}, "does not apply to 'peft'"),
    ],
)
def test_peft_section_checked_at_load(recipe_values, adapt, match):
    values = dict(recipe_values)
    values["adapt"] = adapt
    with pytest.raises(HubtuneError, match=match):
        load_recipe_config(values=values)


def test_peft_strategy_needs_pretrained_weights(recipe_values):
    values = peft_values(recipe_values, {"method": "loha"})
    values["model"] = {**values["model"], "from_scratch": True}
    with pytest.raises(HubtuneError, match="'adapt.strategy: peft' needs pretrained weights"):
        load_recipe_config(values=values)


NO_QLORA_MACHINE = pytest.mark.skipif(
    torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes") is not None,
    reason="this machine can run QLoRA",
)


@NO_QLORA_MACHINE
def test_qlora_is_refused_when_training_starts_not_when_the_recipe_loads(recipe_values):
    values = peft_values(recipe_values, {"method": "lora", "quantize": "4bit"})
    recipe = Recipe.from_dict(values)  # reading the recipe asks nothing of the machine
    with pytest.raises(HubtuneError, match="'adapt.peft.quantize: 4bit'.*needs a CUDA GPU and bitsandbytes"):
        recipe.run()
    assert not Path(values["output_dir"]).exists()  # refused before the run folder is touched
    with pytest.raises(HubtuneError, match="'adapt.peft.quantize' must be one of 4bit, got '8bit'"):
        load_recipe_config(values=peft_values(recipe_values, {"method": "lora", "quantize": "8bit"}))


@NO_QLORA_MACHINE
def test_a_qlora_run_folder_predicts_evaluates_and_exports_on_a_cpu_machine(peft_run, tmp_path):
    """What a GPU-trained QLoRA run folder holds (a LoRA adapter and head over the base, its recipe saying
    `quantize: 4bit`) is served from the full-precision base here, giving the adapter's answers."""
    trained, results, _ = peft_run("lora")
    run_dir = tmp_path / "qlora-run"
    shutil.copytree(trained, run_dir)
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    recipe["adapt"]["peft"]["quantize"] = "4bit"
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))

    predictor = Predictor(run_dir)
    assert predictor.config.adapt.peft.quantize == "4bit"
    expected = Predictor(trained).predict(TEXTS)
    assert predictor.predict(TEXTS) == expected
    scores = predictor.evaluate("test")
    assert scores["test_accuracy"] == pytest.approx(results["test_accuracy"])
    check = export_run(run_dir, tmp_path / "merged", merge=True)
    assert check["merged_adapter"] is True and check["max_abs_logit_difference"] < 1e-4
    with pytest.raises(HubtuneError, match="'adapt.peft.quantize: 4bit'.*needs a CUDA GPU"):
        Recipe.from_yaml(run_dir / "recipe.yaml", overrides=[f"output_dir={tmp_path / 'again'}"]).run()


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="QLoRA needs the bitsandbytes package")
def test_qlora_trains_a_4bit_base_and_its_run_folder_reloads(recipe_values, tmp_path):
    values = peft_values(recipe_values, {**METHODS["lora"], "quantize": "4bit"})
    keep = KeepModel()
    results = Recipe.from_dict(values).run(callbacks=[keep])
    assert keep.model.is_loaded_in_4bit and results["trainable_share"] < 0.5
    run_dir = Path(values["output_dir"])
    assert (run_dir / "adapter_config.json").is_file() and not (run_dir / "model.safetensors").exists()
    assert Predictor(run_dir).evaluate("test")["test_accuracy"] == pytest.approx(results["test_accuracy"], abs=0.02)


def test_qlora_refuses_a_model_not_loaded_in_4_bits(tiny_bert):
    # Reached only where the load check passed (a CUDA machine) with a task that does not quantize its model.
    model = BertForSequenceClassification.from_pretrained(tiny_bert)
    with pytest.raises(HubtuneError, match="'adapt.peft.quantize' needs the task's model loaded in 4 bits"):
        apply_adapter(model, PeftConfig(quantize="4bit"), layer_groups(model), "SEQ_CLS")


def test_parameter_table_counts_4bit_weights_by_their_original_shape(tiny_bert):
    """bitsandbytes stores a 4-bit weight packed two to a byte, its shape in `quant_state` (faked here: no CUDA)."""
    from types import SimpleNamespace

    from pipelines.adapt import parameter_table

    model = BertForSequenceClassification.from_pretrained(tiny_bert)
    groups = layer_groups(model)
    before = {row["group"]: row["total"] for row in parameter_table(model, groups)}
    weight = model.bert.encoder.layer[0].attention.self.query.weight
    shape = weight.shape
    packed = torch.nn.Parameter(torch.zeros(shape.numel() // 2, 1, dtype=torch.uint8), requires_grad=False)
    packed.quant_state = SimpleNamespace(shape=shape)
    model.bert.encoder.layer[0].attention.self.query.weight = packed
    assert {row["group"]: row["total"] for row in parameter_table(model, groups)} == before


@pytest.mark.parametrize(
    ("lora", "read_as"),
    [
        (
            {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["query"]},
            {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["query"]},
        ),
        # The legacy section's own defaults, which are not PEFT's (alpha 8, dropout 0), carry over.
        (None, {"r": 8, "alpha": 16, "dropout": 0.1}),
    ],
)
def test_legacy_lora_section_is_the_lora_method(recipe_values, tmp_path, caplog, lora, read_as):
    """`adapt.strategy: lora` with `adapt.lora` is rewritten at load to `adapt.strategy: peft` with the lora method,
    building the same PEFT config as before, with a warning naming the new keys; the run saves the new form."""
    legacy_section = {"strategy": "lora"} | ({"lora": lora} if lora is not None else {})
    with caplog.at_level("WARNING", logger="pipelines.config.legacy"):
        legacy = load_recipe_config(values={**recipe_values, "adapt": legacy_section})
    (warning,) = [record.getMessage() for record in caplog.records if "legacy LoRA form" in record.getMessage()]
    assert "'adapt.strategy: peft'" in warning and "'adapt.peft: {method: lora, r: " in warning
    assert legacy.adapt.strategy == "peft" and legacy.adapt.peft == PeftConfig(method="lora", **read_as)
    new = load_recipe_config(values=peft_values(recipe_values, {"method": "lora", **read_as}))
    assert new.adapt == legacy.adapt
    as_dict = [peft_config(c.adapt.peft, ["classifier"], "SEQ_CLS").to_dict() for c in (legacy, new)]
    assert as_dict[0] == as_dict[1]
    assert (as_dict[0]["r"], as_dict[0]["lora_alpha"], as_dict[0]["lora_dropout"]) == (
        read_as["r"],
        read_as["alpha"],
        read_as["dropout"],
    )

    # What a run saves is the rewritten recipe, which reads back with the same meaning and no warning.
    from pipelines.config import dump_recipe_config

    dump_recipe_config(legacy, tmp_path / "recipe.yaml")
    saved = yaml.safe_load((tmp_path / "recipe.yaml").read_text())["adapt"]
    assert saved["strategy"] == "peft" and "lora" not in saved and saved["peft"]["method"] == "lora"
    caplog.clear()
    assert load_recipe_config(tmp_path / "recipe.yaml").adapt == legacy.adapt
    assert not [record for record in caplog.records if "legacy" in record.getMessage()]


def test_a_run_folder_of_an_earlier_hubtune_still_loads(recipe_values, tmp_path):
    """Earlier run folders saved every strategy's keys (`n`, `lora`, `peft`, `lp_ft`) whatever the strategy."""
    defaults = {
        "n": 2,
        "lora": {"r": 8, "alpha": 16, "dropout": 0.1, "target_modules": None},
        "peft": None,
        "layer_decay": None,
        "head_lr_scale": 1.0,
        "unfreeze_schedule": None,
        "lp_ft": {"probe_epochs": 1.0, "probe_learning_rate": 0.001, "then": "full"},
        "feature_cache": False,
        "feature_cache_dir": None,
        "freeze_feature_encoder": True,
    }
    saved = {
        "full": {"strategy": "full"},
        "train_last_n": {"strategy": "train_last_n", "n": 1},
        "lora": {"strategy": "lora", "lora": {"r": 4, "alpha": 16, "dropout": 0.1, "target_modules": ["query"]}},
        "peft": {"strategy": "peft", "peft": dataclasses.asdict(PeftConfig(r=2))},
        "peft without a section": {"strategy": "peft"},
        # A recipe switched to full by an override kept the keys of the strategy it named before.
        "full with another strategy's keys": {"strategy": "full", "n": 1, "lp_ft": {"then": "train_last_n"}},
    }
    for name, adapt in saved.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**recipe_values, "adapt": {**defaults, **adapt}}))
        config = load_recipe_config(path)
        assert config.adapt.strategy == {"lora": "peft", "peft without a section": "peft"}.get(
            name, adapt["strategy"]
        ), name
    assert load_recipe_config(tmp_path / "lora.yaml").adapt.peft == PeftConfig("lora", 4, 16, 0.1, ["query"])
    assert load_recipe_config(tmp_path / "train_last_n.yaml").adapt.n == 1
    assert load_recipe_config(tmp_path / "peft without a section.yaml").adapt.peft == PeftConfig()


def test_unset_keys_take_pefts_defaults(tiny_bert):
    import peft

    model = BertForSequenceClassification.from_pretrained(tiny_bert)
    wrapped, _ = adapt_model(model, build_adapt_config({"strategy": "peft", "peft": {"method": "loha"}}), "SEQ_CLS")
    config = wrapped.peft_config["default"]
    assert isinstance(config, peft.LoHaConfig)
    assert (config.r, config.alpha) == (peft.LoHaConfig().r, peft.LoHaConfig().alpha)
