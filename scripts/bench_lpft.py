"""LP vs FT vs LP-FT where the test data shifts: in-distribution and shifted test accuracy over seeds.

Kumar et al. (ICLR 2022) argue that fine-tuning with a random head distorts the pretrained features, so full
fine-tuning (FT) can lose to a linear probe (LP) out of distribution, and that LP-FT (probe first, then fine-tune
from the probed head) keeps the best of both. This measures the three through hubtune's own strategies
(`freeze_backbone`, `full`, `lp_ft`) on the offline ImageNet-pretrained EfficientNet-Lite0:

- Fashion-MNIST (Debian `dataset-fashion-mnist`) and scikit-learn's 8x8 digits, trained on upright images only;
- scored on held-out upright images (in distribution) and on the same held-out images shifted: rotated 90°,
  rotated 180°, and with their intensities inverted (light objects on dark become dark on light).

Every strategy gets the same number of passes over the training data: LP and FT train `--epochs` epochs, LP-FT
probes `--probe-epochs` and fine-tunes the rest. Training augmentation is off, so no training image shows a shift.
`ft_bn_eval` and `lp_ft_bn_eval` repeat FT and LP-FT with BatchNorm held in eval mode while fine-tuning, to tell
the effect of the probed head from that of BatchNorm switching to batch statistics when fine-tuning starts.
The audio shift (unseen voices) is not here: fully fine-tuning Whisper's encoder on 30 s padded clips takes hours
on a small CPU.
Writes benchmarks/bench_lpft.json and .md. Needs the offline Lite0 (`make assets-image`); run with
HF_HUB_OFFLINE=1. One torch thread (`--threads`): the CPU is shared.

Usage: python scripts/bench_lpft.py [--datasets fashion_mnist digits] [--seeds 42 43 44] [--epochs 10]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from prepare_image_assets import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, read_idx  # noqa: E402 (a sibling script)

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "fashion-mnist-efficientnet-lite0-offline.yaml"
DIGIT_CLASSES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
# The shifts each held-out image is scored under (uint8 HxW -> uint8 HxW). None of them is in training.
SHIFTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "rotated_90": lambda image: np.rot90(image, 1),
    "rotated_180": lambda image: np.rot90(image, 2),
    "inverted": lambda image: 255 - image,
}
STRATEGIES = ("lp", "ft", "lp_ft")
# A diagnostic pair: FT and LP-FT with every BatchNorm layer held in eval mode while
# fine-tuning, so the normalisation the probed head was fitted under does not change when fine-tuning starts.
BN_EVAL = "_bn_eval"
VARIANTS = (*STRATEGIES, f"ft{BN_EVAL}", f"lp_ft{BN_EVAL}")


def fashion_mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Fashion-MNIST's own train and test sets (28x28, light garments on black)."""
    if not FASHION_MNIST_DIR.is_dir():
        raise SystemExit(f"bench_lpft: {FASHION_MNIST_DIR} is missing; run `make assets-image`")
    pieces = [
        read_idx(FASHION_MNIST_DIR / f"{prefix}-{kind}-idx{dims}-ubyte.gz")
        for prefix in ("train", "t10k")
        for kind, dims in (("images", 3), ("labels", 1))
    ]
    return (*pieces, FASHION_MNIST_CLASSES)  # type: ignore[return-value]


def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """scikit-learn's 1,797 8x8 digits (0..16, light strokes on black) as uint8, split in half by a fixed seed."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images * (255 / 16)).round().astype(np.uint8)
    order = np.random.default_rng(0).permutation(len(images))
    half = len(order) // 2
    train, test = order[:half], order[half:]
    return images[train], bunch.target[train], images[test], bunch.target[test], DIGIT_CLASSES


SOURCES = {"fashion_mnist": fashion_mnist, "digits": digits}


def balanced(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    classes = np.unique(labels)
    return np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in classes])


def write_folder(folder: Path, images: np.ndarray, labels: np.ndarray, classes: list[str]) -> Path:
    """One PNG per image in a sub-folder per class: the image-folder layout the image recipes read."""
    from PIL import Image

    for index, (image, label) in enumerate(zip(images, labels)):
        target = folder / classes[label] / f"{index:05d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(image), mode="L").save(target)
    return folder


def make_data(source: str, root: Path, train_per_class: int, test_per_class: int, seed: int = 0) -> dict[str, Path]:
    """`train` (upright), `id` (held-out upright) and one folder per shift of the same held-out images."""
    train_x, train_y, test_x, test_y, classes = SOURCES[source]()
    rng = np.random.default_rng(seed)
    train, test = balanced(train_y, train_per_class, rng), balanced(test_y, test_per_class, rng)
    folders = {
        "train": write_folder(root / "train", train_x[train], train_y[train], classes),
        "id": write_folder(root / "id", test_x[test], test_y[test], classes),
    }
    for name, shift in SHIFTS.items():
        shifted = np.stack([shift(image) for image in test_x[test]])
        folders[name] = write_folder(root / name, shifted, test_y[test], classes)
    return folders


def overrides(strategy: str, seed: int, data: dict[str, Path], out: Path, args: argparse.Namespace) -> list[str]:
    """The recipe overrides of one run: the same passes over the data for every strategy; a `+bn_eval` strategy
    holds every BatchNorm layer's running statistics while it trains (`adapt.hold_batchnorm_statistics`)."""
    base, bn_eval = strategy.removesuffix(BN_EVAL), strategy.endswith(BN_EVAL)
    strategy = base
    common = [
        f"seed={seed}",
        f"output_dir={out}",
        "overwrite=true",
        f"model.checkpoint={args.checkpoint}",
        f"data.files.train={data['train']}",
        f"data.files.test={data['id']}",
        "data.validation_split=null",
        "data.validation_fraction=null",
        "data.max_train_samples=null",
        "data.max_eval_samples=null",
        "data.max_test_samples=null",
        f"data.image_size={args.image_size}",
        "data.image_augment=false",
        'training.eval_strategy="no"',
        "training.disable_tqdm=true",
        "training.logging_steps=1000",
        f"training.per_device_train_batch_size={args.batch_size}",
        f"adapt.hold_batchnorm_statistics={str(bn_eval).lower()}",
    ]
    if strategy == "lp":
        return [
            *common,
            "adapt.strategy=freeze_backbone",
            f"training.learning_rate={args.lp_lr}",
            f"training.num_train_epochs={args.epochs}",
        ]
    if strategy == "ft":
        return [
            *common,
            "adapt.strategy=full",
            f"training.learning_rate={args.ft_lr}",
            f"training.num_train_epochs={args.epochs}",
        ]
    return [
        *common,
        "adapt.strategy=lp_ft",
        f"adapt.lp_ft.probe_epochs={args.probe_epochs}",
        f"adapt.lp_ft.probe_learning_rate={args.lp_lr}",
        f"training.learning_rate={args.ft_lr}",
        f"training.num_train_epochs={args.epochs - args.probe_epochs}",
    ]


def one_run(strategy: str, seed: int, data: dict[str, Path], out: Path, args: argparse.Namespace) -> dict:
    """Train one strategy at one seed; its in-distribution accuracy and its accuracy under each shift."""
    from pipelines import Predictor, Recipe

    started = time.perf_counter()
    results = Recipe.from_yaml(RECIPE, overrides(strategy, seed, data, out, args)).run()
    trained = time.perf_counter() - started
    predictor = Predictor(out)
    shifted = {name: predictor.evaluate(data_file=data[name])["data_accuracy"] for name in SHIFTS}
    # LP-FT's fine-tuning stage reports its own loss; the probe's is `probe_train_loss`.
    losses = {key: results[key] for key in ("probe_train_loss", "train_loss") if key in results}
    return {"id": results["test_accuracy"], **shifted, "train_s": trained, **losses}


def spread(values: list[float]) -> dict:
    return {
        "seeds": values,
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


def summarise(runs: dict[str, dict[str, list[dict]]], seeds: list[int]) -> dict:
    """dataset -> runs by strategy  ==>  '<dataset>_<shift>' -> strategy -> {id_accuracy, ood_accuracy, seconds}."""
    shifts = {}
    for dataset, by_strategy in runs.items():
        for shift in SHIFTS:
            shifts[f"{dataset}_{shift}"] = {
                "dataset": dataset,
                "shift": shift,
                "seeds": seeds,
                **{
                    strategy: {
                        "id_accuracy": spread([run["id"] for run in rows]),
                        "ood_accuracy": spread([run[shift] for run in rows]),
                        "seconds": spread([run["train_s"] for run in rows]),
                        "runs": rows,
                    }
                    for strategy, rows in by_strategy.items()
                },
            }
    return shifts


def markdown(report: dict) -> str:
    setup = report["setup"]
    lines = [
        "# LP vs FT vs LP-FT under distribution shift",
        "",
        f"EfficientNet-Lite0 (ImageNet), {setup['image_size']}x{setup['image_size']} inputs, trained on upright "
        f"images only; {setup['epochs']} epochs for every strategy (LP-FT: {setup['probe_epochs']} probe + "
        f"{setup['epochs'] - setup['probe_epochs']} fine-tuning), LP lr {setup['lp_lr']}, FT lr {setup['ft_lr']}, "
        f"batch {setup['batch_size']}, seeds {setup['seeds']}, {setup['torch_threads']} torch thread(s). "
        "Accuracy, mean ± std over seeds; per-seed values in bench_lpft.json. The three shifts of one dataset "
        "score the same trained models, so their ID column repeats. Run s: the wall time of one training run "
        "(loading, training, scoring the ID test), on a CPU shared with other jobs.",
        "",
        "| dataset | shift | strategy | ID accuracy | shifted accuracy | run s |",
        "|---|---|---|---|---|---|",
    ]
    for entry in report["shifts"].values():
        for strategy in VARIANTS:
            if strategy not in entry:
                continue
            row = entry[strategy]
            lines.append(
                f"| {entry['dataset']} | {entry['shift']} | {strategy} | "
                f"{row['id_accuracy']['mean']:.3f} ± {row['id_accuracy']['std']:.3f} | "
                f"{row['ood_accuracy']['mean']:.3f} ± {row['ood_accuracy']['std']:.3f} | "
                f"{row['seconds']['mean']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", choices=sorted(SOURCES), default=["fashion_mnist", "digits"])
    parser.add_argument("--strategies", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    parser.add_argument("--train-per-class", type=int, default=40)
    parser.add_argument("--test-per-class", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--probe-epochs", type=int, default=3)
    parser.add_argument("--lp-lr", type=float, default=1e-2)
    parser.add_argument("--ft-lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--checkpoint", default="timm/tf_efficientnet_lite0.in1k")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "bench_lpft.json")
    args = parser.parse_args(argv)
    if not 0 < args.probe_epochs < args.epochs:
        parser.error("--probe-epochs must lie between 0 and --epochs")
    import torch

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    runs: dict[str, dict[str, list[dict]]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for dataset in args.datasets:
            data = make_data(dataset, Path(scratch) / dataset, args.train_per_class, args.test_per_class)
            runs[dataset] = {strategy: [] for strategy in args.strategies}
            for seed in args.seeds:
                for strategy in args.strategies:
                    out = Path(scratch) / "runs" / f"{dataset}-{strategy}-{seed}"
                    runs[dataset][strategy].append(one_run(strategy, seed, data, out, args))
                    row = {"dataset": dataset, "strategy": strategy, "seed": seed, **runs[dataset][strategy][-1]}
                    print(json.dumps(row), flush=True)
    setup = {key: value for key, value in vars(args).items() if key != "out"}
    report = {
        "setup": {
            **setup,
            "torch_threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "cuda": torch.cuda.is_available(),
        },
        "shifts": summarise(runs, args.seeds),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
