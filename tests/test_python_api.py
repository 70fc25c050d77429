"""Recipes in research code: `Recipe.run` returns a `RunResult` that reads as the old metrics dict and holds the live
objects, and takes a custom metric function, loss and collator, each of which takes effect in a real tiny run and
is recorded in the run folder as not reproducible from the recipe."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, EvalPrediction

from pipelines import HubtuneError, Predictor, Recipe, RunResult, load_recipe_config
from pipelines.runs.card import model_card

CUSTOM = "custom (not reproducible from the recipe)"


def test_the_run_result_reads_as_the_metrics_dict(trained_run):
    run = trained_run("full")
    result = run.results
    assert isinstance(result, RunResult) and isinstance(result, Mapping)
    saved = json.loads((run.run_dir / "all_results.json").read_text())
    assert result == saved and saved == result  # json round-trips these floats exactly
    assert json.loads(json.dumps(dict(result))) == saved
    assert "test_accuracy" in result and "no_such_metric" not in result
    assert result.get("test_accuracy") == saved["test_accuracy"] and result.get("no_such_metric", 7) == 7
    assert sorted(result) == sorted(result.keys()) == sorted(saved) and len(result) == len(saved)
    assert dict(result.items()) == saved
    with pytest.raises(TypeError):
        result["mine"] = 1  # type: ignore[index]
    assert "model=" not in repr(result) and "test_accuracy" in repr(result)


def test_the_run_result_holds_the_trained_model_trainer_and_data(trained_run):
    run = trained_run("full")
    result = run.results
    assert result.run_dir == run.run_dir and result.label_names == ["negative", "positive"]
    assert result.model is run.model  # the model the Trainer finished with
    assert result.trainer.state.global_step > 0 and result.trainer.model is result.model
    assert len(result.data["test"]) == result["test_samples"] == 60
    # The model in memory is the one saved: the same logits as the run folder's model on the prepared test examples.
    # Batched by the run's collator directly: the Trainer's dataloader needs the accelerate state of the run, which
    # later tests in a session may have reset.
    inputs = ("input_ids", "attention_mask", "token_type_ids")
    rows = [{key: value for key, value in result.data["test"][i].items() if key in inputs} for i in range(8)]
    batch = dict(result.trainer.data_collator(rows))
    saved = AutoModelForSequenceClassification.from_pretrained(run.run_dir).eval()
    result.model.eval()
    with torch.no_grad():
        assert torch.allclose(result.model(**batch).logits, saved(**batch).logits, atol=1e-5)


def inverted_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy toward the other class: a model trained with it learns the opposite of its data."""
    return F.cross_entropy(logits, 1 - labels)


def assert_recorded(result: RunResult, keyword: str, name: str) -> None:
    """The run folder names the custom piece in all_results.json, report.md and a comment atop recipe.yaml."""
    note = f"{CUSTOM}: {__name__}.{name}"
    assert result["custom"] == {keyword: note}
    assert json.loads((result.run_dir / "all_results.json").read_text())["custom"] == {keyword: note}
    assert f"- {keyword}: {note}" in (result.run_dir / "report.md").read_text()
    assert (result.run_dir / "recipe.yaml").read_text().startswith(f"# {keyword}: {note}\n")
    card = model_card(result.run_dir, load_recipe_config(result.run_dir / "recipe.yaml"), "text-classification")
    assert f"- {keyword}: {note}." in card


def test_a_custom_loss_replaces_the_task_loss(recipe_values, trained_run):
    result = Recipe.from_dict(recipe_values).run(loss=inverted_loss)
    # The same recipe with the task's cross-entropy learns the data's labels; this run learned their opposite.
    assert trained_run("full").results["test_accuracy"] >= 0.9
    assert result["test_accuracy"] <= 0.1
    assert_recorded(result, "loss", "inverted_loss")
    # The run folder still serves: its recipe reads back and evaluate repeats the test accuracy.
    evaluated = Predictor(result.run_dir).evaluate("test")
    assert evaluated["test_accuracy"] == pytest.approx(result["test_accuracy"], abs=1e-6)


def predicted_positive_share(prediction: EvalPrediction) -> dict[str, float]:
    """The share of examples predicted as class 1 (positive)."""
    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    return {"predicted_positive_share": float((logits.argmax(-1) == 1).mean())}


def test_custom_metrics_come_in_addition_to_the_task_metrics(recipe_values, sentiment_files):
    result = Recipe.from_dict(recipe_values).run(compute_metrics=predicted_positive_share)
    with open(sentiment_files["test"], newline="") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)]
    labels = [prediction["label"] for prediction in Predictor(result.run_dir).predict(texts)]
    assert result["test_predicted_positive_share"] == pytest.approx(labels.count("positive") / len(labels))
    assert 0 <= result["eval_predicted_positive_share"] <= 1
    assert result["test_accuracy"] >= 0.9 and "test_f1_macro" in result  # the task's own stay
    assert_recorded(result, "compute_metrics", "predicted_positive_share")


def test_a_custom_metric_named_as_a_task_metric_is_refused(recipe_values):
    def accuracy_again(prediction: EvalPrediction) -> dict[str, float]:
        return {"accuracy": 1.0}

    recipe = Recipe.from_dict(recipe_values, ["training.num_train_epochs=1"])
    with pytest.raises(HubtuneError, match="returned 'accuracy', a metric the task reports itself"):
        recipe.run(compute_metrics=accuracy_again)


class SwappedLabels:
    """Pads as the task's collator does, and swaps the two classes in the labels of every batch."""

    def __init__(self, checkpoint: str) -> None:
        self.pad = DataCollatorWithPadding(AutoTokenizer.from_pretrained(checkpoint))

    def __call__(self, examples: list[dict]) -> dict:
        batch = self.pad(examples)
        batch["labels"] = 1 - batch["labels"]
        return batch


def test_a_custom_collator_makes_every_batch(recipe_values, tiny_bert):
    result = Recipe.from_dict(recipe_values).run(data_collator=SwappedLabels(str(tiny_bert)))
    # Trained and scored on batches with swapped labels, the run scores well against those...
    assert result["test_accuracy"] >= 0.9
    # ...and its model predicts the opposite of the data: evaluate batches with the task's own collator.
    assert Predictor(result.run_dir).evaluate("test")["test_accuracy"] <= 0.1
    assert_recorded(result, "data_collator", "SwappedLabels")


def test_custom_pieces_are_checked_before_anything_is_written(recipe_values, tiny_bert, tmp_path):
    with pytest.raises(HubtuneError, match=r"^Recipe.run\(loss=...\) takes a callable, got 'focal'$"):
        Recipe.from_dict(recipe_values).run(loss="focal")  # type: ignore[arg-type]
    cached = Recipe.from_dict(recipe_values, ["adapt.strategy=freeze_backbone", "adapt.feature_cache=true"])
    with pytest.raises(HubtuneError, match=r"data_collator=...\) cannot be used with 'adapt.feature_cache'"):
        cached.run(data_collator=SwappedLabels(str(tiny_bert)))
    assert not (tmp_path / "run").exists()
