"""Transfer in semantic segmentation: ImageNet-pretrained vs from-scratch backbone under the same small UperNet.

Runs `hubtune compare` (pipelines.runner.compare) on the two offline segmentation recipes: nuclei in a fluorescence image
(the held-out bottom-right quadrant as test) and Fashion-MNIST garment canvases (their test split), once per seed.
Each compare trains the recipe twice, identical but for `model.from_scratch` (the backbone's ImageNet weights, or
timm's random init; the decoder is new in both). Writes benchmarks/bench_segmentation.json and .md with test mean
IoU, per-class IoU, pixel accuracy and mean accuracy of both inits. Needs `make assets assets-vision`; run with
HF_HUB_OFFLINE=1.

Usage: python scripts/bench_segmentation.py [--recipes R ...] [--seeds 42 43 44] [--runs-dir runs/bench-segmentation]
       [--out benchmarks/bench_segmentation.json] [--threads 1] [key=value overrides for every recipe ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import numpy as np
import torch

from pipelines.config import load_recipe_config
from pipelines.runner.compare import compare
from pipelines.runs.folder import RESULTS_FILE

RECIPES = [
    Path("recipes/nuclei-upernet-efficientnet-lite0-offline.yaml"),
    Path("recipes/canvas-segmentation-upernet-efficientnet-lite0-offline.yaml"),
]
SCORES = ("mean_iou", "overall_accuracy", "mean_accuracy")
INITS = ("pretrained", "scratch")


def bench(recipe: Path, overrides: list[str], seeds: list[int], runs_dir: Path) -> dict:
    config = load_recipe_config(recipe, overrides)
    labels = config.data.labels or []
    started = time.perf_counter()
    rows, warnings = [], []
    for seed in seeds:
        report = compare(recipe, [*overrides, f"seed={seed}"], out_dir=runs_dir / config.name / f"seed-{seed}")
        warnings += [f"seed {seed}: {warning}" for warning in report.warnings]
        for row in report.rows:
            results = json.loads((Path(row["run"]) / RESULTS_FILE).read_text())
            rows.append(
                {
                    "init": row["init"],
                    "seed": seed,
                    "train_samples": row["train_samples"],
                    **{name: results[f"test_{name}"] for name in SCORES},
                    "iou": {label: results[f"test_iou_{label}"] for label in labels},
                    "test_samples": results["test_samples"],
                    "train_runtime_s": results["train_runtime"],
                }
            )
    means = {
        init: {name: float(np.mean([row[name] for row in rows if row["init"] == init])) for name in SCORES}
        for init in INITS
    }
    return {
        "recipe": str(recipe),
        "overrides": overrides,
        "seeds": seeds,
        "rows": rows,
        "means": means,
        "warnings": warnings,
        "wall_time_s": time.perf_counter() - started,
    }


def _table(result: dict) -> list[str]:
    labels = list(result["rows"][0]["iou"])
    header = ["init", "seed", "train images", "mean IoU", *(f"IoU {label}" for label in labels)]
    header += ["pixel accuracy", "mean accuracy", "train s"]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for row in sorted(result["rows"], key=lambda row: (row["init"], row["seed"])):
        cells = [row["init"], str(row["seed"]), str(row["train_samples"]), f"{row['mean_iou']:.4f}"]
        cells += [f"{row['iou'][label]:.4f}" for label in labels]
        cells += [f"{row['overall_accuracy']:.4f}", f"{row['mean_accuracy']:.4f}", f"{row['train_runtime_s']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _verdict(result: dict) -> str:
    by_seed = {(row["init"], row["seed"]): row["mean_iou"] for row in result["rows"]}
    seeds = result["seeds"]
    wins = sum(by_seed["pretrained", seed] > by_seed["scratch", seed] for seed in seeds)
    pretrained, scratch = (result["means"][init]["mean_iou"] for init in INITS)
    verdict = "beats" if pretrained > scratch else "does not beat"
    return (
        f"Mean over {len(seeds)} seed(s): pretrained {pretrained:.4f}, scratch {scratch:.4f} test mean IoU; "
        f"pretrained {verdict} scratch by {pretrained - scratch:+.4f} (higher at {wins} of {len(seeds)} seeds)."
    )


def markdown(results: list[dict], threads: int) -> str:
    lines = [
        "# Semantic segmentation: ImageNet-pretrained vs from-scratch EfficientNet-Lite0 under UperNet",
        "",
        f"`python scripts/bench_segmentation.py` on {platform.machine()} CPU, {threads} torch thread(s); the test "
        "split of each recipe. A seed draws the decoder's init, the scratch backbone's init and the augmentation.",
        "",
    ]
    for result in results:
        lines += [f"## {Path(result['recipe']).stem}", "", *_table(result), "", _verdict(result), ""]
        lines += [f"Warning: {warning}" for warning in result["warnings"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipes", type=Path, nargs="+", default=RECIPES)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44], help="one compare per seed")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/bench-segmentation"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/bench_segmentation.json"))
    # On a small CPU shared with other work, a multi-thread pool stalls at every op: one thread ran these recipes
    # several times faster than torch's default two on the 2-core machine they were measured on.
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides for every recipe")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    results = [bench(recipe, args.overrides, args.seeds, args.runs_dir) for recipe in args.recipes]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"threads": args.threads, "results": results}, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(results, args.threads))
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
