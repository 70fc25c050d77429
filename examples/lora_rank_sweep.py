"""A LoRA rank sweep: test accuracy and trainable parameters of one recipe at several adapter ranks, as a table.

Each rank is one run of the same recipe with `adapt.strategy=peft`, `adapt.peft.r=R` and `adapt.peft.alpha=2R`
(the update's scale alpha / r stays the same, so only the rank changes). The run folders hold the adapters,
servable with `hubtune predict`.

Run it on a real checkpoint and recipe (any task; the metric is the recipe task's test metric):

    python examples/lora_rank_sweep.py recipes/sentiment-minilm-offline.yaml --ranks 1,4,16,64 \\
        training.num_train_epochs=1

Trailing `key=value` arguments override the recipe, as on `hubtune train`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines import Recipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe", help="a recipe YAML")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides of the recipe")
    parser.add_argument("--ranks", default="2,4,8,16", help="comma-separated LoRA ranks")
    parser.add_argument("--metric", default="test_accuracy", help="the result to compare (default test_accuracy)")
    parser.add_argument("--runs", type=Path, default=Path("runs/lora-sweep"), help="where the run folders go")
    args = parser.parse_args()

    rows = []
    for rank in (int(rank) for rank in args.ranks.split(",")):
        result = Recipe.from_yaml(
            args.recipe,
            [
                *args.overrides,
                "adapt.strategy=peft",
                f"adapt.peft.r={rank}",
                f"adapt.peft.alpha={2 * rank}",
                f"output_dir={args.runs / f'rank-{rank}'}",
                "overwrite=true",
            ],
        ).run()
        rows.append((rank, result["trainable_parameters"], result["trainable_share"], result[args.metric]))

    print(f"| rank | trainable parameters | share of the model | {args.metric} |")
    print("|---:|---:|---:|---:|")
    for rank, trainable, share, score in rows:
        print(f"| {rank} | {trainable:,} | {share:.2%} | {score:.4f} |")


if __name__ == "__main__":
    main()
