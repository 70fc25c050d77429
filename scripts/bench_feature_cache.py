"""Frozen-backbone head training with and without the feature cache, on the offline sentiment recipe.

Same model (all-MiniLM-L6-v2, frozen), data, seed and 10 epochs; the cached run computes the backbone's
features once (eval mode) and trains the head on them. Writes benchmarks/bench_feature_cache.json and .md.

Usage: HF_HUB_OFFLINE=1 python scripts/bench_feature_cache.py [--train-samples 1000] [--epochs 10]
(`make bench` prepares the offline assets and runs it.)
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import torch

from pipelines import Recipe

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "sentiment-minilm-offline.yaml"
OUT_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
KEYS = ("train_runtime", "train_loss", "test_accuracy", "test_f1_macro", "test_loss", "wall_time_s")


def run(cached: bool, args: argparse.Namespace, scratch: Path) -> dict:
    overrides = [
        "adapt.strategy=freeze_backbone",
        f"adapt.feature_cache={str(cached).lower()}",
        f"adapt.feature_cache_dir={scratch / 'features'}",
        f"data.max_train_samples={args.train_samples}",
        f"data.max_test_samples={args.test_samples}",
        "data.max_eval_samples=100",
        f"training.num_train_epochs={args.epochs}",
        "training.learning_rate=3e-2",
        "training.eval_strategy=no",
        "training.save_strategy=no",
        "training.disable_tqdm=true",
        f"output_dir={scratch / ('cached' if cached else 'uncached')}",
    ]
    started = time.perf_counter()
    results = Recipe.from_yaml(RECIPE, overrides).run()
    return {**{key: results[key] for key in KEYS}, "total_s": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-samples", type=int, default=1000)
    parser.add_argument("--test-samples", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as scratch:
        uncached = run(False, args, Path(scratch))
        cached = run(True, args, Path(scratch))
    report = {
        "setup": {
            "recipe": RECIPE.name,
            **vars(args),
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(),
        },
        "uncached": uncached,
        "cached": cached,
        "speedup_total": uncached["total_s"] / cached["total_s"],
        "speedup_train": uncached["train_runtime"] / cached["train_runtime"],
    }
    OUT_DIR.mkdir(exist_ok=True)
    (OUT_DIR / "bench_feature_cache.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["| route | whole run (s) | train loop (s) | test accuracy | test loss |", "|---|---|---|---|---|"]
    lines += [
        f"| {name} | {r['total_s']:.1f} | {r['train_runtime']:.1f} | {r['test_accuracy']:.4f} | {r['test_loss']:.4f} |"
        for name, r in (("uncached", uncached), ("feature cache", cached))
    ]
    lines.append(
        f"\nWhole run {report['speedup_total']:.1f}x faster with the cache (the cached run includes "
        f"computing the features once); {args.train_samples} train samples x {args.epochs} epochs, "
        f"{args.test_samples} test samples."
    )
    (OUT_DIR / "bench_feature_cache.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
