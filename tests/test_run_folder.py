"""The run folder alone is enough: reloads predict what the trained model predicted, and evaluate agrees."""

from __future__ import annotations

import json

import pytest
import torch

from pipelines import HubtuneError, load_recipe_config
from pipelines.serving.predictor import EVALUATE_FILE, Predictor
from pipelines.tasks import get_task

TEXTS = [
    "the film was good",
    "awful plot",
    "a really boring movie",
    "superb acting and a lovely cast",
    "the story was dull",
    "what a great film",
]
EXPECTED = ["positive", "negative", "negative", "positive", "negative", "positive"]
RUNTIME_KEYS = ("runtime", "per_second")


def in_memory_predictions(run, texts):
    """The trained model object (as the Trainer finished with it) with the checkpoint's own tokenizer, served by the
    task's serving half without a Predictor."""
    task = get_task(run.recipe.config.task)(run.recipe.config)
    serving = task.serving(task, run.model.eval(), task.load_processor())
    batch = serving.preprocess(texts)
    with torch.no_grad():
        return serving.postprocess(batch, serving.forward(batch))


@pytest.mark.parametrize("strategy", ["full", "peft"])
def test_reload_predicts_like_the_trained_model(trained_run, strategy):
    run = trained_run(strategy)
    first = Predictor(run.run_dir).predict(TEXTS)
    second = Predictor(run.run_dir).predict(TEXTS)
    # Two independent loads: the very same numbers.
    assert [p["scores"] for p in first] == [p["scores"] for p in second]

    memory = in_memory_predictions(run, TEXTS)
    for loaded, trained in zip(first, memory):
        assert loaded["input"] == trained["input"]
        assert loaded["label"] == trained["label"]
        assert loaded["scores"].keys() == trained["scores"].keys() == {"negative", "positive"}
        for name in loaded["scores"]:
            assert loaded["scores"][name] == pytest.approx(trained["scores"][name], abs=1e-6)

    assert [p["label"] for p in first] == EXPECTED
    for prediction in first:
        assert prediction["score"] == max(prediction["scores"].values())
        assert sum(prediction["scores"].values()) == pytest.approx(1.0, abs=1e-6)
        assert prediction["score"] > 0.5


def test_lora_reload_goes_through_peft_with_the_trained_head(trained_run, tiny_bert):
    from peft import PeftModel
    from safetensors.torch import load_file

    run = trained_run("peft")
    loaded = Predictor(run.run_dir)
    assert isinstance(loaded.model, PeftModel)
    assert loaded.label_names == ["negative", "positive"]
    # The head copy PEFT trains is the one restored, equal to the in-memory trained head.
    trained_head = dict(run.model.named_parameters())
    loaded_head = dict(loaded.model.named_parameters())
    head_names = [name for name in trained_head if "classifier.modules_to_save" in name]
    assert head_names
    for name in head_names:
        assert torch.equal(trained_head[name].detach().cpu(), loaded_head[name].detach().cpu()), name
    # The base weights came from the original checkpoint, untouched by training.
    base = load_file(str(tiny_bert / "model.safetensors"))
    word_embeddings = loaded.model.get_base_model().bert.embeddings.word_embeddings.weight
    assert torch.equal(word_embeddings.detach(), base["bert.embeddings.word_embeddings.weight"])


@pytest.mark.parametrize("strategy", ["full", "peft"])
def test_evaluate_reproduces_the_test_metrics(trained_run, strategy):
    run = trained_run(strategy)
    saved = json.loads((run.run_dir / "all_results.json").read_text())
    metrics = Predictor(run.run_dir).evaluate()
    # Every quality metric the run recorded for its test split (not timings, not the sample count).
    compared = [
        key for key in saved if key.startswith("test_") and not key.endswith(RUNTIME_KEYS) and key != "test_samples"
    ]
    assert {"test_loss", "test_accuracy", "test_f1_macro", "test_f1_negative", "test_f1_positive"} <= set(compared)
    for key in compared:
        assert key in metrics, key
        assert metrics[key] == pytest.approx(saved[key], abs=1e-6), key
    assert json.loads((run.run_dir / EVALUATE_FILE).read_text()) == metrics


def test_evaluate_other_split(trained_run):
    run = trained_run("full")
    saved = json.loads((run.run_dir / "all_results.json").read_text())
    metrics = Predictor(run.run_dir).evaluate("validation")
    assert metrics["validation_accuracy"] == pytest.approx(saved["eval_accuracy"], abs=1e-6)
    assert metrics["validation_loss"] == pytest.approx(saved["eval_loss"], abs=1e-6)


def test_all_results_contents(trained_run):
    run = trained_run("full")
    saved = json.loads((run.run_dir / "all_results.json").read_text())
    records = ("speed_settings", "training_setup")  # what ran, as mappings (pytest.approx compares numbers only)
    for key in records:
        assert saved.pop(key) == run.results[key]
    assert saved == pytest.approx({key: value for key, value in run.results.items() if key not in records})
    for key in (
        "train_loss",
        "train_runtime",
        "train_samples_per_second",
        "train_samples",
        "eval_loss",
        "eval_accuracy",
        "eval_f1_macro",
        "eval_samples",
        "test_loss",
        "test_accuracy",
        "test_f1_macro",
        "test_samples",
        "trainable_parameters",
        "total_parameters",
        "trainable_share",
        "wall_time_s",
    ):
        assert key in saved, key
    assert saved["train_samples"] == 240 and saved["eval_samples"] == 60 and saved["test_samples"] == 60
    assert saved["train_samples_per_second"] > 0
    assert 0 < saved["trainable_parameters"] <= saved["total_parameters"]
    parameters = json.loads((run.run_dir / "parameters.json").read_text())
    assert saved["trainable_parameters"] == sum(row["trainable"] for row in parameters)
    # Wall time covers the whole run: at least the training itself.
    assert saved["wall_time_s"] >= saved["train_runtime"] > 0
    state = json.loads((run.run_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 4 * 240 // 16


@pytest.mark.parametrize("strategy", ["full", "peft"])
def test_run_folder_layout_and_recipe(trained_run, strategy):
    run = trained_run(strategy)
    for name in (
        "recipe.yaml",
        "all_results.json",
        "parameters.json",
        "trainer_state.json",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ):
        assert (run.run_dir / name).is_file(), name
    weights = "adapter_model.safetensors" if strategy == "peft" else "model.safetensors"
    assert (run.run_dir / weights).is_file()
    config = json.loads((run.run_dir / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}

    reloaded = load_recipe_config(run.run_dir / "recipe.yaml")
    assert reloaded.to_dict() == run.recipe.config.to_dict()
    assert reloaded.adapt.strategy == strategy
    # Paths are absolute, so the run folder works from any directory.
    assert all(path.startswith("/") for path in reloaded.data.files.values())
    assert reloaded.model.checkpoint.startswith("/")


def test_run_model_needs_a_run_folder(tmp_path):
    with pytest.raises(HubtuneError, match="does not exist"):
        Predictor(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(HubtuneError, match="has no recipe.yaml"):
        Predictor(tmp_path / "plain")


def test_predict_needs_inputs(trained_run):
    with pytest.raises(HubtuneError, match="at least one input"):
        Predictor(trained_run("full").run_dir).predict([])
