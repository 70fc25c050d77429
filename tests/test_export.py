"""hubtune export --merge: LoRA folded into the base weights, head kept, plain from_pretrained loads it."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from pipelines import HubtuneError
from pipelines.cli import main
from pipelines.inference import Predictor


def test_merged_lora_export_loads_with_plain_from_pretrained_and_predicts_the_same(trained_run, tmp_path, capsys):
    run = trained_run("lora")
    out = tmp_path / "merged"
    assert main(["export", str(run.run_dir), str(out), "--merge"]) == 0
    check = json.loads((out / "export_check.json").read_text())
    assert check["merged_adapter"] is True and check["max_abs_logit_difference"] < 1e-4
    assert not (out / "adapter_config.json").exists()
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.id2label == {0: "negative", 1: "positive"}
    assert not any("lora" in name for name, _ in model.named_parameters())

    texts = ["the film was good", "awful plot and boring cast"]
    adapter_scores = [p["scores"] for p in Predictor(run.run_dir).predict(texts)]
    merged_scores = [p["scores"] for p in Predictor(out).predict(texts)]
    for adapter, merged in zip(adapter_scores, merged_scores):
        for label in adapter:
            assert merged[label] == pytest.approx(adapter[label], abs=1e-5)
    # The trained head, not a fresh one: the merged model still separates the classes.
    assert [max(s, key=s.get) for s in merged_scores] == ["positive", "negative"]


def test_lora_export_without_merge_is_an_error(trained_run, tmp_path):
    from pipelines.export import export_run

    with pytest.raises(HubtuneError, match="--merge"):
        export_run(trained_run("lora").run_dir, tmp_path / "out", merge=False)
    assert not (tmp_path / "out").exists()


def test_full_run_exports_as_is(trained_run, tmp_path):
    from pipelines.export import export_run

    run = trained_run("full")
    check = export_run(run.run_dir, tmp_path / "out", merge=True)
    assert check["merged_adapter"] is False and check["max_abs_logit_difference"] == 0.0
    original = AutoModelForSequenceClassification.from_pretrained(run.run_dir)
    exported = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out")
    for (name, a), (_, b) in zip(original.named_parameters(), exported.named_parameters()):
        assert torch.equal(a, b), name
