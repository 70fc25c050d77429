"""Every run writes plots and report.md from its own files."""

from __future__ import annotations

import json

from PIL import Image

from pipelines.training.trackers import LOCAL_TRACKERS, installed_local_trackers
from pipelines.training.trainer import training_arguments


def test_run_writes_plots_confusion_matrix_and_report(trained_run):
    run = trained_run("full")
    confusion = json.loads((run.run_dir / "test_confusion_matrix.json").read_text())
    assert confusion["labels"] == ["negative", "positive"]
    results = json.loads((run.run_dir / "all_results.json").read_text())
    matrix = confusion["confusion_matrix"]
    assert sum(map(sum, matrix)) == results["test_samples"]
    assert (matrix[0][0] + matrix[1][1]) / results["test_samples"] == results["test_accuracy"]
    for name in ("loss", "metrics", "per_class_f1", "confusion_matrix"):
        with Image.open(run.run_dir / "plots" / f"{name}.png") as image:
            assert image.size[0] > 200 and image.size[1] > 200
    report = (run.run_dir / "report.md").read_text()
    assert f"| test_accuracy | {results['test_accuracy']:.4g} |" in report
    assert "![Loss](plots/loss.png)" in report and "![Confusion matrix](plots/confusion_matrix.png)" in report


def test_trackers_default_to_installed_local_ones_and_bars_follow_the_terminal(recipe_values, tmp_path):
    from pipelines import load_recipe_config

    config = load_recipe_config(values={k: v for k, v in recipe_values.items() if k != "training"})
    args = training_arguments(config, tmp_path, has_validation=True)
    assert sorted(args.report_to) == sorted(installed_local_trackers())
    assert set(installed_local_trackers()) <= set(LOCAL_TRACKERS)
    assert args.disable_tqdm is True  # pytest's stderr is not a terminal
    explicit = load_recipe_config(values=recipe_values, overrides=["training.report_to=none"])
    assert training_arguments(explicit, tmp_path, has_validation=True).report_to == []
