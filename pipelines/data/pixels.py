"""Images -> pixel batches through a checkpoint's own processor (transformers' image processors and timm's
transforms alike), with train-time augmentation and an optional square size that overrides the checkpoint's."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torchvision import transforms


def is_timm_processor(processor: Any) -> bool:
    return hasattr(processor, "train_transforms") and hasattr(processor, "val_transforms")


def _crop_size(processor: Any) -> int | tuple[int, int]:
    size = getattr(processor, "crop_size", None) or processor.size
    if "height" in size:
        return size["height"], size["width"]
    return size["shortest_edge"]


def size_overrides(processor: Any, side: int | None) -> dict[str, Any]:
    """Keyword arguments that make a transformers image processor produce `side` x `side` inputs."""
    if side is None:
        return {}
    square = {"height": side, "width": side}
    overrides = {"size": square if "height" in processor.size else {"shortest_edge": side}}
    if getattr(processor, "crop_size", None):
        overrides["crop_size"] = square
    return overrides


def sized_processor(processor: Any, side: int | None) -> Any:
    """The processor as `pixel_transform` uses it at evaluation with `side`: a transformers image processor copied
    with `size_overrides` as its own settings, so that it preprocesses alike when saved and loaded alone. A timm
    processor comes back as it is: its settings live in the model's config (`size_timm_config`)."""
    if side is None or is_timm_processor(processor):
        return processor
    sized = copy.deepcopy(processor)
    for name, value in size_overrides(processor, side).items():
        setattr(sized, name, value)
    return sized


def size_timm_config(config: Any, side: int | None) -> None:
    """A timm model's config set, in place, for `side` x `side` inputs: transformers'
    `TimmWrapperImageProcessor` reads its preprocessing from the config's `pretrained_cfg`, in config.json."""
    if side is not None and getattr(config, "pretrained_cfg", None) is not None:
        config.pretrained_cfg = {**config.pretrained_cfg, "input_size": [3, side, side]}


def pixel_transform(processor: Any, train: bool, side: int | None = None) -> Callable[[list], torch.Tensor]:
    """PIL images -> a pixel_values batch, with train-time augmentation when `train`; `side` overrides the size."""
    if is_timm_processor(processor):
        if side is None:
            transform = processor.train_transforms if train else processor.val_transforms
        else:
            from timm.data import (
                create_transform,  # timm only when a timm model is in use
            )

            transform = create_transform(**{**processor.data_config, "input_size": (3, side, side)}, is_training=train)
        return lambda images: torch.stack([transform(image) for image in images])
    overrides = size_overrides(processor, side)
    if not train:
        return lambda images: processor(images, return_tensors="pt", **overrides)["pixel_values"]
    # The augmentation of transformers' run_image_classification example; the checkpoint's own processor
    # then resizes and normalises as at evaluation.
    augment = transforms.Compose(
        [transforms.RandomResizedCrop(side or _crop_size(processor)), transforms.RandomHorizontalFlip()]
    )
    return lambda images: processor([augment(image) for image in images], return_tensors="pt", **overrides)[
        "pixel_values"
    ]
