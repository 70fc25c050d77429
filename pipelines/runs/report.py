"""Plots and `report.md` for a finished run, from the files the run folder already holds.

Loss and metric curves come from `trainer_state.json`, per-class F1 bars from the `test_f1_<label>` results,
and the confusion matrix from `test_confusion_matrix.json` when the task wrote one.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from pipelines.runs.folder import RESULTS_FILE

logger = logging.getLogger(__name__)

PLOTS_DIR = "plots"
REPORT_FILE = "report.md"
# Where transformers' TensorBoard callback and trackio write inside the run folder.
TENSORBOARD_DIR, TRACKIO_DIR = "runs", "trackio"
CONFUSION_FILE = "test_confusion_matrix.json"


def _history(run_dir: Path) -> list[dict[str, Any]]:
    state = run_dir / "trainer_state.json"
    return json.loads(state.read_text())["log_history"] if state.is_file() else []


def _plot_losses(history: list[dict[str, Any]], path: Path) -> bool:
    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    evaluation = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    if not train and not evaluation:
        return False
    figure = Figure(figsize=(6, 4))
    axis = figure.subplots()
    for points, label in ((train, "train loss"), (evaluation, "validation loss")):
        if points:
            axis.plot(*zip(*points), marker="o" if len(points) < 30 else None, label=label)
    axis.set(xlabel="step", ylabel="loss", title="Loss")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return True


def _plot_metrics(history: list[dict[str, Any]], path: Path, metrics: tuple[str, ...]) -> bool:
    curves = {name: [(h["step"], h[f"eval_{name}"]) for h in history if f"eval_{name}" in h] for name in metrics}
    curves = {name: points for name, points in curves.items() if points}
    if not curves:
        return False
    figure = Figure(figsize=(6, 4))
    axis = figure.subplots()
    for name, points in curves.items():
        axis.plot(*zip(*points), marker="o", label=name)
    axis.set(xlabel="step", ylabel="score", title="Validation metrics")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return True


def _plot_per_class_f1(results: dict[str, Any], path: Path) -> bool:
    scores = {
        key.removeprefix("test_f1_"): value
        for key, value in results.items()
        if key.startswith("test_f1_") and key != "test_f1_macro"
    }
    if not scores:
        return False
    figure = Figure(figsize=(max(4, 0.6 * len(scores) + 2), 4))
    axis = figure.subplots()
    axis.bar(list(scores), list(scores.values()))
    axis.set(ylim=(0, 1), ylabel="F1", title="Test F1 per class")
    axis.tick_params(axis="x", labelrotation=45)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return True


def _plot_confusion(run_dir: Path, path: Path) -> bool:
    source = run_dir / CONFUSION_FILE
    if not source.is_file():
        return False
    confusion = json.loads(source.read_text())
    labels, matrix = confusion["labels"], confusion["confusion_matrix"]
    size = max(4, 0.5 * len(labels) + 2)
    figure = Figure(figsize=(size, size))
    axis = figure.subplots()
    image = axis.imshow(matrix, cmap="Blues")
    axis.set(
        xticks=range(len(labels)),
        yticks=range(len(labels)),
        xticklabels=labels,
        yticklabels=labels,
        xlabel="predicted",
        ylabel="true",
        title="Test confusion matrix",
    )
    axis.tick_params(axis="x", labelrotation=45)
    if len(labels) <= 20:
        darkest = max(max(values) for values in matrix) or 1
        for row, values in enumerate(matrix):
            for column, count in enumerate(values):
                axis.text(
                    column,
                    row,
                    str(count),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if count > darkest / 2 else "black",
                )
    figure.colorbar(image, ax=axis)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return True


def _tracker_lines(run_dir: Path) -> list[str]:
    """Where the run's local tracker logs are (relative links: the report moves with the folder)."""
    found = []
    if (run_dir / TENSORBOARD_DIR).is_dir():
        found.append(
            f"- TensorBoard: [{TENSORBOARD_DIR}/]({TENSORBOARD_DIR}/), viewed with "
            f"`tensorboard --logdir <this folder>/{TENSORBOARD_DIR}`"
        )
    if (run_dir / TRACKIO_DIR).is_dir():
        found.append(f"- trackio: [{TRACKIO_DIR}/]({TRACKIO_DIR}/)")
    return ["", "## Experiment trackers", "", *found] if found else []


def write_report(run_dir: Path, title: str, summary_metrics: tuple[str, ...]) -> Path:
    """Write plots/*.png and report.md into the run folder; returns the report's path. `summary_metrics` are the
    task's (`Task.summary_metrics`): the validation curves plotted."""
    results = json.loads((run_dir / RESULTS_FILE).read_text())
    history = _history(run_dir)
    plots = run_dir / PLOTS_DIR
    plots.mkdir(exist_ok=True)
    made = {
        "Loss": _plot_losses(history, plots / "loss.png") and "loss.png",
        "Validation metrics": _plot_metrics(history, plots / "metrics.png", summary_metrics) and "metrics.png",
        "Test F1 per class": _plot_per_class_f1(results, plots / "per_class_f1.png") and "per_class_f1.png",
        "Confusion matrix": _plot_confusion(run_dir, plots / "confusion_matrix.png") and "confusion_matrix.png",
    }
    rows = [
        (key, value)
        for key, value in sorted(results.items())
        if isinstance(value, (int, float)) and key.startswith(("train_", "eval_", "test_", "trainable"))
    ]
    lines = [f"# {title}", ""]
    if results.get("warnings"):
        lines += ["## Warnings", "", *(f"- {warning}" for warning in results["warnings"]), ""]
    if results.get("custom"):
        # Pieces the run took from Python (Recipe.run's compute_metrics, loss, data_collator).
        lines += ["## Custom pieces", "", *(f"- {name}: {what}" for name, what in results["custom"].items()), ""]
    lines += ["| metric | value |", "|---|---|"]
    lines += [f"| {key} | {value:.4g} |" if isinstance(value, float) else f"| {key} | {value} |" for key, value in rows]
    for heading, file in made.items():
        if file:
            lines += ["", f"## {heading}", "", f"![{heading}]({PLOTS_DIR}/{file})"]
    lines += _tracker_lines(run_dir)
    report = run_dir / REPORT_FILE
    report.write_text("\n".join(lines) + "\n")
    logger.info("report: %s", report)
    return report
