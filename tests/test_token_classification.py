"""Token classification end to end on a tiny BERT: it learns entities (entity F1 far above tagging
everything O), every adapt strategy runs, and a run folder reloads to the same predictions."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch
import yaml
from helpers.ner import TAGS, build_tiny_ner_bert, ner_recipe_values, write_conll
from helpers.runs import assert_export_checked_on_made_up_inputs

from pipelines import Recipe
from pipelines.commands.cli import main
from pipelines.metrics import load_metric
from pipelines.serving.predictor import Predictor

# Trains models for seconds each: `make test-fast` leaves this module out.
pytestmark = pytest.mark.slow

# A token classifier has no pooler, so no `neck` group.
FROZEN = {"freeze_backbone": ["embeddings", "block.0", "block.1"], "train_last_n": ["embeddings", "block.0"]}
# Entity F1 each strategy must reach on held-out sentences; tagging everything O scores 0. The tiny base is
# random, so head-only training (freeze_backbone) has weak features and a low bar.
F1_FLOOR = {"full": 0.9, "train_last_n": 0.75, "peft": 0.5, "freeze_backbone": 0.2}


@pytest.fixture(scope="module")
def ner_world(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("ner")
    files = {
        s: str(write_conll(root / f"{s}.conll", n, seed))
        for s, n, seed in (("train", 300, 0), ("validation", 60, 1), ("test", 60, 2))
    }
    return {"root": root, "checkpoint": build_tiny_ner_bert(root / "tiny-ner-bert"), "files": files}


@pytest.fixture(scope="module")
def ner_run(ner_world):
    """`ner_run(strategy)`: one training run per strategy (kept for the module), with the model it finished with."""
    from transformers import TrainerCallback

    class KeepModel(TrainerCallback):
        model = None

        def on_train_end(self, args, state, control, model=None, **kwargs):
            self.model = model

    runs = {}

    def train(strategy: str) -> dict:
        if strategy not in runs:
            run_dir = ner_world["root"] / f"run-{strategy}"
            values = ner_recipe_values(ner_world["checkpoint"], ner_world["files"], run_dir)
            overrides = [f"adapt.strategy={strategy}"] + (["adapt.n=1"] if strategy == "train_last_n" else [])
            if strategy == "peft":
                # LoRA with the settings the floors were measured with.
                overrides += ["training.learning_rate=1e-2", "adapt.peft.alpha=16", "adapt.peft.dropout=0.1"]
            keep = KeepModel()
            results = Recipe.from_dict(values, overrides=overrides).run(callbacks=[keep])
            runs[strategy] = {"run_dir": run_dir, "results": results, "model": keep.model}
        return runs[strategy]

    return train


def test_full_fine_tuning_learns_entities(ner_run, ner_world):
    results = ner_run("full")["results"]
    assert results["test_f1"] >= F1_FLOOR["full"]
    assert results["eval_f1"] >= F1_FLOOR["full"]
    assert results["test_f1_PER"] >= 0.8 and results["test_f1_LOC"] >= 0.8
    assert results["test_number_PER"] + results["test_number_LOC"] > 60
    assert results["test_samples"] == 60 and results["train_samples"] == 300

    # The all-O baseline on the same test split scores no entity at all.
    from pipelines.data.conll import read_conll

    test = read_conll(Path(ner_world["files"]["test"]), "tokens", "ner_tags", 0, 3)
    baseline = load_metric("ner").compute(
        predictions=[["O"] * len(t) for t in test["ner_tags"]], references=test["ner_tags"]
    )
    assert baseline["f1"] == 0.0 and baseline["accuracy"] < results["test_accuracy"]


def test_run_folder_keeps_the_tag_set(ner_run):
    run_dir = ner_run("full")["run_dir"]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["architectures"] == ["BertForTokenClassification"]
    assert [config["id2label"][str(i)] for i in range(len(TAGS))] == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


@pytest.mark.parametrize("strategy", ["full", "peft"])
def test_reload_gives_the_trained_model(ner_run, strategy):
    run = ner_run(strategy)
    reloaded = Predictor(run["run_dir"])
    batch = reloaded.processor(
        ["angela merkel visited berlin", "john met a friend in new york"], padding=True, return_tensors="pt"
    )
    trained = run["model"].eval()
    with torch.no_grad():
        assert torch.allclose(trained(**batch).logits, reloaded.model.eval()(**batch).logits, atol=1e-5)


def test_predict_groups_multi_piece_words_into_entities(ner_run):
    run = Predictor(ner_run("full")["run_dir"])
    text = "angela merkel visited berlin"
    (prediction,) = run.predict([text])
    spans = [(e["type"], e["text"], e["start"], e["end"]) for e in prediction["entities"]]
    # merkel and berlin are two word pieces each; they come back as whole words inside one entity.
    assert spans == [("PER", "angela merkel", 0, 13), ("LOC", "berlin", 22, 28)]
    assert all(0.5 < e["score"] <= 1.0 for e in prediction["entities"])
    assert run.format_prediction(prediction).startswith(f'{text}\tPER "angela merkel" 0-13 ')


def test_cli_predict_and_evaluate(ner_run, capsys):
    run = ner_run("full")
    assert main(["predict", str(run["run_dir"]), "john met a friend in new york today", "the friend said"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith('john met a friend in new york today\tPER "john" 0-4 ')
    assert 'LOC "new york" 21-29' in lines[0]
    assert lines[1] == "the friend said\t(no entities)"

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["evaluate", str(run["run_dir"])]) == 0
    metrics = json.loads(out.getvalue())
    assert metrics["test_f1"] == pytest.approx(run["results"]["test_f1"])
    assert metrics["test_accuracy"] == pytest.approx(run["results"]["test_accuracy"])


@pytest.mark.parametrize("strategy", ["freeze_backbone", "train_last_n", "peft"])
def test_adapt_strategies_learn(ner_run, strategy):
    run = ner_run(strategy)
    assert run["results"]["test_f1"] >= F1_FLOOR[strategy]
    rows = {row["group"]: row for row in json.loads((run["run_dir"] / "parameters.json").read_text())}
    for group in FROZEN.get(strategy, []):
        assert rows[group]["trainable"] == 0, group
    assert "neck" not in rows
    if strategy == "peft":
        assert 0 < rows["block.0"]["trainable"] < rows["block.0"]["total"]
    else:
        assert rows["head"]["trainable"] == rows["head"]["total"] > 0


def test_lora_adapter_saves_the_token_head(ner_run):
    run_dir = ner_run("peft")["run_dir"]
    adapter = json.loads((run_dir / "adapter_config.json").read_text())
    assert adapter["task_type"] == "TOKEN_CLS"
    assert "classifier" in adapter["modules_to_save"]
    assert not (run_dir / "model.safetensors").exists()
    from safetensors.torch import load_file

    saved = load_file(str(run_dir / "adapter_model.safetensors"))
    heads = [tensor for name, tensor in saved.items() if ".classifier." in name and name.endswith("weight")]
    assert [tuple(t.shape) for t in heads] == [(len(TAGS), 32)]


def test_recipe_yaml_round_trip(ner_run):
    saved = yaml.safe_load((ner_run("full")["run_dir"] / "recipe.yaml").read_text())
    assert saved["task"] == "token-classification"
    assert saved["data"]["conll_tag_column"] == 3 and saved["data"]["tags_column"] == "ner_tags"


def test_export_of_a_run_whose_data_is_gone_is_checked_on_made_up_inputs(ner_run, tmp_path):
    assert_export_checked_on_made_up_inputs(ner_run("full")["run_dir"], tmp_path)
