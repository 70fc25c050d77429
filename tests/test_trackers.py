"""Experiment trackers: TensorBoard with no setting, MLflow when named, the recipe as MLflow parameters."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pipelines import HubtuneError, Recipe, load_recipe_config
from pipelines.training.trainer import training_arguments

EVAL_METRICS = ("loss", "accuracy", "f1_macro", "precision_macro", "recall_macro")


def scalars(run_dir) -> dict[str, list[float]]:
    """Every scalar series in the run's TensorBoard event files, by tag."""
    series: dict[str, list[float]] = {}
    for events in sorted((run_dir / "runs").rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            series.setdefault(tag, []).extend(event.value for event in accumulator.Scalars(tag))
    return series


def test_a_fresh_install_logs_to_tensorboard_with_no_setting(recipe_values, tmp_path):
    config = load_recipe_config(values={k: v for k, v in recipe_values.items() if k != "training"})
    assert training_arguments(config, tmp_path, has_validation=True).report_to == ["tensorboard"]


def test_a_run_logs_training_loss_and_every_evaluation_metric_to_tensorboard(trained_run):
    run = trained_run("full")
    logged = scalars(run.run_dir)
    assert len(logged["train/loss"]) >= 2
    for metric in EVAL_METRICS:
        assert len(logged[f"eval/{metric}"]) == 4, metric  # one evaluation per epoch
    # The last evaluation is of the final model on the validation split, which the run's results score again.
    assert logged["eval/accuracy"][-1] == pytest.approx(run.results["eval_accuracy"], abs=1e-6)
    report = (run.run_dir / "report.md").read_text()
    assert "tensorboard --logdir" in report and "](runs/)" in report


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="mlflow is not installed")
def test_mlflow_gets_the_metrics_and_the_recipe_as_parameters(recipe_values, tmp_path, monkeypatch):
    import mlflow

    store = tmp_path / "mlruns"
    # A local file store needs no server; MLflow 3 keeps it behind this switch.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "hubtune-test")
    results = Recipe.from_dict(recipe_values, overrides=["training.report_to=[mlflow]"]).run()
    client = mlflow.MlflowClient(store.as_uri())
    (experiment,) = [e for e in client.search_experiments() if e.name == "hubtune-test"]
    (logged,) = client.search_runs([experiment.experiment_id])
    params = logged.data.params
    assert json.loads(params["recipe.adapt.strategy"]) == "full"
    assert json.loads(params["recipe.data.labels"]) == ["negative", "positive"]
    assert json.loads(params["recipe.training.learning_rate"]) == recipe_values["training"]["learning_rate"]
    metrics = logged.data.metrics
    assert "loss" in metrics and metrics["eval_accuracy"] == pytest.approx(results["eval_accuracy"], abs=1e-6)
    assert not (Path(recipe_values["output_dir"]) / "runs").exists()  # only the tracker the recipe names


def test_report_to_names_only_trackers_hubtune_knows(recipe_values):
    with pytest.raises(
        HubtuneError, match="recipe key 'training.report_to' names 'tensorbord'; did you mean 'tensorboard'"
    ):
        load_recipe_config(values=recipe_values, overrides=["training.report_to=tensorbord"])
    config = load_recipe_config(values=recipe_values, overrides=["training.report_to=[tensorboard, wandb]"])
    assert config.training["report_to"] == ["tensorboard", "wandb"]


def test_a_named_tracker_that_is_not_installed_is_refused_when_the_run_starts(recipe_values, monkeypatch):
    recipe = Recipe.from_dict(recipe_values, overrides=["training.report_to=wandb"])  # loads on any machine
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(HubtuneError, match="'training.report_to' names wandb, whose package is not installed"):
        recipe.run()
