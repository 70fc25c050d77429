"""`hubtune compare RECIPE`: the transfer report. The same recipe from the pretrained checkpoint and from a
random initialisation of the same architecture, optionally at several labelled-data sizes and over several
seeds, as a table (mean ± std, each seed's score, a paired bootstrap interval of the gain), a plot and plain
warnings (negative transfer, a label set or input domain that looks mismatched).
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
from pipelines.runner.spread import CONFIDENCE, Spread, paired_bootstrap, spread
from pipelines.runs.folder import write_json
from pipelines.runs.guard import check_replaceable, finish_run, record_written, start_run
from pipelines.tasks import Task, get_task

logger = logging.getLogger(__name__)

COMPARE_FILE, REPORT_FILE, PLOT_FILE = "compare.json", "compare.md", "compare.png"
INITS = ("pretrained", "scratch")


@dataclass
class SizeSummary:
    """Both inits at one training-set size, over the seeds: the gain is pretrained minus scratch, seed by seed."""

    train_samples: int
    scores: dict[str, Spread]  # init -> its scores over the seeds, in seed order
    gain_interval: tuple[float, float]

    @property
    def gain(self) -> float:
        return self.scores["pretrained"].mean - self.scores["scratch"].mean

    def to_dict(self) -> dict[str, Any]:
        return {
            "train_samples": self.train_samples,
            **{
                init: {"mean": score.mean, "std": score.std, "seeds": list(score.values)}
                for init, score in self.scores.items()
            },
            "gain": self.gain,
            "gain_interval": list(self.gain_interval),
        }


@dataclass
class TransferReport:
    metric: str
    seeds: list[int] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per (size, init, seed)
    summary: list[SizeSummary] = field(default_factory=list)  # one per size
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "seeds": self.seeds,
            "confidence": CONFIDENCE,
            "rows": self.rows,
            "summary": [size.to_dict() for size in self.summary],
            "warnings": self.warnings,
        }


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
    config: RecipeConfig, sizes: Sequence[int | None], seeds: Sequence[int], out_dir: Path, overrides: Sequence[str]
) -> list[tuple[str, int, Recipe]]:
    runs = []
    for size in sizes:
        for seed in seeds:
            for init in INITS:
                name = f"{init}-{size if size else 'all'}-seed{seed}"
                run_overrides = [
                    *overrides,
                    f"seed={seed}",
                    f"model.from_scratch={str(init == 'scratch').lower()}",
                    f"output_dir={out_dir / name}",
                    "overwrite=true",
                    "hub.push=false",
                ]
                if size:
                    run_overrides.append(f"data.max_train_samples={size}")
                recipe = Recipe(load_recipe_config(values=config.to_dict(), overrides=run_overrides))
                runs.append((init, seed, recipe))
    return runs


def _check_seeds(seeds: Sequence[int]) -> None:
    repeated = sorted({seed for seed in seeds if list(seeds).count(seed) > 1})
    if repeated:
        raise HubtuneError(f"--seeds lists {', '.join(map(str, repeated))} more than once; give each seed once")


def compare(
    recipe_path: str | Path,
    overrides: Sequence[str] = (),
    sizes: Sequence[int] = (),
    metric: str | None = None,
    out_dir: str | Path | None = None,
    seeds: Sequence[int] = (),
) -> TransferReport:
    """Train the recipe pretrained and from scratch at each size (all the data when no size is given) and each
    seed (the recipe's own when none is given), and write the report into `out_dir`."""
    _check_seeds(seeds)
    config = load_recipe_config(recipe_path, overrides)
    seeds = list(seeds) or [config.seed]
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
    report = TransferReport(metric=f"test_{metric}", seeds=seeds)
    report.warnings += _label_warnings(task, prepared.label_names)
    report.warnings += task.domain_warnings(splits, processor)
    runs = _runs(config, list(sizes) or [None], seeds, out_dir, overrides)
    start_run(out_dir)
    record_written(out_dir, [recipe.output_dir.name for _, _, recipe in runs] + [COMPARE_FILE, REPORT_FILE, PLOT_FILE])
    for init, seed, recipe in runs:
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
                "seed": seed,
                report.metric: results[report.metric],
                "run": str(recipe.output_dir),
            }
        )
    report.summary = summarise(report.rows, report.metric, seeds)
    lower_is_better = report.metric.endswith(task.lower_is_better)
    for size in report.summary:
        # Negative transfer is claimed only when the whole interval of the gain lies on the worse side of zero.
        low, high = size.gain_interval
        if (low > 0) if lower_is_better else (high < 0):
            report.warnings.append(
                f"negative transfer at {size.train_samples} training examples: pretrained {report.metric} "
                f"{size.scores['pretrained']} is worse than from scratch {size.scores['scratch']} "
                f"(gain {size.gain:+.4f}, {CONFIDENCE:.0%} interval {low:+.4f} to {high:+.4f})"
            )
    for warning in report.warnings:
        logger.warning(warning)
    _write(report, out_dir, config.name)
    finish_run(out_dir)
    return report


def summarise(rows: Sequence[dict[str, Any]], metric: str, seeds: Sequence[int]) -> list[SizeSummary]:
    """Per training-set size, both inits' `metric` over `seeds` and the paired interval of the gain; `rows` hold
    `train_samples`, `init` (pretrained or scratch), `seed` and `metric` (scripts/fewshot_image.py's too)."""
    scores: dict[int, dict[str, dict[int, float]]] = {}
    for row in rows:
        scores.setdefault(row["train_samples"], {}).setdefault(row["init"], {})[row["seed"]] = row[metric]
    summary = []
    for samples, by_init in sorted(scores.items()):
        gains = [by_init["pretrained"][seed] - by_init["scratch"][seed] for seed in seeds]
        summary.append(
            SizeSummary(
                samples,
                {init: spread([by_init[init][seed] for seed in seeds]) for init in INITS},
                paired_bootstrap(gains),
            )
        )
    return summary


def _write(report: TransferReport, out_dir: Path, name: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / COMPARE_FILE, report.to_dict())
    sizes = [size.train_samples for size in report.summary]
    figure = Figure(figsize=(6, 4))
    axis = figure.subplots()
    for init in INITS:
        means = [size.scores[init].mean for size in report.summary]
        stds = [size.scores[init].std for size in report.summary]
        axis.errorbar(sizes, means, yerr=stds, marker="o", capsize=3, label=init)
    if len(sizes) > 1:
        axis.set_xscale("log")
    seeds = f", {len(report.seeds)} seeds (mean ± std)" if len(report.seeds) > 1 else ""
    axis.set(xlabel="training examples", ylabel=report.metric, title=f"Transfer: {name}{seeds}")
    axis.legend()
    figure.tight_layout()
    figure.savefig(out_dir / PLOT_FILE, dpi=100)
    interval = f"gain ({CONFIDENCE:.0%} paired bootstrap interval)"
    lines = [
        f"# Transfer report: {name}",
        "",
        f"Seeds: {', '.join(map(str, report.seeds))}. Scores are the mean ± the standard deviation over the seeds; "
        "the gain is pretrained minus scratch, paired by seed.",
        "",
        f"| training examples | pretrained {report.metric} | scratch {report.metric} | {interval} |",
        "|---|---|---|---|",
    ]
    for size in report.summary:
        low, high = size.gain_interval
        lines.append(
            f"| {size.train_samples} | {size.scores['pretrained']} | {size.scores['scratch']} | "
            f"{size.gain:+.4f} ({low:+.4f} to {high:+.4f}) |"
        )
    if len(report.seeds) > 1:
        lines += ["", "| training examples | init | " + " | ".join(f"seed {seed}" for seed in report.seeds) + " |"]
        lines.append("|---|---|" + "---|" * len(report.seeds))
        for size in report.summary:
            for init in INITS:
                values = " | ".join(f"{value:.4f}" for value in size.scores[init].values)
                lines.append(f"| {size.train_samples} | {init} | {values} |")
    lines += ["", f"![{report.metric}]({PLOT_FILE})", ""]
    lines += [f"**Warning:** {warning}" for warning in report.warnings] or ["No warnings."]
    (out_dir / REPORT_FILE).write_text("\n".join(lines) + "\n")
