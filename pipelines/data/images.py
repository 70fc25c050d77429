"""Image files for image classification: class-per-folder trees, path columns, and decoding checks.

Images stay undecoded in the datasets (`Image(decode=False)`: a path or bytes) and are opened per batch, so
a large set never sits decoded in memory. Before training every file's header is read and its structure
verified (no pixels decoded, in parallel with `data.preprocessing_num_workers`), so an unreadable or cut-off
file is reported by its path up front instead of failing an epoch half way; so is one over PIL's decompression-bomb
limit (`pixel_limit`).
"""

from __future__ import annotations

import io
import logging
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from datasets import ClassLabel, Dataset, Features, Image
from PIL import Image as PILImage

from pipelines.errors import HubtuneError, path_kind, require_path

logger = logging.getLogger(__name__)

WHITE = (255, 255, 255, 255)
BOMB_MESSAGE = re.compile(r"\((\d+) pixels\) exceeds limit of (\d+)")  # PIL's DecompressionBombError
RGB_BYTES = 3


def image_extensions() -> set[str]:
    return {ext for ext, fmt in PILImage.registered_extensions().items() if fmt in PILImage.OPEN}


def load_image_folder(root: Path, image_column: str, label_column: str) -> Dataset:
    """One sub-folder per class (its name is the label), images anywhere below it.

    Written here rather than with datasets' `imagefolder` builder, which infers splits from folder names
    (`train/`, `test/`) and silently drops the labels of a single-class tree; here both are errors.
    """
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(classes) < 2:
        raise HubtuneError(
            f"image folder '{root}' has {len(classes)} class sub-folder(s) {classes}; an image folder needs one "
            "sub-folder per class, at least two"
        )
    extensions = image_extensions()
    paths: list[str] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        files = sorted(p for p in (root / name).rglob("*") if p.is_file() and p.suffix.lower() in extensions)
        if not files:
            raise HubtuneError(f"image folder '{root}': class folder '{name}' holds no image files")
        paths += [str(p) for p in files]
        labels += [index] * len(files)
    features = Features({image_column: Image(decode=False), label_column: ClassLabel(names=classes)})
    return Dataset.from_dict({image_column: paths, label_column: labels}, features=features)


def resolve_image_paths(dataset: Dataset, column: str, table: Path) -> Dataset:
    """A csv/jsonl column of image paths (relative to the table's folder) as an undecoded Image column."""
    if column not in dataset.column_names or isinstance(dataset.features[column], Image):
        return dataset
    paths = []
    for row, value in enumerate(dataset[column]):
        if not isinstance(value, str) or not value:
            raise HubtuneError(
                f"data file '{table}', row {row + 1}: column '{column}' holds {value!r}, not an image path"
            )
        path = (table.parent / value).expanduser().resolve()
        found = path_kind(path)
        if found != "file":
            what = "does not exist" if found is None else f"is a {found}, not an image file"
            raise HubtuneError(f"data file '{table}', row {row + 1}: image '{value}' {what} (looked for '{path}')")
        paths.append(str(path))
    return dataset.remove_columns(column).add_column(column, paths).cast_column(column, Image(decode=False))


def undecoded(dataset: Dataset, column: str, source: str, key: str = "data.image_column") -> Dataset:
    """The image column (recipe key `key`) as `Image(decode=False)`; any other column type is an error naming it."""
    feature = dataset.features[column]
    if not isinstance(feature, Image):
        raise HubtuneError(f"{source}: column '{column}' (recipe key '{key}') holds {feature}, not images")
    return dataset.cast_column(column, Image(decode=False)) if feature.decode else dataset


def describe(value: dict[str, Any]) -> str:
    return f"image '{value['path']}'" if value.get("path") else "embedded image"


@contextmanager
def pixel_limit(where: str, name: str) -> Iterator[None]:
    """PIL's decompression-bomb limit as one line: an image of more than twice `Image.MAX_IMAGE_PIXELS`, which PIL
    refuses to open or decode, is `where`: <name> has N pixels, more than the limit. PIL's warning for one between
    `MAX_IMAGE_PIXELS` and twice that is silenced: such an image is used, and `warn_if_large` names it instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
        try:
            yield
        except PILImage.DecompressionBombError as error:
            found = BOMB_MESSAGE.search(str(error))
            size = (
                f"{int(found[1]):,} pixels, more than the {int(found[2]):,} that PIL decodes"
                if found
                else f"more pixels than PIL decodes ({error})"
            )
            raise HubtuneError(
                f"{where}: {name} has {size} (twice PIL.Image.MAX_IMAGE_PIXELS: it refuses larger "
                "images as possible decompression bombs); resize it to fewer pixels, the model sees it at its own "
                "input size"
            ) from error


def warn_if_large(image: PILImage.Image, where: str, name: str) -> None:
    """Log an image between PIL's two decompression-bomb limits (`Image.MAX_IMAGE_PIXELS` and twice that): it is
    used, but decoded whole at every read."""
    pixels, limit = image.width * image.height, PILImage.MAX_IMAGE_PIXELS
    if limit is not None and pixels > limit:
        logger.warning(
            "%s: %s has %s pixels, more than PIL.Image.MAX_IMAGE_PIXELS (%s): it is used, but each read decodes it "
            "whole (%.1f GB as RGB) before it is resized",
            where,
            name,
            f"{pixels:,}",
            f"{limit:,}",
            pixels * RGB_BYTES / 1e9,
        )


def open_image(value: dict[str, Any], where: str, name: str | None = None, warn_large: bool = True) -> PILImage.Image:
    """PIL's lazy open of an undecoded image value (its header read, no pixel decoded), under `pixel_limit`;
    `warn_large` logs an image between the limits (`warn_if_large`)."""
    name = name or describe(value)
    with pixel_limit(where, name):
        image = PILImage.open(io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"])
    if warn_large:
        warn_if_large(image, where, name)
    return image


def open_rgb(value: dict[str, Any], where: str, warn_large: bool = False) -> PILImage.Image:
    """Decode one undecoded image value; grayscale, palette and alpha images become RGB."""
    image = open_image(value, where, warn_large=warn_large)
    with pixel_limit(where, describe(value)):  # some formats (GIF frames, TIFF tiles) are checked as they decode
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            # Transparent pixels keep arbitrary colour values; over white they look as they do on screen.
            image = PILImage.alpha_composite(PILImage.new("RGBA", image.size, WHITE), image.convert("RGBA"))
        return image.convert("RGB")


def decode_checked(value: dict[str, Any], where: str, warn_large: bool = False) -> PILImage.Image:
    """`open_rgb`, with a file that does not decode reported as `where`: <image> cannot be decoded. Training data
    had its large images named when its headers were read (`check_images`): `warn_large` is for other inputs."""
    try:
        return open_rgb(value, where, warn_large)
    except (OSError, SyntaxError, ValueError) as error:
        raise HubtuneError(f"{where}: {describe(value)} cannot be decoded ({error})") from error


def predict_images(inputs: list[str]) -> list[PILImage.Image]:
    """The image files `hubtune predict` was given, decoded to RGB; a missing or undecodable one is one line."""
    images = []
    for text in inputs:
        path = Path(text).expanduser()
        require_path(path, "file", "image")
        images.append(decode_checked({"path": str(path), "bytes": None}, "predict", warn_large=True))
    return images


def write_probe_images(folder: Path, count: int) -> list[str]:
    """`count` noise images of several sizes written as PNG files into `folder`: inputs made up to check an export
    on where the run's own images are gone (the model's logits, not what they mean, are compared)."""
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        pixels = rng.integers(0, 256, size=(48 + 8 * (index % 3), 64 - 8 * (index % 2), 3), dtype=np.uint8)
        path = folder / f"probe-{index}.png"
        PILImage.fromarray(pixels).save(path)
        paths.append(str(path))
    return paths


def verify_header(value: dict[str, Any], where: str) -> tuple[int, int]:
    """Read the image's header and verify its structure (PIL's `verify`: a PNG's chunks and checksums, for
    instance) without decoding its pixels; a file that fails is reported as `where`: <image> cannot be decoded.
    Returns its (width, height)."""
    try:
        with open_image(value, where) as image:
            image.verify()
            return image.size
    except (OSError, SyntaxError, ValueError) as error:
        raise HubtuneError(f"{where}: {describe(value)} cannot be decoded ({error})") from error


def check_images(dataset: Dataset, column: str, locate: Callable[[int], str], num_proc: int | None = None) -> None:
    """Every row's image exists and its header verifies; `num_proc` processes share the rows."""

    def check(batch: dict[str, list], positions: list[int]) -> None:
        for value, position in zip(batch[column], positions):
            if value is None:
                raise HubtuneError(f"{locate(position)}: column '{column}' has no image")
            verify_header(value, locate(position))

    # A map that returns nothing writes nothing: datasets only shards the rows over the processes.
    dataset.map(check, batched=True, with_indices=True, num_proc=num_proc, desc="checking images")
