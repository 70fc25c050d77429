"""Few-shot transfer on real data: pretrained vs from-scratch EfficientNet-Lite0 on Fashion-MNIST.

Runs the offline image recipe through the Recipe API at 10 and 100 labelled images per class (class-balanced,
seeded subsets of data/fashion_mnist/train), once from the ImageNet weights and once from random weights
(`model.from_scratch`), everything else equal; each is scored on the recipe's test subset. Results go to a
JSON file and a markdown table on stdout. Needs `make assets` first; run with HF_HUB_OFFLINE=1.

With `--seeds 42 43 44` every cell runs once per seed (the seed draws the training subset too) and the summary
gives each cell's mean ± std with the paired bootstrap interval of pretrained minus scratch, as `hubtune compare
--seeds` does.

Usage: python scripts/fewshot_image.py [--recipe R] [--per-class 10 100] [--seeds 42 43 44] [--out F.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import random
from pathlib import Path

import torch

from pipelines import Recipe
from pipelines.runner.compare import summarise

RECIPE = Path("recipes/fashion-mnist-efficientnet-lite0-offline.yaml")
# Optimizer steps grow with the data; the small set gets more passes so both see a comparable number.
EPOCHS = {10: 15, 100: 3}
INIT_NAMES = {"ImageNet-pretrained": "pretrained", "from scratch": "scratch"}  # the rows' init -> compare's
METRICS = ("test_accuracy", "test_f1_macro")


def balanced_subset(train_dir: Path, per_class: int, target: Path, seed: int) -> Path:
    rng = random.Random(seed)
    with target.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "label"])
        for folder in sorted(d for d in train_dir.iterdir() if d.is_dir()):
            files = sorted(folder.glob("*.png"))
            for path in rng.sample(files, per_class):
                writer.writerow([str(path.resolve()), folder.name])
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", type=Path, default=RECIPE)
    parser.add_argument("--per-class", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/fewshot-image"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/image_fewshot.json"))
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default: the recipe's seed")
    # On a small CPU shared with other work, a multi-thread pool stalls at every op; one thread is faster.
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    base = Recipe.from_yaml(args.recipe).config
    rows = []
    seeds = args.seeds or [base.seed]
    for per_class, seed in ((per_class, seed) for per_class in args.per_class for seed in seeds):
        train = balanced_subset(
            Path(base.data.files["train"]), per_class, args.runs_dir / f"train_{per_class}_seed{seed}.csv", seed
        )
        for scratch in (False, True):
            name = f"{per_class}-per-class-{'scratch' if scratch else 'pretrained'}-seed{seed}"
            recipe = Recipe.from_yaml(
                args.recipe,
                overrides=[
                    f"seed={seed}",
                    f"name={name}",
                    f"output_dir={args.runs_dir / name}",
                    "overwrite=true",
                    f"data.files.train={train}",
                    "data.validation_fraction=null",
                    "data.max_train_samples=null",
                    'training.eval_strategy="no"',
                    f"training.num_train_epochs={EPOCHS.get(per_class, 5)}",
                    f"model.from_scratch={str(scratch).lower()}",
                ],
            )
            results = recipe.run()
            rows.append(
                {
                    "per_class": per_class,
                    "seed": seed,
                    "init": "from scratch" if scratch else "ImageNet-pretrained",
                    "train_samples": results["train_samples"],
                    "epochs": EPOCHS.get(per_class, 5),
                    "test_samples": results["test_samples"],
                    "test_accuracy": results["test_accuracy"],
                    "test_top_5_accuracy": results["test_top_5_accuracy"],
                    "test_f1_macro": results["test_f1_macro"],
                    "wall_time_s": results["wall_time_s"],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    setup = {
        "recipe": str(args.recipe),
        "torch_threads": torch.get_num_threads(),
        "checkpoint": base.model.checkpoint,
        "image_size": base.data.image_size,
        "adapt": base.adapt.strategy,
        "learning_rate": base.training["learning_rate"],
        "batch_size": base.training["per_device_train_batch_size"],
    }
    summary = {metric: summarise(comparable(rows), metric, seeds) for metric in METRICS}
    args.out.write_text(
        json.dumps(
            {
                "setup": setup,
                "seeds": seeds,
                "results": rows,
                "summary": {metric: [size.to_dict() for size in sizes] for metric, sizes in summary.items()},
            },
            indent=2,
        )
        + "\n"
    )
    per_class = {row["train_samples"]: row["per_class"] for row in rows}
    print(
        "| images per class | pretrained accuracy | scratch accuracy | gain (95% interval) | macro F1, pretrained / scratch |"
    )
    print("|---|---|---|---|---|")
    for accuracy, f1 in zip(*summary.values()):
        low, high = accuracy.gain_interval
        print(
            f"| {per_class[accuracy.train_samples]} | {accuracy.scores['pretrained']} | {accuracy.scores['scratch']} | "
            f"{accuracy.gain:+.3f} ({low:+.3f} to {high:+.3f}) | {f1.scores['pretrained'].mean:.3f} / "
            f"{f1.scores['scratch'].mean:.3f} |"
        )


def comparable(rows: list[dict]) -> list[dict]:
    """The rows as `hubtune compare` keeps them (`init` pretrained or scratch), for its summary over the seeds."""
    return [{**row, "init": INIT_NAMES[row["init"]]} for row in rows]


if __name__ == "__main__":
    main()
