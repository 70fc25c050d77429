"""The labelled image sets of scripts/bench_rank.py, written as PNG files from what ships offline.

- Fashion-MNIST (Debian `dataset-fashion-mnist`): a class-balanced subset of its training set, one of its test set.
- scikit-learn's 1,797 8x8 digits: split class-balanced, no image in both.
- Photo patches: which of 9 offline photos (scikit-learn's two samples, deepforest's aerial tree images, stardist's
  histology image) a 64x64 crop comes from; training crops from each photo's left 60%, test crops from its right 40%.

Each maker returns {"train": [(path, label), ...], "test": [...]} in a seeded random order.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from prepare_image_assets import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, read_idx  # noqa: E402 (a sibling script)

PATCH = 64  # photo-patch side, pixels


def _save(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        Image.fromarray(image).save(path)


def _balanced(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    return np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)])


def fashion_mnist(folder: Path, train_per_class: int, test_per_class: int, seed: int) -> dict[str, list[tuple]]:
    """Fashion-MNIST garments: a class-balanced training subset of its training set, a test subset of its test set."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list[tuple]] = {}
    for split, prefix, per_class in (("train", "train", train_per_class), ("test", "t10k", test_per_class)):
        images = read_idx(FASHION_MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(FASHION_MNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz")
        rows[split] = []
        for index in _balanced(labels, per_class, rng):
            path = folder / split / f"{index:05d}.png"
            _save(images[index], path)
            rows[split].append((path, FASHION_MNIST_CLASSES[labels[index]]))
    return rows


def digits(folder: Path, train_per_class: int, test_per_class: int, seed: int) -> dict[str, list[tuple]]:
    """scikit-learn's 1,797 8x8 handwritten digits (16 grey levels), split class-balanced without overlap."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images * (255 / 16)).round().astype(np.uint8)
    chosen = _balanced(bunch.target, train_per_class + test_per_class, np.random.default_rng(seed))
    rows: dict[str, list[tuple]] = {"train": [], "test": []}
    seen: dict[int, int] = {}
    for index in chosen:
        label = int(bunch.target[index])
        seen[label] = seen.get(label, 0) + 1
        split = "train" if seen[label] <= train_per_class else "test"
        path = folder / f"{index:04d}.png"
        _save(images[index], path)
        rows[split].append((path, f"digit_{label}"))  # names: plain ids read as label ids
    return rows


def _photos() -> dict[str, Path]:
    """The offline photos: scikit-learn's two samples, deepforest's aerial tree images, stardist's histology."""
    import importlib.util

    def package(name: str) -> Path:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            sys.exit(f"bench_rank: package '{name}' is missing; run `make install`")
        return Path(list(spec.submodule_search_locations)[0])

    forest = package("deepforest") / "data"
    return {
        "china": package("sklearn") / "datasets/images/china.jpg",
        "flower": package("sklearn") / "datasets/images/flower.jpg",
        "histology": package("stardist") / "data/images/histo.jpg",
        "yell_a": forest / "2019_YELL_2_528000_4978000_image_crop2.png",
        "yell_b": forest / "2019_YELL_2_541000_4977000_image_crop.png",
        "osbs": forest / "OSBS_029.png",
        "soap_031": forest / "SOAP_031.png",
        "soap_061": forest / "SOAP_061.png",
        "lake": forest / "AWPE Pigeon Lake 2020 DJI_0005.JPG",
    }


def photo_patches(folder: Path, train_per_class: int, test_per_class: int, seed: int) -> dict[str, list[tuple]]:
    """Which photo a 64x64 crop comes from: training crops from the left 60% of each photo, test crops from the
    right 40%, so no test pixel was seen in training."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    rows: dict[str, list[tuple]] = {"train": [], "test": []}
    for label, source in _photos().items():
        with Image.open(source) as opened:
            photo = np.asarray(opened.convert("RGB"))
        height, width = photo.shape[:2]
        cut = int(width * 0.6)
        for split, (low, high), count in (
            ("train", (0, cut - PATCH), train_per_class),
            ("test", (cut, width - PATCH), test_per_class),
        ):
            for n in range(count):
                top, left = int(rng.integers(0, height - PATCH)), int(rng.integers(low, high))
                path = folder / split / label / f"{n:03d}.png"
                _save(photo[top : top + PATCH, left : left + PATCH], path)
                rows[split].append((path, label))
    return rows


DATASETS: dict[str, Callable[[Path, int, int, int], dict[str, list[tuple]]]] = {
    "fashion-mnist": fashion_mnist,
    "digits": digits,
    "photo-patches": photo_patches,
}


def write_csv(rows: list[tuple], target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "label"])
        writer.writerows((str(Path(path).resolve()), label) for path, label in rows)
    return target


def subset(rows: list[tuple], per_class: int) -> list[tuple]:
    """The first `per_class` rows of each label (the rows are already in a seeded random order)."""
    counts: dict[str, int] = {}
    kept = []
    for path, label in rows:
        counts[label] = counts.get(label, 0) + 1
        if counts[label] <= per_class:
            kept.append((path, label))
    return kept
