"""Layer-wise linear probing: how much of a text classification task each layer of a frozen encoder already holds.

For each depth L, the encoder is cut after its L-th layer (`model.config_overrides.num_hidden_layers=L`: the
checkpoint's first L layers load, the rest are left out), frozen (`adapt.strategy=freeze_backbone`), and a new
linear head trains on top. The test accuracy per depth is printed and plotted to a PNG.

Run it on a real checkpoint whose config counts its layers in `num_hidden_layers` (BERT, RoBERTa, MiniLM, DeBERTa,
...), with CSV files of columns `text,label`:

    python examples/layer_probe.py --checkpoint sentence-transformers/all-MiniLM-L6-v2 \\
        --train train.csv --validation validation.csv --test test.csv --out layer_probe.png

Every depth is a run folder under `--runs` (default runs/layer-probe/layer-L), servable with `hubtune predict`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from matplotlib.figure import Figure
from transformers import AutoConfig

from pipelines import Recipe


def probe_layer(args: argparse.Namespace, layer: int) -> float:
    """Test accuracy of a linear head on the frozen encoder cut after `layer` layers."""
    recipe = Recipe.from_dict(
        {
            "name": f"layer-{layer}",
            "output_dir": str(args.runs / f"layer-{layer}"),
            "overwrite": True,
            "model": {"checkpoint": args.checkpoint, "config_overrides": {"num_hidden_layers": layer}},
            "data": {
                "files": {"train": args.train, "validation": args.validation, "test": args.test},
                "max_length": args.max_length,
            },
            "adapt": {"strategy": "freeze_backbone"},
            "training": {
                "num_train_epochs": args.epochs,
                "learning_rate": args.learning_rate,
                "save_strategy": "no",
            },
        }
    )
    return float(recipe.run()["test_accuracy"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a Hub id or a local checkpoint folder")
    parser.add_argument("--train", required=True)
    parser.add_argument("--validation", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--out", type=Path, default=Path("layer_probe.png"), help="the plot's PNG file")
    parser.add_argument("--runs", type=Path, default=Path("runs/layer-probe"), help="where the run folders go")
    parser.add_argument("--max-length", type=int, default=128, help="tokens per text; longer texts are cut")
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="a probe's head takes a high one")
    args = parser.parse_args()

    layers = range(1, AutoConfig.from_pretrained(args.checkpoint).num_hidden_layers + 1)
    accuracy = {layer: probe_layer(args, layer) for layer in layers}
    print("layer\ttest_accuracy")
    for layer, score in accuracy.items():
        print(f"{layer}\t{score:.4f}")

    figure = Figure(figsize=(6, 4))
    axis = figure.subplots()
    axis.plot(list(accuracy), list(accuracy.values()), marker="o")
    axis.set(xlabel="encoder layers kept", ylabel="test accuracy", title=f"Linear probe per layer: {args.checkpoint}")
    axis.set_xticks(list(accuracy))
    figure.tight_layout()
    figure.savefig(args.out, dpi=100)
    print(f"plot -> {args.out}")


if __name__ == "__main__":
    main()
