"""Does `hubtune rank` pick the checkpoint that fine-tunes best, for a fraction of the cost? Real checkpoints, real data.

For each labelled image set, `pipelines.rank` scores the candidate ImageNet checkpoints (LogME of one frozen forward
pass over the training images); then each candidate is fine-tuned with the same recipe (adapt.strategy=full) over
several seeds and scored on a held-out test set. Reported per set: Kendall's tau between LogME and the mean test
accuracy, rank's seconds against the fine-tuning seconds it stands in for; and the mean tau over the sets.

The strategy rank suggests (pipelines/runner/rank_suggestion.py) is checked too: at the main size and at a few
images per class, the best-ranked checkpoint is fine-tuned with freeze_backbone, full and the suggested strategy,
and the suggestion counts as a hit where it is (one of) the best measured.

Candidates: EfficientNet-Lite0/1/2 (Hub ids, converted into the Hugging Face cache) and torchvision's MobileNetV2
(a local timm folder), all placed by scripts/prepare_image_assets.py (`make assets-image`). Sets (written by
scripts/bench_rank_data.py): Fashion-MNIST, scikit-learn's 8x8 digits, and patches of 9 offline photos (which photo a
crop comes from). Run with HF_HUB_OFFLINE=1; writes benchmarks/bench_rank.json and .md.

Usage: python scripts/bench_rank.py [--datasets ...] [--per-class 40] [--seeds 42 43 44] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from statistics import fmean
from typing import Any

import torch
from scipy.stats import kendalltau

from pipelines import RankReport, Recipe, rank
from pipelines.config import load_recipe_config
from pipelines.errors import HubtuneError

sys.path.insert(0, str(Path(__file__).parent))
from bench_rank_data import DATASETS, subset, write_csv  # noqa: E402 (a sibling script)

logger = logging.getLogger("bench_rank")

CANDIDATES = [
    "timm/tf_efficientnet_lite0.in1k",
    "timm/tf_efficientnet_lite1.in1k",
    "timm/tf_efficientnet_lite2.in1k",
    "data/checkpoints/mobilenetv2_100.tv_in1k",
]
STRATEGIES = ["freeze_backbone", "full"]  # always measured for the suggestion; the suggested one is added


def recipe_values(name: str, train: Path, test: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The one recipe every candidate is ranked and fine-tuned with."""
    return {
        "name": name,
        "task": "image-classification",
        "seed": 42,
        "model": {"checkpoint": CANDIDATES[0]},
        "data": {
            "files": {"train": str(train), "test": str(test)},
            "validation_split": None,
            "validation_fraction": None,
            "image_size": args.image_size,
        },
        "adapt": {"strategy": "full", "feature_cache_dir": str(args.runs_dir / "feature-cache")},
        "training": {
            "num_train_epochs": args.epochs,
            "learning_rate": args.learning_rate,
            "warmup_steps": 0.1,
            "weight_decay": 0.01,
            "per_device_train_batch_size": args.batch_size,
            "per_device_eval_batch_size": 64,
            "eval_strategy": "no",
            "save_strategy": "no",
            "logging_steps": 10,
        },
    }


def finetune(values: dict[str, Any], overrides: list[str], out: Path) -> tuple[float, float]:
    """Test accuracy and wall seconds of one training run of the recipe with `overrides`."""
    started = time.perf_counter()
    recipe = Recipe.from_dict(values, [*overrides, f"output_dir={out}", "overwrite=true"])
    results = recipe.run()
    shutil.rmtree(out, ignore_errors=True)  # the benchmark keeps the numbers, not the models
    return float(results["test_accuracy"]), time.perf_counter() - started


def kendall(scores: dict[str, float | None], accuracies: dict[str, float]) -> float:
    """Kendall's tau-b between the scores and the mean accuracies of the same checkpoints (NaN where a checkpoint
    has no score: LEEP and NCE need its own trained head)."""
    names = sorted(scores)
    if any(scores[n] is None for n in names):
        return float("nan")
    tau = kendalltau([scores[n] for n in names], [accuracies[n] for n in names]).statistic
    return float(tau)


def as_given(checkpoint: str, candidates: list[str]) -> str:
    """A candidate as the command line named it (rank names a local folder by its absolute path)."""
    return next((c for c in candidates if c == checkpoint or str(Path(c).resolve()) == checkpoint), checkpoint)


def strategy_of(overrides: list[str]) -> str:
    return next(o.split("=", 1)[1] for o in overrides if o.startswith("adapt.strategy="))


def timed_rank(values: dict[str, Any], checkpoints: list[str], out: Path) -> tuple[RankReport, float]:
    """rank over every training example of the recipe, and its wall seconds."""
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    report = rank(load_recipe_config(values=values), checkpoints, samples=10**9, out_dir=out)
    seconds = time.perf_counter() - started
    if report.failed or report.best is None or report.suggestion is None:
        sys.exit(f"bench_rank: {values['name']}: not scored: {report.failed}")
    return report, seconds


def suggestion_check(
    values: dict[str, Any], report: RankReport, per_class: int, args: argparse.Namespace, runs: Path, measured: dict
) -> dict[str, Any]:
    """The best-ranked candidate measured under freeze_backbone, full and the strategy `report` suggests. `measured`
    holds (checkpoint, strategy, per_class) -> accuracies already run (the full grid), reused here."""
    assert report.best is not None and report.suggestion is not None
    best_ranked = as_given(report.best.checkpoint, args.checkpoints)
    suggested = report.suggestion.overrides
    strategies = {s: [f"adapt.strategy={s}"] for s in STRATEGIES}
    strategies.setdefault(strategy_of(suggested), suggested)
    rows: dict[str, Any] = {}
    for strategy, overrides in strategies.items():
        key = (best_ranked, strategy, per_class)
        if key not in measured:
            try:
                measured[key] = [
                    finetune(
                        values,
                        [f"model.checkpoint={best_ranked}", f"seed={seed}", *overrides],
                        runs / f"{strategy}-{seed}",
                    )[0]
                    for seed in args.seeds
                ]
            except HubtuneError as error:  # a suggestion that cannot run on this model is a miss, said as such
                measured[key] = str(error)
        found = measured[key]
        rows[strategy] = {"failed": found} if isinstance(found, str) else {"per_seed": found, "mean": fmean(found)}
    best_mean = max(row["mean"] for row in rows.values() if "mean" in row)
    best = [s for s, row in rows.items() if row.get("mean") == best_mean]
    return {
        "per_class": per_class,
        "epochs": values["training"]["num_train_epochs"],
        "best_ranked": best_ranked,
        "suggested": " ".join(suggested),
        "logme_gain": report.suggestion.logme_gain,
        "accuracies": rows,
        "best_measured": best,
        "hit": strategy_of(suggested) in best,
    }


def bench_dataset(name: str, args: argparse.Namespace) -> dict[str, Any]:
    folder = args.data_dir / name
    rows = DATASETS[name](folder, args.per_class, args.test_per_class, args.data_seed)
    runs = args.runs_dir / name
    test = write_csv(rows["test"], runs / "test.csv")
    train = write_csv(rows["train"], runs / "train.csv")
    values = recipe_values(f"bench-rank-{name}", train, test, args)
    report, rank_seconds = timed_rank(values, args.checkpoints, runs / "rank")
    scores = {as_given(score.checkpoint, args.checkpoints): score.logme for score in report.ranked}
    accuracies: dict[str, dict[str, Any]] = {}
    measured: dict[tuple, list[float] | str] = {}
    finetune_seconds = 0.0
    for checkpoint in args.checkpoints:
        per_seed = []
        for seed in args.seeds:
            accuracy, seconds = finetune(
                values, [f"model.checkpoint={checkpoint}", f"seed={seed}"], runs / f"ft-{seed}"
            )
            logger.info("%s %s seed %d: accuracy %.4f in %.0f s", name, checkpoint, seed, accuracy, seconds)
            per_seed.append(accuracy)
            finetune_seconds += seconds
        accuracies[checkpoint] = {"per_seed": per_seed, "mean": fmean(per_seed)}
        measured[(checkpoint, "full", args.per_class)] = per_seed
    suggestions = [suggestion_check(values, report, args.per_class, args, runs, measured)]
    for per_class in args.suggestion_per_class:
        small = write_csv(subset(rows["train"], per_class), runs / f"train-{per_class}.csv")
        small_values = recipe_values(f"bench-rank-{name}-{per_class}", small, test, args)
        small_values["training"]["num_train_epochs"] = args.small_epochs
        small_report, _ = timed_rank(small_values, args.checkpoints, runs / f"rank-{per_class}")
        suggestions.append(suggestion_check(small_values, small_report, per_class, args, runs, measured))
    means = {c: a["mean"] for c, a in accuracies.items()}
    tau = kendall(scores, means)
    # LEEP and NCE (from each ImageNet head's predictions) come with the same pass: how they would have ranked.
    others = {
        measure: {as_given(s.checkpoint, args.checkpoints): getattr(s, measure) for s in report.ranked}
        for measure in ("leep", "nce")
    }
    logger.info("%s: tau %.3f, rank %.0f s, fine-tuning %.0f s", name, tau, rank_seconds, finetune_seconds)
    return {
        "train_examples": len(rows["train"]),
        "test_examples": len(rows["test"]),
        "classes": len({label for _, label in rows["train"]}),
        "kendall_tau": tau,
        "rank_seconds": rank_seconds,
        "finetune_seconds": finetune_seconds,
        "cost_ratio": rank_seconds / finetune_seconds,
        "scores": scores,
        "other_scores": others,
        "other_kendall_tau": {measure: kendall(values, means) for measure, values in others.items()},
        "logme_floor": report.ranked[0].logme_floor,
        "accuracies": accuracies,
        "suggestions": suggestions,
    }


def markdown(result: dict[str, Any]) -> str:
    setup = result["setup"]
    lines = [
        "# `hubtune rank` against fine-tuning (scripts/bench_rank.py)",
        "",
        f"{setup['per_class']} training images per class, {setup['image_size']} px, full fine-tuning for "
        f"{setup['epochs']} epochs at LR {setup['learning_rate']}, seeds {setup['seeds']}, "
        f"{setup['torch_threads']} CPU thread(s). Mean test accuracy over the seeds; LogME from one frozen pass.",
        "",
        "| dataset | checkpoint | LogME | test accuracy (mean) | per seed |",
        "|---|---|---|---|---|",
    ]
    for name, data in result["datasets"].items():
        for checkpoint in sorted(data["scores"], key=data["scores"].get, reverse=True):
            accuracy = data["accuracies"][checkpoint]
            seeds = ", ".join(f"{a:.3f}" for a in accuracy["per_seed"])
            lines.append(
                f"| {name} | {checkpoint} | {data['scores'][checkpoint]:.3f} | {accuracy['mean']:.3f} | {seeds} |"
            )
    lines += [
        "",
        "| dataset | Kendall tau: LogME | LEEP | NCE | rank s | fine-tuning s | rank / fine-tuning |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, data in result["datasets"].items():
        other = data["other_kendall_tau"]
        lines.append(
            f"| {name} | {data['kendall_tau']:.2f} | {other['leep']:.2f} | {other['nce']:.2f} | "
            f"{data['rank_seconds']:.0f} | {data['finetune_seconds']:.0f} | {data['cost_ratio']:.3f} |"
        )
    other = result["mean_other_kendall_tau"]
    lines += [
        "",
        f"Mean Kendall tau: **{result['mean_kendall_tau']:.2f}** (LEEP {other['leep']:.2f}, NCE {other['nce']:.2f}); "
        f"rank costs {result['cost_ratio']:.3f} of the fine-tuning it stands in for (all candidates, all seeds).",
        "",
        "| dataset | images per class | suggested | freeze_backbone | full | suggested's accuracy | hit |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, data in result["datasets"].items():
        for check in data["suggestions"]:
            acc = {s: f"{row['mean']:.3f}" if "mean" in row else "failed" for s, row in check["accuracies"].items()}
            suggested = strategy_of(check["suggested"].split())
            lines.append(
                f"| {name} | {check['per_class']} | {check['suggested']} | {acc['freeze_backbone']} | {acc['full']} | "
                f"{acc[suggested]} | {'yes' if check['hit'] else 'no'} |"
            )
    failures = {
        f"{strategy} on {check['best_ranked']}": row["failed"]
        for data in result["datasets"].values()
        for check in data["suggestions"]
        for strategy, row in check["accuracies"].items()
        if "failed" in row
    }
    lines += [f"\n**{what} failed:** {reason}" for what, reason in failures.items()]
    lines.append(f"\nSuggestion hits: {result['suggestion_hits']}")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--checkpoints", nargs="+", default=CANDIDATES)
    parser.add_argument("--per-class", type=int, default=40, help="training images per class")
    parser.add_argument("--test-per-class", type=int, default=50)
    parser.add_argument("--suggestion-per-class", type=int, nargs="*", default=[5], help="smaller sizes checked")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--small-epochs", type=int, default=10)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=16)
    # Another job shares this machine's few cores; one thread also keeps the timings comparable.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, default=Path("data/bench_rank"))
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/bench-rank"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/bench_rank.json"))
    return parser.parse_args(argv)


def summary(args: argparse.Namespace, datasets: dict[str, Any]) -> dict[str, Any]:
    checks = [check for data in datasets.values() for check in data["suggestions"]]
    return {
        "setup": {
            "checkpoints": args.checkpoints,
            "per_class": args.per_class,
            "test_per_class": args.test_per_class,
            "image_size": args.image_size,
            "epochs": args.epochs,
            "small_epochs": args.small_epochs,
            "learning_rate": args.learning_rate,
            "batch_size": args.batch_size,
            "strategy": "full",
            "seeds": args.seeds,
            "torch_threads": torch.get_num_threads(),
        },
        "datasets": datasets,
        "mean_kendall_tau": fmean(data["kendall_tau"] for data in datasets.values()),
        "mean_other_kendall_tau": {
            measure: fmean(data["other_kendall_tau"][measure] for data in datasets.values())
            for measure in ("leep", "nce")
        },
        "cost_ratio": sum(d["rank_seconds"] for d in datasets.values())
        / sum(d["finetune_seconds"] for d in datasets.values()),
        "suggestion_hits": f"{sum(check['hit'] for check in checks)}/{len(checks)}",
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logger.setLevel(logging.INFO)
    # rank's own timing would otherwise read features an earlier run cached.
    shutil.rmtree(args.runs_dir / "feature-cache", ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    datasets: dict[str, Any] = {}
    for name in args.datasets:
        datasets[name] = bench_dataset(name, args)
        result = summary(args, datasets)  # written after each set, so that a long run leaves what it measured
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
