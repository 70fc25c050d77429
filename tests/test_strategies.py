"""Adapt strategies end to end: each one learns, and freezing keeps the frozen groups bit for bit."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from pipelines import HubtuneError, Recipe
from pipelines.adapt import adapt_model, layer_groups
from pipelines.config import build_adapt_config

STRATEGIES = ["full", "freeze_backbone", "train_last_n", "peft"]
GROUPS = ["embeddings", "block.0", "block.1", "neck", "head"]


def checkpoint_weights(tiny_bert) -> dict[str, torch.Tensor]:
    return load_file(str(tiny_bert / "model.safetensors"))


def run_weights(run_dir) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model.safetensors"))


def groups_of_checkpoint(tiny_bert):
    from transformers import BertForSequenceClassification

    return layer_groups(BertForSequenceClassification.from_pretrained(tiny_bert))


def by_group(weights: dict[str, torch.Tensor], groups) -> dict[str, dict[str, torch.Tensor]]:
    out: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in weights.items():
        out.setdefault(groups.by_parameter[name], {})[name] = tensor
    return out


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategy_learns_the_task(trained_run, strategy):
    run = trained_run(strategy)
    assert run.recipe.config.adapt.strategy == strategy
    # Chance is 0.5 on the balanced test split.
    assert run.results["test_accuracy"] >= 0.9
    assert run.results["eval_accuracy"] >= 0.9
    assert run.results["test_samples"] == 60
    assert run.results["train_samples"] == 240


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_parameter_table(trained_run, strategy, tiny_bert):
    run = trained_run(strategy)
    rows = json.loads((run.run_dir / "parameters.json").read_text())
    assert [row["group"] for row in rows] == GROUPS
    for row in rows:
        assert 0 <= row["trainable"] <= row["total"], row
        assert row["total"] > 0
    table = {row["group"]: row for row in rows}
    assert run.results["trainable_parameters"] == sum(row["trainable"] for row in rows)
    assert run.results["total_parameters"] == sum(row["total"] for row in rows)
    assert run.results["trainable_share"] == pytest.approx(
        run.results["trainable_parameters"] / run.results["total_parameters"]
    )

    weights = checkpoint_weights(tiny_bert)
    head_size = weights["classifier.weight"].numel() + weights["classifier.bias"].numel()
    checkpoint_sizes = {
        g: sum(t.numel() for t in ts.values()) for g, ts in by_group(weights, groups_of_checkpoint(tiny_bert)).items()
    }
    if strategy == "full":
        assert all(row["trainable"] == row["total"] for row in rows)
        assert {g: table[g]["total"] for g in GROUPS} == checkpoint_sizes
    elif strategy == "freeze_backbone":
        assert table["head"]["trainable"] == head_size == run.results["trainable_parameters"]
        assert all(table[g]["trainable"] == 0 for g in GROUPS if g != "head")
    elif strategy == "train_last_n":
        assert table["embeddings"]["trainable"] == table["block.0"]["trainable"] == 0
        for group in ("block.1", "neck", "head"):
            assert table[group]["trainable"] == table[group]["total"] == checkpoint_sizes[group]
    elif strategy == "peft":
        assert table["embeddings"]["trainable"] == 0
        assert table["neck"]["trainable"] == 0
        for block in ("block.0", "block.1"):
            # Adapter matrices only: some, but far fewer than the block's own weights.
            assert 0 < table[block]["trainable"] < checkpoint_sizes[block]
            assert table[block]["total"] == checkpoint_sizes[block] + table[block]["trainable"]
        # The head is trained in full (a copy in modules_to_save next to the frozen original).
        assert table["head"]["trainable"] == head_size


@pytest.mark.parametrize("strategy", ["freeze_backbone", "train_last_n"])
def test_frozen_groups_are_bitwise_unchanged(trained_run, strategy, tiny_bert):
    run = trained_run(strategy)
    groups = groups_of_checkpoint(tiny_bert)
    before = by_group(checkpoint_weights(tiny_bert), groups)
    after = by_group(run_weights(run.run_dir), groups)
    assert before.keys() == after.keys()
    for group in before:
        assert before[group].keys() == after[group].keys()

    frozen = {
        "freeze_backbone": ["embeddings", "block.0", "block.1", "neck"],
        "train_last_n": ["embeddings", "block.0"],
    }[strategy]
    for group in frozen:
        for name, tensor in before[group].items():
            assert torch.equal(tensor, after[group][name]), f"{strategy}: frozen {group} parameter {name} changed"

    def changed(group: str) -> list[str]:
        return [name for name, tensor in before[group].items() if not torch.equal(tensor, after[group][name])]

    assert set(changed("head")) == {"classifier.weight", "classifier.bias"}
    if strategy == "train_last_n":
        # Every weight matrix of the trained block moved (a bias may get no gradient, e.g. the attention key's).
        matrices = [name for name, tensor in before["block.1"].items() if tensor.dim() == 2]
        assert matrices and set(matrices) <= set(changed("block.1"))
        assert changed("neck"), "train_last_n also trains the pooler"


def test_full_changes_every_group(trained_run, tiny_bert):
    run = trained_run("full")
    groups = groups_of_checkpoint(tiny_bert)
    before = by_group(checkpoint_weights(tiny_bert), groups)
    after = by_group(run_weights(run.run_dir), groups)
    for group in GROUPS:
        assert any(not torch.equal(t, after[group][n]) for n, t in before[group].items()), group


def test_lora_run_folder_holds_adapter_with_head(trained_run, tiny_bert):
    run = trained_run("peft")  # method lora, PEFT's defaults
    assert (run.run_dir / "adapter_config.json").is_file()
    assert (run.run_dir / "adapter_model.safetensors").is_file()
    assert not (run.run_dir / "model.safetensors").exists()
    adapter_config = json.loads((run.run_dir / "adapter_config.json").read_text())
    assert adapter_config["peft_type"] == "LORA"
    assert adapter_config["task_type"] == "SEQ_CLS"
    assert "classifier" in adapter_config["modules_to_save"]
    assert adapter_config["base_model_name_or_path"] == str(tiny_bert)

    saved = load_file(str(run.run_dir / "adapter_model.safetensors"))
    head = {name: tensor for name, tensor in saved.items() if ".classifier." in name}
    assert {name.rsplit(".", 1)[-1] for name in head} == {"weight", "bias"}
    original = checkpoint_weights(tiny_bert)
    head_weight = next(tensor for name, tensor in head.items() if name.endswith("weight"))
    assert head_weight.shape == original["classifier.weight"].shape
    assert not torch.equal(head_weight, original["classifier.weight"]), "the saved head is not the trained one"
    for block in (0, 1):
        for module in ("query", "value"):
            for matrix in ("lora_A", "lora_B"):
                assert any(f"layer.{block}.attention.self.{module}.{matrix}" in name for name in saved), (
                    block,
                    module,
                    matrix,
                )
    # Nothing else of the base model is duplicated into the adapter file.
    assert not any("embeddings" in name or "pooler" in name for name in saved)


def test_lora_target_modules_override(recipe_values):
    # Only the query projection gets an adapter when the recipe says so.
    recipe = Recipe.from_dict(
        recipe_values, overrides=["adapt.strategy=peft", "adapt.peft.target_modules=[query]", "adapt.peft.r=2"]
    )
    from pipelines.tasks import PreparedData, get_task

    task = get_task("text-classification")(recipe.config)
    # The tokenizer too: text classification sizes the embeddings and pad id from it.
    labelled = PreparedData({}, task.load_processor(), ["negative", "positive"])
    model, groups = adapt_model(task.build_model(labelled), recipe.config.adapt, task.peft_task_type)
    lora = [name for name, p in model.named_parameters() if "lora_" in name]
    assert lora and all(".query." in name for name in lora)
    assert all(p.shape[0] == 2 for name, p in model.named_parameters() if "lora_A" in name)


def test_new_label_names_reinitialise_the_checkpoint_head(recipe_values, tiny_bert):
    """The checkpoint's head was trained for LABEL_0/LABEL_1; a task with other label names gets a new one."""
    from transformers import AutoModelForSequenceClassification

    from pipelines.config import ModelConfig
    from pipelines.models.loading import load_classifier

    original = checkpoint_weights(tiny_bert)
    model_config = ModelConfig(checkpoint=str(tiny_bert))
    kept = load_classifier(
        AutoModelForSequenceClassification, model_config, ["LABEL_0", "LABEL_1"], "ForSequenceClassification"
    )
    assert torch.equal(kept.classifier.weight, original["classifier.weight"])

    renamed = load_classifier(
        AutoModelForSequenceClassification, model_config, ["negative", "positive"], "ForSequenceClassification"
    )
    assert renamed.config.id2label == {0: "negative", 1: "positive"}
    assert not torch.equal(renamed.classifier.weight, original["classifier.weight"])
    assert not torch.equal(renamed.classifier.bias, original["classifier.bias"])
    # Everything else is still the pretrained model: the redraw runs the whole model's init pass, which must skip it.
    state = renamed.state_dict()
    assert all(torch.equal(state[key], value) for key, value in original.items() if not key.startswith("classifier."))


def test_train_last_n_larger_than_depth_is_an_error(tiny_bert):
    from transformers import BertForSequenceClassification

    model = BertForSequenceClassification.from_pretrained(tiny_bert)
    with pytest.raises(HubtuneError, match="'adapt.n' is 3 but the model has only 2 blocks"):
        adapt_model(model, build_adapt_config({"strategy": "train_last_n", "n": 3}), None)


def test_freezing_sets_requires_grad_by_group(tiny_bert):
    from transformers import BertForSequenceClassification

    model = BertForSequenceClassification.from_pretrained(tiny_bert)
    model, groups = adapt_model(model, build_adapt_config({"strategy": "train_last_n", "n": 1}), None)
    for name, parameter in model.named_parameters():
        assert parameter.requires_grad == (groups.by_parameter[name] in {"block.1", "neck", "head"}), name
