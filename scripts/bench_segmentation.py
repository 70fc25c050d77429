"""Transfer in semantic segmentation: ImageNet-pretrained vs from-scratch backbone under the same small UperNet.

Runs `hubtune compare` (pipelines.compare) on the two offline segmentation recipes: nuclei in a fluorescence image
(the held-out bottom-right quadrant as test) and Fashion-MNIST garment canvases (their test split). Each recipe
trains twice, identical but for `model.from_scratch` (the backbone's ImageNet weights, or timm's random init; the
decoder is new in both). Writes benchmarks/bench_segmentation.json and .md with test mean IoU, per-class IoU, pixel
accuracy and mean accuracy of both inits. Needs `make assets assets-vision`; run with HF_HUB_OFFLINE=1.

Usage: python scripts/bench_segmentation.py [--recipes R ...] [--runs-dir runs/bench-segmentation]
       [--out benchmarks/bench_segmentation.json] [--threads 1] [key=value overrides for every recipe ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import torch

from pipelines.compare import compare
from pipelines.config import load_recipe_config
from pipelines.run_folder import RESULTS_FILE

RECIPES = [
    Path("recipes/nuclei-upernet-efficientnet-lite0-offline.yaml"),
    Path("recipes/canvas-segmentation-upernet-efficientnet-lite0-offline.yaml"),
]
SCORES = ("mean_iou", "overall_accuracy", "mean_accuracy")


def bench(recipe: Path, overrides: list[str], runs_dir: Path) -> dict:
    config = load_recipe_config(recipe, overrides)
    started = time.perf_counter()
    report = compare(recipe, overrides, out_dir=runs_dir / config.name)
    rows = []
    for row in report.rows:
        results = json.loads((Path(row["run"]) / RESULTS_FILE).read_text())
        labels = config.data.labels or []
        rows.append(
            {
                "init": row["init"],
                "train_samples": row["train_samples"],
                **{name: results[f"test_{name}"] for name in SCORES},
                "iou": {label: results[f"test_iou_{label}"] for label in labels},
                "test_samples": results["test_samples"],
                "train_runtime_s": results["train_runtime"],
            }
        )
    return {
        "recipe": str(recipe),
        "overrides": overrides,
        "rows": rows,
        "warnings": report.warnings,
        "wall_time_s": time.perf_counter() - started,
    }


def markdown(results: list[dict], threads: int) -> str:
    lines = [
        "# Semantic segmentation: ImageNet-pretrained vs from-scratch EfficientNet-Lite0 under UperNet",
        "",
        f"`python scripts/bench_segmentation.py` on {platform.processor() or platform.machine()}, "
        f"{threads} torch thread(s); test split of each recipe, one seed.",
        "",
    ]
    for result in results:
        labels = list(result["rows"][0]["iou"])
        lines += [
            f"## {Path(result['recipe']).stem}",
            "",
            "| init | train images | mean IoU | "
            + " | ".join(f"IoU {label}" for label in labels)
            + " | pixel accuracy | mean accuracy | train s |",
            "|---" * (6 + len(labels)) + "|",
        ]
        for row in result["rows"]:
            lines.append(
                f"| {row['init']} | {row['train_samples']} | {row['mean_iou']:.4f} | "
                + " | ".join(f"{row['iou'][label]:.4f}" for label in labels)
                + f" | {row['overall_accuracy']:.4f} | {row['mean_accuracy']:.4f} | {row['train_runtime_s']:.0f} |"
            )
        by_init = {row["init"]: row["mean_iou"] for row in result["rows"]}
        gain = by_init["pretrained"] - by_init["scratch"]
        verdict = "beats" if gain > 0 else "does not beat"
        lines += ["", f"Pretrained {verdict} scratch by {gain:+.4f} mean IoU.", ""]
        lines += [f"Warning: {warning}" for warning in result["warnings"]]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipes", type=Path, nargs="+", default=RECIPES)
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/bench-segmentation"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/bench_segmentation.json"))
    # On a small CPU shared with other work, a multi-thread pool stalls at every op; one thread is steadier.
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides for every recipe")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    results = [bench(recipe, args.overrides, args.runs_dir) for recipe in args.recipes]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"threads": args.threads, "results": results}, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(results, args.threads))
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
