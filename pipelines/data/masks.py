"""Segmentation masks: image + mask folder pairs, their up-front checks, and augmentation applied to both.

A mask is a single-channel image (PNG, mode L, P or I) the size of its image, holding a class id per pixel: the
index of a name in `data.labels`, or `data.ignore_index` for pixels left out of loss and metrics. Masks, like images,
stay undecoded in the datasets (`Image(decode=False)`) and are opened per batch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset, Features, Image
from PIL import Image as PILImage
from torchvision import tv_tensors
from torchvision.transforms import v2

from pipelines.data.images import describe, image_extensions, open_image, pixel_limit, verify_header
from pipelines.errors import HubtuneError

IMAGES_DIR, MASKS_DIR = "images", "masks"
# Modes whose pixels are one number each: grey levels, palette indices, 32-bit integers.
MASK_MODES = ("L", "P", "I", "I;16")


def _files_by_stem(folder: Path) -> dict[str, Path]:
    extensions = image_extensions()
    found: dict[str, Path] = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in extensions):
        if path.stem in found:
            raise HubtuneError(f"'{found[path.stem]}' and '{path}' share the name '{path.stem}': which one is meant?")
        found[path.stem] = path
    return found


def load_mask_folder(root: Path, image_column: str, mask_column: str) -> Dataset:
    """`root/images/<stem>.<ext>` paired with `root/masks/<stem>.<ext>` by file name (without extension)."""
    folders = {name: root / name for name in (IMAGES_DIR, MASKS_DIR)}
    for folder in folders.values():
        if not folder.is_dir():
            raise HubtuneError(
                f"segmentation folder '{root}' has no '{folder.name}' sub-folder; it needs "
                f"'{IMAGES_DIR}/<name>.png' and '{MASKS_DIR}/<name>.png' pairs"
            )
    images, masks = _files_by_stem(folders[IMAGES_DIR]), _files_by_stem(folders[MASKS_DIR])
    for stem, path in images.items():
        if stem not in masks:
            raise HubtuneError(f"image '{path}' has no mask: expected '{folders[MASKS_DIR] / stem}.png'")
    for stem, path in masks.items():
        if stem not in images:
            raise HubtuneError(f"mask '{path}' has no image of the same name in '{folders[IMAGES_DIR]}'")
    if not images:
        raise HubtuneError(f"segmentation folder '{root}' holds no images in '{folders[IMAGES_DIR]}'")
    features = Features({image_column: Image(decode=False), mask_column: Image(decode=False)})
    return Dataset.from_dict(
        {image_column: [str(images[s]) for s in images], mask_column: [str(masks[s]) for s in images]},
        features=features,
    )


def mask_name(value: dict[str, Any]) -> str:
    return f"mask '{value['path']}'" if value.get("path") else "embedded mask"


def read_mask(value: dict[str, Any], where: str) -> np.ndarray:
    """An undecoded mask value as a 2-D array of class ids; a file that does not decode, or has colour channels,
    is an error naming it. A mask has its image's size: its image's check names one with too many pixels."""
    name = mask_name(value)
    try:
        with open_image(value, where, name, warn_large=False) as mask, pixel_limit(where, name):
            if mask.mode not in MASK_MODES:
                raise HubtuneError(
                    f"{where}: {name} has mode {mask.mode}; a mask holds one "
                    f"class id per pixel (a single-channel PNG: mode {', '.join(MASK_MODES)})"
                )
            return np.array(mask)
    except (OSError, SyntaxError, ValueError) as error:
        raise HubtuneError(f"{where}: {name} cannot be decoded ({error})") from error


def check_pairs(
    dataset: Dataset,
    image_column: str,
    mask_column: str,
    classes: int,
    ignore_index: int,
    locate: Callable[[int], str],
    num_proc: int | None = None,
) -> set[int]:
    """Every row's image verifies, its mask decodes, has the image's size and holds only class ids below `classes`
    or `ignore_index`; `num_proc` processes share the rows (as `pipelines.data.images.check_images`). Returns the class
    ids the masks hold."""

    def check(batch: dict[str, list], positions: list[int]) -> dict[str, list]:
        found = []
        for image, mask, position in zip(batch[image_column], batch[mask_column], positions):
            where = locate(position)
            for value, column in ((image, image_column), (mask, mask_column)):
                if value is None:
                    raise HubtuneError(f"{where}: column '{column}' has no image")
            size = verify_header(image, where)
            ids = read_mask(mask, where)
            if ids.shape[::-1] != size:
                raise HubtuneError(
                    f"{where}: {mask_name(mask)} is {ids.shape[1]}x{ids.shape[0]} but {describe(image)} is "
                    f"{size[0]}x{size[1]}; a mask must have its image's size"
                )
            values = np.unique(ids)
            wrong = values[(values >= classes) & (values != ignore_index)]
            if len(wrong):
                raise HubtuneError(
                    f"{where}: {mask_name(mask)} holds the value {int(wrong[0])}, which is neither a class id of "
                    f"'data.labels' (0..{classes - 1}) nor 'data.ignore_index' ({ignore_index})"
                )
            found.append(values[values < classes].tolist())
        return {"class_ids": found}

    # Each row leaves only its list of class ids, in memory: the files are read again on every run (never a cached
    # result of an earlier check, since a file may have changed in place).
    checked = dataset.map(
        check,
        batched=True,
        with_indices=True,
        num_proc=num_proc,
        remove_columns=dataset.column_names,
        keep_in_memory=True,
        load_from_cache_file=False,
        desc="checking images and masks",
    )
    return {class_id for ids in checked["class_ids"] for class_id in ids}


def paired_augmentation(size: tuple[int, int]) -> Callable[[PILImage.Image, np.ndarray], tuple[Any, Any]]:
    """The same random scale, crop and horizontal flip of an image and its mask, at `size` (height, width).

    torchvision's v2 transforms move a `tv_tensors.Mask` with its image and resample it with nearest neighbours,
    so class ids are never blended; an image crop with a label map of another crop would teach noise.
    """
    transform = v2.Compose([v2.RandomResizedCrop(size, scale=(0.5, 1.0)), v2.RandomHorizontalFlip()])

    def augment(image: PILImage.Image, mask: np.ndarray) -> tuple[Any, Any]:
        pixels = tv_tensors.Image(torch.from_numpy(np.array(image)).permute(2, 0, 1))
        return transform(pixels, tv_tensors.Mask(torch.from_numpy(mask)))

    return augment
