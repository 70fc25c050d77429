"""Make the offline object-detection and semantic-segmentation data from images that ship in PyPI and Debian packages.

- tree_crowns (PyPI `deepforest`, `data/`): two aerial NEON crops with Pascal VOC tree-crown boxes are cut into
  400x400 tiles, split train/validation ~85/15 (seeded); two other 400x400 sites are the test set. Each image is
  `<stem>.png` next to its VOC `<stem>.xml` (one class, `Tree`; pixel-edge coordinates, xmax <= width).
- nuclei (PyPI `stardist`, `data/images/img2d.tif` + `mask2d.tif`): one 512x512 fluorescence image cut into 128x128
  tiles by region (train: left half, stride 64; validation: top-right quadrant; test: bottom-right quadrant), as
  `images/<stem>.png` (RGB) and `masks/<stem>.png` (0 background, 1 nucleus).
- canvas (Debian `dataset-fashion-mnist`): synthetic 128x128 scenes of 1-4 non-overlapping garments (trouser, dress,
  sneaker, bag) serving both tasks: `images/<split>/<id>.png`, COCO boxes in `detection/<split>.json` and class
  masks (class index + 1, 0 background) in `segmentation/<split>/{images,masks}/<id>.png`. Train garments come
  from the Fashion-MNIST training file, validation and test garments from disjoint halves of the t10k file.

Each data set is written into a hidden folder beside its target and renamed into place only when complete.

Usage: python scripts/prepare_vision_assets.py [--data-dir data] [--only tree_crowns,nuclei,canvas]
       [--canvas-train 600] [--canvas-validation 100] [--canvas-test 200] [--seed 42]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from prepare_image_assets import FASHION_MNIST_DIR, read_idx  # noqa: E402  (sibling scripts, not a package)
from prepare_offline_assets import package_dir  # noqa: E402

logger = logging.getLogger("prepare_vision_assets")

Box = tuple[int, int, int, int]  # xmin, ymin, xmax, ymax in pixel-edge coordinates (xmax = last column + 1)
Counts = dict[str, dict[str, int]]  # split -> {"images": n, "boxes": n}

SPLITS = ("train", "validation", "test")

TREE_LABEL = "Tree"
VOC_CORNERS = ("xmin", "ymin", "xmax", "ymax")
TREE_SOURCES = ("2019_YELL_2_528000_4978000_image_crop2", "2019_YELL_2_541000_4977000_image_crop")
TREE_TEST = ("OSBS_029", "SOAP_061")
TILE = 400
# An edge strip narrower than this holds mostly cut-off crowns: it is skipped rather than kept as a sliver tile.
MIN_TILE_SIDE = 200
# A crown cut by a tile edge is kept (clipped) when at least this share of its box lies inside the tile.
MIN_INSIDE = 0.5
VALIDATION_SHARE = 0.15

NUCLEI_TILE = 128
NUCLEI_STRIDE = 64
PERCENTILES = (1.0, 99.8)

CANVAS_SIZE = 128
CANVAS_CLASSES = {1: "trouser", 3: "dress", 7: "sneaker", 8: "bag"}  # Fashion-MNIST id -> name, in label order
SILHOUETTE_THRESHOLD = 30
GARMENT_SIDES = (32, 64)
MAX_GARMENTS = 4
PLACEMENT_TRIES = 10
BACKGROUND_LEVEL, BACKGROUND_NOISE = 20.0, 6.0
CANVAS_SIZES = {"train": 600, "validation": 100, "test": 200}


@contextmanager
def staged(target: Path) -> Iterator[Path]:
    """A fresh hidden folder beside `target` that replaces it only when the block completes."""
    # Named by process id (not mkdtemp, whose 0700 folder would become the data set's permissions).
    staging = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if target.exists():
        # Moved aside first so that the target is never missing for longer than one rename.
        trash = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.rename(trash)
        staging.rename(target)
        shutil.rmtree(trash)
    else:
        staging.rename(target)


def make_dirs(*folders: Path) -> None:
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)


# --- tree crowns ------------------------------------------------------------------------------------------------


def read_voc(path: Path) -> tuple[tuple[int, int], list[tuple[str, Box]]]:
    """(width, height) and the (label, box) pairs of a Pascal VOC annotation file."""
    root = ET.parse(path).getroot()
    size = (int(root.findtext("size/width", "0")), int(root.findtext("size/height", "0")))
    boxes = []
    for element in root.iter("object"):
        xmin, ymin, xmax, ymax = (round(float(element.findtext(f"bndbox/{key}", ""))) for key in VOC_CORNERS)
        boxes.append((element.findtext("name", ""), (xmin, ymin, xmax, ymax)))
    return size, boxes


def write_voc(path: Path, size: tuple[int, int], boxes: list[tuple[Box, bool]]) -> None:
    """A VOC file naming `<stem>.png`; each box comes with whether a tile edge cut it (VOC's `truncated`)."""
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = f"{path.stem}.png"
    size_element = ET.SubElement(root, "size")
    for key, value in (("width", size[0]), ("height", size[1]), ("depth", 3)):
        ET.SubElement(size_element, key).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    for box, truncated in boxes:
        element = ET.SubElement(root, "object")
        ET.SubElement(element, "name").text = TREE_LABEL
        ET.SubElement(element, "truncated").text = str(int(truncated))
        ET.SubElement(element, "difficult").text = "0"
        corners = ET.SubElement(element, "bndbox")
        for key, value in zip(VOC_CORNERS, box):
            ET.SubElement(corners, key).text = str(value)
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=False)


def area(box: Box) -> int:
    return max(0, box[2] - box[0]) * max(0, box[3] - box[1])


def crop_box(box: Box, window: Box) -> Box | None:
    """`box` clipped to `window`, in window coordinates; None when less than MIN_INSIDE of its area is inside."""
    clipped = (max(box[0], window[0]), max(box[1], window[1]), min(box[2], window[2]), min(box[3], window[3]))
    if area(clipped) == 0 or area(clipped) < MIN_INSIDE * area(box):
        return None
    return (clipped[0] - window[0], clipped[1] - window[1], clipped[2] - window[0], clipped[3] - window[1])


def tile_starts(length: int, tile: int = TILE, min_side: int = MIN_TILE_SIDE) -> list[int]:
    return [start for start in range(0, length, tile) if min(tile, length - start) >= min_side]


def tile_windows(width: int, height: int) -> list[Box]:
    return [
        (x, y, min(x + TILE, width), min(y + TILE, height)) for y in tile_starts(height) for x in tile_starts(width)
    ]


def boxes_in(window: Box, boxes: list[Box]) -> list[tuple[Box, bool]]:
    kept = [(crop_box(box, window), box) for box in boxes]
    return [(cropped, area(cropped) < area(box)) for cropped, box in kept if cropped is not None]


@dataclass(frozen=True)
class Tile:
    source: str
    window: Box
    boxes: list[tuple[Box, bool]]

    @property
    def stem(self) -> str:
        return f"{self.source}_x{self.window[0]:04d}_y{self.window[1]:04d}"


def plan_tiles(folder: Path) -> list[Tile]:
    """The tiles of the training scenes that hold at least one crown (an empty tile teaches nothing about crowns)."""
    tiles = []
    for source in TREE_SOURCES:
        (width, height), labelled = read_voc(folder / f"{source}.xml")
        boxes = [box for _, box in labelled]
        for window in tile_windows(width, height):
            kept = boxes_in(window, boxes)
            if kept:
                tiles.append(Tile(source, window, kept))
    return tiles


def split_tiles(tiles: list[Tile], seed: int) -> dict[str, list[Tile]]:
    order = np.random.default_rng(seed).permutation(len(tiles))
    cut = round(VALIDATION_SHARE * len(tiles))
    return {"train": [tiles[i] for i in order[cut:]], "validation": [tiles[i] for i in order[:cut]]}


def write_tiles(folder: Path, target: Path, tiles: list[Tile]) -> None:
    for source in TREE_SOURCES:
        mine = [tile for tile in tiles if tile.source == source]
        if not mine:
            continue
        with Image.open(folder / f"{source}.png") as scene:
            rgb = scene.convert("RGB")
        for tile in mine:
            crop = rgb.crop(tile.window)
            crop.save(target / f"{tile.stem}.png")
            write_voc(target / f"{tile.stem}.xml", crop.size, tile.boxes)


def write_tree_test(folder: Path, target: Path) -> int:
    """Copies the two test sites, relabelling every box `Tree`; returns the number of boxes."""
    count = 0
    for stem in TREE_TEST:
        (width, height), labelled = read_voc(folder / f"{stem}.xml")
        # SOAP_061 labels its crowns Dead/Alive; the task is finding crowns, so both are a `Tree`.
        kept = boxes_in((0, 0, width, height), [box for _, box in labelled])
        with Image.open(folder / f"{stem}.png") as image:
            image.convert("RGB").save(target / f"{stem}.png")
        write_voc(target / f"{stem}.xml", (width, height), kept)
        count += len(kept)
    return count


def make_tree_crowns(data_dir: Path, seed: int) -> Counts:
    folder = package_dir("deepforest") / "data"
    splits = split_tiles(plan_tiles(folder), seed)
    with staged(data_dir / "tree_crowns") as root:
        make_dirs(*(root / split for split in SPLITS))
        for split, tiles in splits.items():
            write_tiles(folder, root / split, tiles)
        test_boxes = write_tree_test(folder, root / "test")
    counts = {
        split: {"images": len(tiles), "boxes": sum(len(t.boxes) for t in tiles)} for split, tiles in splits.items()
    }
    counts["test"] = {"images": len(TREE_TEST), "boxes": test_boxes}
    return counts


# --- nuclei -----------------------------------------------------------------------------------------------------


def to_8bit(image: np.ndarray) -> np.ndarray:
    """A percentile stretch over the whole image, so that every tile shares one intensity scale."""
    low, high = np.percentile(image, PERCENTILES)
    scaled = np.clip((image.astype(np.float64) - low) / max(high - low, 1e-9), 0.0, 1.0)
    return np.round(scaled * 255).astype(np.uint8)


def region_tiles(x0: int, y0: int, x1: int, y1: int, stride: int) -> list[tuple[int, int]]:
    """(x, y) origins of the NUCLEI_TILE tiles inside the region [x0, x1) x [y0, y1)."""
    return [(x, y) for y in range(y0, y1 - NUCLEI_TILE + 1, stride) for x in range(x0, x1 - NUCLEI_TILE + 1, stride)]


def nuclei_regions(width: int, height: int) -> dict[str, list[tuple[int, int]]]:
    half_x, half_y = width // 2, height // 2
    return {
        "train": region_tiles(0, 0, half_x, height, NUCLEI_STRIDE),
        "validation": region_tiles(half_x, 0, width, half_y, NUCLEI_TILE),
        "test": region_tiles(half_x, half_y, width, height, NUCLEI_TILE),
    }


def make_nuclei(data_dir: Path) -> Counts:
    import tifffile

    folder = package_dir("stardist") / "data" / "images"
    image = to_8bit(tifffile.imread(folder / "img2d.tif"))
    instances = tifffile.imread(folder / "mask2d.tif")
    nucleus = (instances > 0).astype(np.uint8)  # instance ids -> one class
    counts = {}
    with staged(data_dir / "nuclei") as root:
        for split, origins in nuclei_regions(image.shape[1], image.shape[0]).items():
            make_dirs(root / split / "images", root / split / "masks")
            for x, y in origins:
                crop = (slice(y, y + NUCLEI_TILE), slice(x, x + NUCLEI_TILE))
                stem = f"img2d_x{x:03d}_y{y:03d}"
                Image.fromarray(np.repeat(image[crop][..., None], 3, axis=2)).save(
                    root / split / "images" / f"{stem}.png"
                )
                Image.fromarray(nucleus[crop]).save(root / split / "masks" / f"{stem}.png")
            nuclei = sum(
                np.count_nonzero(np.unique(instances[y : y + NUCLEI_TILE, x : x + NUCLEI_TILE])) for x, y in origins
            )
            counts[split] = {"images": len(origins), "nuclei": int(nuclei)}
    return counts


# --- canvas -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Garments:
    images: np.ndarray  # (n, 28, 28) uint8
    labels: np.ndarray  # (n,) class index into CANVAS_CLASSES


def load_garments(folder: Path, prefix: str) -> Garments:
    """The trouser/dress/sneaker/bag images of one Fashion-MNIST file (`train` or `t10k`), labels 0..3."""
    if not folder.is_dir():
        raise SystemExit(
            f"prepare_vision_assets: {folder} is missing; run `make assets-image` (apt-get install dataset-fashion-mnist)"
        )
    images = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz")
    ids = np.array(list(CANVAS_CLASSES))
    keep = np.isin(labels, ids)
    return Garments(images[keep], np.searchsorted(ids, labels[keep]))


@dataclass(frozen=True)
class Item:
    label: int  # class index into CANVAS_CLASSES
    box: Box
    area: int  # silhouette pixels


@dataclass
class Canvas:
    image: np.ndarray  # (CANVAS_SIZE, CANVAS_SIZE, 3) uint8
    mask: np.ndarray  # (CANVAS_SIZE, CANVAS_SIZE) uint8, class index + 1
    items: list[Item] = field(default_factory=list)
    sources: list[int] = field(default_factory=list)  # garment indices used, for provenance checks


def overlaps(box: Box, others: list[Box]) -> bool:
    return any(box[0] < o[2] and o[0] < box[2] and box[1] < o[3] and o[1] < box[3] for o in others)


def scaled_garment(garment: np.ndarray, side: int) -> np.ndarray:
    return np.asarray(Image.fromarray(garment).resize((side, side), Image.Resampling.BILINEAR))


def place(silhouette: np.ndarray, taken: list[Box], rng: np.random.Generator) -> tuple[int, int, Box] | None:
    """A patch origin whose silhouette box misses every box in `taken`, and that box; None after PLACEMENT_TRIES."""
    rows, columns = np.nonzero(silhouette)
    side = silhouette.shape[0]
    for _ in range(PLACEMENT_TRIES):
        x, y = (int(v) for v in rng.integers(0, CANVAS_SIZE - side + 1, size=2))
        box = (x + int(columns.min()), y + int(rows.min()), x + int(columns.max()) + 1, y + int(rows.max()) + 1)
        if not overlaps(box, taken):
            return x, y, box
    return None


def make_canvas(garments: Garments, draws: Iterator[int], rng: np.random.Generator) -> Canvas:
    noise = rng.normal(BACKGROUND_LEVEL, BACKGROUND_NOISE, (CANVAS_SIZE, CANVAS_SIZE, 3))
    canvas = Canvas(np.clip(noise, 0, 255).astype(np.uint8), np.zeros((CANVAS_SIZE, CANVAS_SIZE), np.uint8))
    taken: list[Box] = []
    for _ in range(int(rng.integers(1, MAX_GARMENTS + 1))):
        index = next(draws)
        pixels = scaled_garment(garments.images[index], int(rng.integers(GARMENT_SIDES[0], GARMENT_SIDES[1] + 1)))
        silhouette = pixels > SILHOUETTE_THRESHOLD
        # A random tint: the canvas is colour, but colour must carry no class signal.
        tint = rng.uniform(0.6, 1.0, size=3)
        spot = place(silhouette, taken, rng) if silhouette.any() else None
        if spot is None:
            continue
        x, y, box = spot
        patch = (slice(y, y + pixels.shape[0]), slice(x, x + pixels.shape[1]))
        # Only silhouette pixels are painted, so an object's mask pixels are exactly its silhouette.
        canvas.image[patch][silhouette] = np.round(pixels[silhouette, None] * tint).astype(np.uint8)
        label = int(garments.labels[index])
        canvas.mask[patch][silhouette] = label + 1
        taken.append(box)
        canvas.sources.append(int(index))
        canvas.items.append(Item(label, box, int(silhouette.sum())))
    return canvas


def make_canvases(garments: Garments, pool: np.ndarray, count: int, rng: np.random.Generator) -> list[Canvas]:
    """`count` canvases drawing garments from `pool` without replacement: no garment image appears twice."""
    draws = iter(int(i) for i in rng.permutation(pool))
    canvases = []
    for made in range(count):
        try:
            canvases.append(make_canvas(garments, draws, rng))
        except StopIteration:
            raise SystemExit(
                f"prepare_vision_assets: {len(pool)} garments ran out after {made} of {count} canvases; ask for fewer"
            ) from None
    return canvases


def link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # a file system without hard links
        shutil.copy2(source, target)


def write_canvas_split(root: Path, split: str, canvases: list[Canvas]) -> dict[str, int]:
    images, segmentation = root / "images" / split, root / "segmentation" / split
    make_dirs(images, segmentation / "images", segmentation / "masks", root / "detection")
    coco_images: list[dict[str, object]] = []
    annotations: list[dict[str, object]] = []
    for number, canvas in enumerate(canvases, start=1):
        name = f"{number:06d}.png"
        Image.fromarray(canvas.image).save(images / name)
        link_or_copy(images / name, segmentation / "images" / name)
        Image.fromarray(canvas.mask).save(segmentation / "masks" / name)
        coco_images.append(
            {"id": number, "file_name": f"../images/{split}/{name}", "width": CANVAS_SIZE, "height": CANVAS_SIZE}
        )
        for item in canvas.items:
            x0, y0, x1, y1 = item.box
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": number,
                    "category_id": item.label + 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": item.area,  # the silhouette's pixel count, as COCO defines area
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(CANVAS_CLASSES.values())]
    coco = {"images": coco_images, "annotations": annotations, "categories": categories}
    (root / "detection" / f"{split}.json").write_text(json.dumps(coco, indent=1))
    return {"images": len(canvases), "boxes": len(annotations)}


def make_canvas_dataset(
    data_dir: Path, train: Garments, held_out: Garments, sizes: dict[str, int], seed: int
) -> tuple[Counts, dict[str, list[Canvas]]]:
    """Canvases of every split; validation and test draw from disjoint halves of the held-out garments."""
    order = np.random.default_rng(seed).permutation(len(held_out.labels))
    pools = {
        "train": (train, np.arange(len(train.labels))),
        "validation": (held_out, order[::2]),
        "test": (held_out, order[1::2]),
    }
    # One generator per split, so that one split's size does not change another's canvases.
    canvases = {
        split: make_canvases(garments, pool, sizes[split], np.random.default_rng([seed, number]))
        for number, (split, (garments, pool)) in enumerate(pools.items())
    }
    with staged(data_dir / "canvas") as root:
        counts = {split: write_canvas_split(root, split, made) for split, made in canvases.items()}
    return counts, canvases


def make_canvas_from_fashion_mnist(data_dir: Path, sizes: dict[str, int], seed: int) -> Counts:
    train, held_out = load_garments(FASHION_MNIST_DIR, "train"), load_garments(FASHION_MNIST_DIR, "t10k")
    return make_canvas_dataset(data_dir, train, held_out, sizes, seed)[0]


# --- command line -----------------------------------------------------------------------------------------------


def parse_only(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = sorted(set(names) - {"tree_crowns", "nuclei", "canvas"})
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"expected a comma list of tree_crowns, nuclei, canvas; got {value!r}")
    return names


def describe(counts: Counts) -> str:
    return ", ".join(
        f"{split} " + " / ".join(f"{n} {what}" for what, n in numbers.items()) for split, numbers in counts.items()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--only", type=parse_only, default=["tree_crowns", "nuclei", "canvas"])
    for split, size in CANVAS_SIZES.items():
        parser.add_argument(f"--canvas-{split}", type=int, default=size, help=f"{split} canvases (default {size})")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sizes = {split: getattr(args, f"canvas_{split}") for split in CANVAS_SIZES}
    makers: dict[str, Callable[[], Counts]] = {
        "tree_crowns": lambda: make_tree_crowns(args.data_dir, args.seed),
        "nuclei": lambda: make_nuclei(args.data_dir),
        "canvas": lambda: make_canvas_from_fashion_mnist(args.data_dir, sizes, args.seed),
    }
    for name in args.only:
        logger.info("%s -> %s: %s", name, args.data_dir / name, describe(makers[name]()))


if __name__ == "__main__":
    main()
