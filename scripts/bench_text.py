"""Dynamic padding vs padding every example to 128 tokens, on the offline sentiment recipe.

Same model (all-MiniLM-L6-v2), data, seed and max_length 128 for both; the only difference is
`data.pad_to_max_length`, as in the transformers text-classification example (`--pad_to_max_length`,
on by default there). Writes benchmarks/bench_text.json and benchmarks/bench_text.md.

Usage: HF_HUB_OFFLINE=1 python scripts/bench_text.py [--train-samples 1200] [--epochs 2]
(`make bench` prepares the offline assets and runs it.)
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import tempfile
from pathlib import Path

import torch

from pipelines import Recipe

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "sentiment-minilm-offline.yaml"
OUT_DIR = Path(__file__).resolve().parents[1] / "benchmarks"


def run(pad_to_max_length: bool, args: argparse.Namespace, scratch: Path) -> dict:
    overrides = [
        f"data.pad_to_max_length={str(pad_to_max_length).lower()}",
        "data.max_length=128",
        f"data.max_train_samples={args.train_samples}",
        f"data.max_test_samples={args.test_samples}",
        f"training.num_train_epochs={args.epochs}",
        "training.eval_strategy=no",
        "training.save_strategy=no",
        "training.disable_tqdm=true",
        f"output_dir={scratch / ('padded' if pad_to_max_length else 'dynamic')}",
    ]
    results = Recipe.from_yaml(RECIPE, overrides).run()
    return {
        key: results[key]
        for key in (
            "train_samples_per_second",
            "train_runtime",
            "test_samples_per_second",
            "test_accuracy",
            "test_f1_macro",
            "train_loss",
        )
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-samples", type=int, default=1200)
    parser.add_argument("--test-samples", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as scratch:
        dynamic = run(False, args, Path(scratch))
        padded = run(True, args, Path(scratch))
    report = {
        "setup": {
            "recipe": RECIPE.name,
            **vars(args),
            "torch_threads": torch.get_num_threads(),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, no GPU"
            if not torch.cuda.is_available()
            else torch.cuda.get_device_name(),
        },
        "dynamic_padding": dynamic,
        "pad_to_128": padded,
        "train_speedup": dynamic["train_samples_per_second"] / padded["train_samples_per_second"],
        "eval_speedup": dynamic["test_samples_per_second"] / padded["test_samples_per_second"],
        "accuracy_difference": dynamic["test_accuracy"] - padded["test_accuracy"],
    }
    OUT_DIR.mkdir(exist_ok=True)
    (OUT_DIR / "bench_text.json").write_text(json.dumps(report, indent=2) + "\n")
    rows = [("dynamic padding (multiple of 8)", dynamic), ("pad every example to 128", padded)]
    lines = ["| padding | train samples/s | eval samples/s | test accuracy | test F1 macro |", "|---|---|---|---|---|"]
    lines += [
        f"| {name} | {r['train_samples_per_second']:.1f} | {r['test_samples_per_second']:.1f} | "
        f"{r['test_accuracy']:.4f} | {r['test_f1_macro']:.4f} |"
        for name, r in rows
    ]
    lines.append(
        f"\nTrain speed-up {report['train_speedup']:.2f}x, eval speed-up {report['eval_speedup']:.2f}x "
        f"({report['setup']['machine']}; {args.train_samples} train samples x {args.epochs} epochs, "
        f"{args.test_samples} test samples)."
    )
    (OUT_DIR / "bench_text.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
