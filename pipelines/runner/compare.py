"""`hubtune compare RECIPE`: the transfer report. The same recipe from the pretrained checkpoint and from a
random initialisation of the same architecture, optionally at several labelled-data sizes, as a table,
a plot and plain warnings (negative transfer, a label set or input domain that looks mismatched).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from pipelines.adapt.strategies import strategy_class
from pipelines.config import RecipeConfig, load_recipe_config
from pipelines.errors import HubtuneError
from pipelines.runner.recipe import Recipe
from pipelines.runs.folder import write_json
from pipelines.runs.guard import check_replaceable, finish_run, record_written, start_run
from pipelines.tasks import Task, get_task

logger = logging.getLogger(__name__)

COMPARE_FILE, REPORT_FILE, PLOT_FILE = "compare.json", "compare.md", "compare.png"


@dataclass
class TransferReport:
    metric: str
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per (size, init)
    warnings: list[str] = field(default_factory=list)


def _label_warnings(task: Task, label_names: list[str]) -> list[str]:
    theirs = {name.lower() for name in task.checkpoint_label_names()}
    ours = {name.lower() for name in label_names}
    if theirs & ours and theirs != ours:
        return [
            f"label set looks mismatched: the checkpoint's head was trained on {sorted(theirs)}, this recipe "
            f"has {sorted(ours)}; shared names do not keep their trained weights (the head is new)"
        ]
    return []


def _runs(
    config: RecipeConfig, sizes: Sequence[int | None], out_dir: Path, overrides: Sequence[str]
) -> list[tuple[str, Recipe]]:
    runs = []
    for size in sizes:
        for init in ("pretrained", "scratch"):
            name = f"{init}-{size if size else 'all'}"
            run_overrides = [
                *overrides,
                f"model.from_scratch={str(init == 'scratch').lower()}",
                f"output_dir={out_dir / name}",
                "overwrite=true",
                "hub.push=false",
            ]
            if size:
                run_overrides.append(f"data.max_train_samples={size}")
            runs.append((init, Recipe(load_recipe_config(values=config.to_dict(), overrides=run_overrides))))
    return runs


def compare(
    recipe_path: str | Path,
    overrides: Sequence[str] = (),
    sizes: Sequence[int] = (),
    metric: str | None = None,
    out_dir: str | Path | None = None,
) -> TransferReport:
    config = load_recipe_config(recipe_path, overrides)
    task = get_task(config.task)(config)
    metric = metric or task.primary_metric
    out_dir = Path(out_dir) if out_dir else Path("runs") / f"{config.name}-compare"
    if any(override.partition("=")[0].strip() == "output_dir" for override in overrides):
        raise HubtuneError(
            "compare puts each of its runs in its report folder (one per init and size), so 'output_dir' cannot be "
            "set; give the folder with --out"
        )
    # The report folder is hubtune's like a run folder: a folder someone else wrote, or one holding their files,
    # is never written into (a rerun of the same compare is).
    check_replaceable(out_dir, "--out")
    if strategy_class(config.adapt.strategy).saves_adapter:
        # An adapter is saved over the pretrained checkpoint: there is no adapter over random weights to compare.
        raise HubtuneError(
            f"compare trains from random weights too; use another 'adapt.strategy' than {config.adapt.strategy}"
        )
    processor = task.load_processor()
    splits = task.read_splits()
    prepared = task.prepare(splits, task.fit_processor(splits, processor))
    report = TransferReport(metric=f"test_{metric}")
    report.warnings += _label_warnings(task, prepared.label_names)
    report.warnings += task.domain_warnings(splits, processor)
    runs = _runs(config, list(sizes) or [None], out_dir, overrides)
    start_run(out_dir)
    record_written(out_dir, [recipe.output_dir.name for _, recipe in runs] + [COMPARE_FILE, REPORT_FILE, PLOT_FILE])
    for init, recipe in runs:
        results = recipe.run()
        if report.metric not in results:
            raise HubtuneError(
                f"metric '{report.metric}' is not in the results of '{recipe.output_dir}' "
                f"(have: {', '.join(k for k in results if k.startswith('test_'))})"
            )
        report.rows.append(
            {
                "train_samples": results["train_samples"],
                "init": init,
                report.metric: results[report.metric],
                "run": str(recipe.output_dir),
            }
        )
    by_size: dict[int, dict[str, float]] = {}
    for row in report.rows:
        by_size.setdefault(row["train_samples"], {})[row["init"]] = row[report.metric]
    lower_is_better = report.metric.endswith(task.lower_is_better)
    for samples, scores in sorted(by_size.items()):
        pretrained_wins = (
            (scores["pretrained"] < scores["scratch"])
            if lower_is_better
            else (scores["pretrained"] > scores["scratch"])
        )
        if not pretrained_wins:
            report.warnings.append(
                f"negative transfer at {samples} training examples: pretrained {report.metric} "
                f"{scores['pretrained']:.4f} is no better than from scratch {scores['scratch']:.4f}"
            )
    for warning in report.warnings:
        logger.warning(warning)
    _write(report, by_size, out_dir, config.name)
    finish_run(out_dir)
    return report


def _write(report: TransferReport, by_size: dict[int, dict[str, float]], out_dir: Path, name: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / COMPARE_FILE, {"metric": report.metric, "rows": report.rows, "warnings": report.warnings})
    sizes = sorted(by_size)
    figure = Figure(figsize=(6, 4))
    axis = figure.subplots()
    for init in ("pretrained", "scratch"):
        axis.plot(sizes, [by_size[s][init] for s in sizes], marker="o", label=init)
    if len(sizes) > 1:
        axis.set_xscale("log")
    axis.set(xlabel="training examples", ylabel=report.metric, title=f"Transfer: {name}")
    axis.legend()
    figure.tight_layout()
    figure.savefig(out_dir / PLOT_FILE, dpi=100)
    lines = [
        f"# Transfer report: {name}",
        "",
        f"| training examples | pretrained {report.metric} | scratch {report.metric} | gain |",
        "|---|---|---|---|",
    ]
    for samples in sizes:
        scores = by_size[samples]
        lines.append(
            f"| {samples} | {scores['pretrained']:.4f} | {scores['scratch']:.4f} | "
            f"{scores['pretrained'] - scores['scratch']:+.4f} |"
        )
    lines += ["", f"![{report.metric}]({PLOT_FILE})", ""]
    lines += [f"**Warning:** {warning}" for warning in report.warnings] or ["No warnings."]
    (out_dir / REPORT_FILE).write_text("\n".join(lines) + "\n")
