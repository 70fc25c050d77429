"""A custom loss from Python: focal loss (Lin et al. 2017) against cross-entropy on an imbalanced training split.

The training file is cut down to an imbalanced one first: every example of the minority label but a fraction
(`--keep`) is left out. Two runs of the same recipe follow, one with the task's cross-entropy, one with
`Recipe.run(loss=focal_loss)`, which replaces the training loss; both are scored on the untouched (balanced) test
file. The run folder of the second records the loss as custom, not reproducible from the recipe alone.

Run it on a real checkpoint, with CSV files of columns `text,label`:

    python examples/focal_loss.py --checkpoint sentence-transformers/all-MiniLM-L6-v2 \\
        --train train.csv --validation validation.csv --test test.csv --minority positive --keep 0.05
"""

from __future__ import annotations

import argparse
import csv
import functools
import random
from pathlib import Path

import torch
import torch.nn.functional as F

from pipelines import Recipe


def focal_loss(logits: torch.Tensor, labels: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Cross-entropy scaled by (1 - p_true)^gamma: examples the model already gets right weigh little, so the
    few minority examples it gets wrong keep their weight."""
    log_p = F.log_softmax(logits.float(), dim=-1).gather(1, labels.view(-1, 1)).squeeze(1)
    return (-((1 - log_p.exp()) ** gamma) * log_p).mean()


def imbalanced_copy(source: str, target: Path, minority: str, keep: float, seed: int) -> int:
    """Write `source` to `target` keeping only a `keep` share of the `minority` rows; returns how many are kept."""
    rng = random.Random(seed)
    with open(source, newline="") as handle:
        reader = csv.DictReader(handle)
        fields = list(reader.fieldnames or [])
        rows = [row for row in reader if row["label"] != minority or rng.random() < keep]
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return sum(row["label"] == minority for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a Hub id or a local checkpoint folder")
    parser.add_argument("--train", required=True)
    parser.add_argument("--validation", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--labels", default="negative,positive", help="the label names, comma-separated")
    parser.add_argument("--minority", default="positive", help="the label made rare in training")
    parser.add_argument("--keep", type=float, default=0.1, help="the share of minority training rows kept")
    parser.add_argument("--gamma", type=float, default=2.0, help="focal loss's focusing parameter")
    parser.add_argument("--runs", type=Path, default=Path("runs/focal-loss"), help="where the run folders go")
    parser.add_argument("--max-length", type=int, default=128, help="tokens per text; longer texts are cut")
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    args = parser.parse_args()

    train = args.runs / "imbalanced_train.csv"
    kept = imbalanced_copy(args.train, train, args.minority, args.keep, seed=0)
    print(f"training split: {kept} '{args.minority}' examples kept")
    labels = args.labels.split(",")
    scores = {}
    losses = {"cross-entropy": None, f"focal (gamma={args.gamma})": functools.partial(focal_loss, gamma=args.gamma)}
    for name, loss in losses.items():
        recipe = Recipe.from_dict(
            {
                "name": "focal-loss",
                "output_dir": str(args.runs / ("focal" if loss else "cross-entropy")),
                "overwrite": True,
                "model": {"checkpoint": args.checkpoint},
                "data": {
                    "files": {"train": str(train), "validation": args.validation, "test": args.test},
                    "labels": labels,
                    "max_length": args.max_length,
                },
                "training": {
                    "num_train_epochs": args.epochs,
                    "learning_rate": args.learning_rate,
                    "save_strategy": "no",
                },
            }
        )
        scores[name] = recipe.run(loss=loss)  # None: the task's own loss

    print(f"| training loss | test accuracy | test F1 macro | test recall of '{args.minority}' |")
    print("|---|---:|---:|---:|")
    for name, result in scores.items():
        recall = result[f"test_recall_{args.minority}"]
        print(f"| {name} | {result['test_accuracy']:.4f} | {result['test_f1_macro']:.4f} | {recall:.4f} |")


if __name__ == "__main__":
    main()
