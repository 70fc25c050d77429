"""scripts/prepare_vision_assets.py: the tree-crown tiles, nuclei tiles and garment canvases hold what they claim.

The tree-crown and nuclei makers run on the real package data (deepforest and stardist are in requirements-assets.txt,
so a missing one fails here); the canvas maker runs on synthetic garments, since `make test` does not install the
Fashion-MNIST Debian package.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from helpers.scripts import load_script
from PIL import Image

script = load_script("prepare_vision_assets")


def package_data(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.submodule_search_locations, f"{name} is not installed: make install"
    return Path(list(spec.submodule_search_locations)[0])


def file_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def parse_voc(path: Path) -> tuple[str, tuple[int, int], list[tuple[str, tuple[int, int, int, int]]]]:
    """Parsed without the script's reader, so that a shared bug cannot hide."""
    root = ET.parse(path).getroot()
    size = (int(root.find("size/width").text), int(root.find("size/height").text))
    boxes = [
        (obj.find("name").text, tuple(int(obj.find(f"bndbox/{k}").text) for k in ("xmin", "ymin", "xmax", "ymax")))
        for obj in root.iter("object")
    ]
    return root.find("filename").text, size, boxes


# --- tree crowns ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tree_crowns(tmp_path_factory) -> tuple[Path, dict]:
    data_dir = tmp_path_factory.mktemp("trees")
    counts = script.make_tree_crowns(data_dir, seed=3)
    return data_dir / "tree_crowns", counts


def test_tree_crown_files_are_valid_voc_pairs(tree_crowns):
    root, counts = tree_crowns
    for split in ("train", "validation", "test"):
        xmls = sorted((root / split).glob("*.xml"))
        assert {p.stem for p in xmls} == {p.stem for p in (root / split).glob("*.png")}
        assert len(xmls) == counts[split]["images"] > 0
        total = 0
        for path in xmls:
            filename, (width, height), boxes = parse_voc(path)
            with Image.open(path.with_suffix(".png")) as image:
                assert (image.mode, image.size) == ("RGB", (width, height))
            assert filename == f"{path.stem}.png"
            assert boxes, path.name
            for name, (xmin, ymin, xmax, ymax) in boxes:
                assert name == "Tree"
                assert 0 <= xmin < xmax <= width and 0 <= ymin < ymax <= height, (path.name, xmin, ymin, xmax, ymax)
            total += len(boxes)
        assert total == counts[split]["boxes"]


def test_tree_crown_tiles_keep_boxes_at_least_half_inside(tree_crowns):
    root, _ = tree_crowns
    source = package_data("deepforest") / "data"
    tiles = sorted([*(root / "train").glob("*.png"), *(root / "validation").glob("*.png")])
    scenes = {}
    for tile in tiles:
        name, x, y = re.fullmatch(r"(.+)_x(\d+)_y(\d+)", tile.stem).groups()
        x, y = int(x), int(y)
        if name not in scenes:
            with Image.open(source / f"{name}.png") as scene:
                scenes[name] = (np.asarray(scene.convert("RGB")), parse_voc(source / f"{name}.xml")[2])
        pixels, source_boxes = scenes[name]
        with Image.open(tile) as image:
            crop = np.asarray(image)
        assert crop.shape[0] >= 200 and crop.shape[1] >= 200  # edge strips under 200 px are skipped
        assert np.array_equal(crop, pixels[y : y + crop.shape[0], x : x + crop.shape[1]])
        x1, y1 = x + crop.shape[1], y + crop.shape[0]
        expected = []
        for _, (bx0, by0, bx1, by1) in source_boxes:
            cx0, cy0, cx1, cy1 = max(bx0, x), max(by0, y), min(bx1, x1), min(by1, y1)
            inside = max(0, cx1 - cx0) * max(0, cy1 - cy0)
            if inside > 0 and inside >= 0.5 * (bx1 - bx0) * (by1 - by0):
                expected.append((cx0 - x, cy0 - y, cx1 - x, cy1 - y))
        assert sorted(box for _, box in parse_voc(tile.with_suffix(".xml"))[2]) == sorted(expected), tile.name
        assert sorted(box for _, box in script.read_voc(tile.with_suffix(".xml"))[1]) == sorted(expected)


def test_tree_crown_splits(tree_crowns):
    root, counts = tree_crowns
    train, validation = ({p.stem for p in (root / split).glob("*.png")} for split in ("train", "validation"))
    assert not train & validation
    assert counts["validation"]["images"] == round(0.15 * (len(train) + len(validation)))
    # Test sites are other images than the tiled scenes; Dead/Alive in SOAP_061 become Tree, boxes unchanged.
    assert {p.name for p in (root / "test").iterdir()} == {
        "OSBS_029.png",
        "OSBS_029.xml",
        "SOAP_061.png",
        "SOAP_061.xml",
    }
    source = package_data("deepforest") / "data"
    for stem, count in (("OSBS_029", 61), ("SOAP_061", 37)):
        boxes = parse_voc(root / "test" / f"{stem}.xml")[2]
        assert len(boxes) == count
        assert [box for _, box in boxes] == [box for _, box in parse_voc(source / f"{stem}.xml")[2]]


def test_tree_crowns_same_seed_same_files(tree_crowns, tmp_path):
    root, _ = tree_crowns
    script.make_tree_crowns(tmp_path, seed=3)
    assert file_bytes(tmp_path / "tree_crowns") == file_bytes(root)


# --- nuclei -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nuclei(tmp_path_factory) -> tuple[Path, dict]:
    data_dir = tmp_path_factory.mktemp("nuclei")
    counts = script.make_nuclei(data_dir)
    return data_dir / "nuclei", counts


def tile_origins(folder: Path) -> set[tuple[int, int]]:
    return {tuple(int(v) for v in re.fullmatch(r"img2d_x(\d+)_y(\d+)", p.stem).groups()) for p in folder.glob("*.png")}


def test_nuclei_tiles_by_region(nuclei):
    root, counts = nuclei
    origins = {split: tile_origins(root / split / "images") for split in ("train", "validation", "test")}
    assert {split: len(o) for split, o in origins.items()} == {"train": 21, "validation": 4, "test": 4}
    assert {split: c["images"] for split, c in counts.items()} == {"train": 21, "validation": 4, "test": 4}
    assert origins["test"] == {(256, 256), (384, 256), (256, 384), (384, 384)}
    assert origins["validation"] == {(256, 0), (384, 0), (256, 128), (384, 128)}
    # Training tiles overlap each other (stride 64) but never reach the right half the others come from.
    assert all(x + 128 <= 256 and y + 128 <= 512 for x, y in origins["train"])
    for split in origins:
        assert tile_origins(root / split / "masks") == origins[split]


def test_nuclei_pixels_and_masks(nuclei):
    import tifffile

    root, _ = nuclei
    folder = package_data("stardist") / "data" / "images"
    raw = tifffile.imread(folder / "img2d.tif").astype(np.float64)
    low, high = np.percentile(raw, [1, 99.8])
    expected_image = np.round(np.clip((raw - low) / (high - low), 0, 1) * 255).astype(np.uint8)
    expected_mask = tifffile.imread(folder / "mask2d.tif") > 0
    for split in ("train", "validation", "test"):
        for x, y in tile_origins(root / split / "images"):
            name = f"img2d_x{x:03d}_y{y:03d}.png"
            with Image.open(root / split / "images" / name) as image, Image.open(root / split / "masks" / name) as mask:
                assert (image.mode, image.size, mask.mode, mask.size) == ("RGB", (128, 128), "L", (128, 128))
                pixels, labels = np.asarray(image), np.asarray(mask)
            assert set(np.unique(labels)) <= {0, 1}
            assert np.array_equal(labels, expected_mask[y : y + 128, x : x + 128])
            assert (pixels == pixels[..., :1]).all()  # three equal channels
            assert np.array_equal(pixels[..., 0], expected_image[y : y + 128, x : x + 128])


def test_nuclei_same_files_every_run(nuclei, tmp_path):
    root, _ = nuclei
    script.make_nuclei(tmp_path)
    assert file_bytes(tmp_path / "nuclei") == file_bytes(root)


# --- canvas -----------------------------------------------------------------------------------------------------


def synthetic_garments(count: int, seed: int):
    """28x28 "garments": a bright block (above the silhouette threshold) inside a faint halo (below it)."""
    rng = np.random.default_rng(seed)
    images = np.zeros((count, 28, 28), np.uint8)
    for image in images:
        top, left = rng.integers(1, 10, size=2)
        bottom, right = rng.integers(18, 27, size=2)
        image[top - 1 : bottom + 1, left - 1 : right + 1] = 20
        image[top:bottom, left:right] = rng.integers(120, 256)
    return script.Garments(images, np.arange(count) % 4)


SIZES = {"train": 12, "validation": 5, "test": 5}


@pytest.fixture(scope="module")
def canvas(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("canvas")
    counts, made = script.make_canvas_dataset(
        data_dir, synthetic_garments(60, 0), synthetic_garments(60, 1), SIZES, seed=5
    )
    return data_dir / "canvas", counts, made


def test_canvas_boxes_match_mask_pixels(canvas):
    root, counts, _ = canvas
    for split in SIZES:
        coco = json.loads((root / "detection" / f"{split}.json").read_text())
        assert coco["categories"] == [
            {"id": 1, "name": "trouser"},
            {"id": 2, "name": "dress"},
            {"id": 3, "name": "sneaker"},
            {"id": 4, "name": "bag"},
        ]
        assert len(coco["images"]) == counts[split]["images"] == SIZES[split]
        assert len(coco["annotations"]) == counts[split]["boxes"]
        assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])
        for entry in coco["images"]:
            image_path = root / "detection" / entry["file_name"]
            name = image_path.name
            with Image.open(image_path) as image, Image.open(root / "segmentation" / split / "masks" / name) as mask:
                assert (image.mode, image.size, mask.mode) == ("RGB", (entry["width"], entry["height"]), "L")
                labels = np.asarray(mask)
            assert (root / "segmentation" / split / "images" / name).read_bytes() == image_path.read_bytes()
            assert set(np.unique(labels)) <= {0, 1, 2, 3, 4}
            objects = [a for a in coco["annotations"] if a["image_id"] == entry["id"]]
            assert 1 <= len(objects) <= 4
            for item in objects:
                x, y, w, h = item["bbox"]
                assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 128 and y + h <= 128
                assert item["iscrowd"] == 0
                # Boxes never overlap, so the class's pixels inside this box are this object's alone.
                rows, columns = np.nonzero(labels[y : y + h, x : x + w] == item["category_id"])
                assert (columns.min(), rows.min(), columns.max() + 1, rows.max() + 1) == (0, 0, w, h)
                assert len(rows) == item["area"]
            for category in range(1, 5):
                areas = sum(a["area"] for a in objects if a["category_id"] == category)
                assert (labels == category).sum() == areas  # no mask pixel outside an annotated object


def test_canvas_garments_are_never_reused_across_or_within_splits(canvas):
    _, _, made = canvas
    sources = {split: [i for c in canvases for i in c.sources] for split, canvases in made.items()}
    for used in sources.values():
        assert len(used) == len(set(used))
    # Validation and test both draw from the held-out file, from disjoint halves of it.
    assert not set(sources["validation"]) & set(sources["test"])


def test_canvas_same_seed_same_files(canvas, tmp_path):
    root, _, _ = canvas
    script.make_canvas_dataset(tmp_path, synthetic_garments(60, 0), synthetic_garments(60, 1), SIZES, seed=5)
    assert file_bytes(tmp_path / "canvas") == file_bytes(root)
    script.make_canvas_dataset(tmp_path, synthetic_garments(60, 0), synthetic_garments(60, 1), SIZES, seed=6)
    assert file_bytes(tmp_path / "canvas") != file_bytes(root)


def test_canvas_pool_running_out_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="garments ran out"):
        script.make_canvas_dataset(tmp_path, synthetic_garments(8, 0), synthetic_garments(60, 1), SIZES, seed=5)
    assert not (tmp_path / "canvas").exists()


def test_load_garments_keeps_the_four_classes(tmp_path):
    images = np.arange(10 * 28 * 28, dtype=np.uint64).astype(np.uint8).reshape(10, 28, 28)
    labels = np.arange(10, dtype=np.uint8)
    for suffix, array, magic in (("images-idx3-ubyte", images, 3), ("labels-idx1-ubyte", labels, 1)):
        header = bytes([0, 0, 8, magic]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
        (tmp_path / f"t10k-{suffix}.gz").write_bytes(gzip.compress(header + array.tobytes()))
    garments = script.load_garments(tmp_path, "t10k")
    assert garments.labels.tolist() == [0, 1, 2, 3]  # Fashion-MNIST 1, 3, 7, 8: trouser, dress, sneaker, bag
    assert np.array_equal(garments.images, images[[1, 3, 7, 8]])


# --- writing aside ----------------------------------------------------------------------------------------------


def test_an_interrupted_write_leaves_the_old_folder(tmp_path):
    target = tmp_path / "set"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt), script.staged(target) as staging:
        (staging / "new.txt").write_text("half")
        raise KeyboardInterrupt
    assert [p.name for p in tmp_path.iterdir()] == ["set"]
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    with script.staged(target) as staging:
        (staging / "new.txt").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["set"]
    assert [p.name for p in target.iterdir()] == ["new.txt"]


def test_only_rejects_unknown_names():
    assert script.parse_only("nuclei, canvas") == ["nuclei", "canvas"]
    with pytest.raises(argparse.ArgumentTypeError, match="tree_crowns, nuclei, canvas"):
        script.parse_only("trees")
