"""Synthetic detection data for the tests: coloured squares on grey, written as COCO, VOC, YOLO and `objects`
tables. Not a test module (no `test_` prefix)."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

CLASSES = ["red", "blue"]
# Transformer sizes of the tests' tiny detectors (DETR's family; RT-DETR's hybrid encoder also has its own width).
TINY_DETR_SIZES = {
    "d_model": 32,
    "encoder_layers": 1,
    "decoder_layers": 1,
    "encoder_ffn_dim": 64,
    "decoder_ffn_dim": 64,
    "encoder_attention_heads": 2,
    "decoder_attention_heads": 2,
    "num_queries": 10,
}
TINY_RT_DETR_SIZES = {
    "d_model": 32,
    "encoder_hidden_dim": 32,
    "encoder_layers": 1,
    "decoder_layers": 1,
    "encoder_ffn_dim": 64,
    "decoder_ffn_dim": 64,
    "num_queries": 10,
}
COLOURS = {"red": (220, 40, 40), "blue": (40, 40, 220)}
SIDE = 64


def draw_set(folder: Path, n: int, seed: int, side: int = SIDE) -> list[dict[str, Any]]:
    """`n` PNG images in `folder`, each with one or two squares; returns per image its file and boxes (xyxy)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for i in range(n):
        grey = rng.randint(100, 160)
        image = Image.new("RGB", (side, side), (grey, grey, grey))
        canvas = ImageDraw.Draw(image)
        boxes = []
        for _ in range(rng.choice([1, 2])):
            size = rng.randint(side // 4, side * 3 // 8)
            x, y = rng.randint(0, side - size), rng.randint(0, side - size)
            name = rng.choice(CLASSES)
            canvas.rectangle([x, y, x + size - 1, y + size - 1], fill=COLOURS[name])
            boxes.append({"box": [x, y, x + size, y + size], "category": name})
        path = folder / f"{i:04d}.png"
        image.save(path)
        images.append({"file": path, "width": side, "height": side, "boxes": boxes})
    return images


def write_coco(images: list[dict[str, Any]], path: Path, classes: list[str] = CLASSES) -> Path:
    coco: dict[str, list] = {
        "images": [],
        "annotations": [],
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(classes)],
    }
    for image_id, image in enumerate(images, start=1):
        coco["images"].append(
            {
                "id": image_id,
                "file_name": os.path.relpath(image["file"], path.parent),
                "width": image["width"],
                "height": image["height"],
            }
        )
        for box in image["boxes"]:
            x1, y1, x2, y2 = box["box"]
            coco["annotations"].append(
                {
                    "id": len(coco["annotations"]) + 1,
                    "image_id": image_id,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "category_id": classes.index(box["category"]) + 1,
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    path.write_text(json.dumps(coco))
    return path


def write_voc(images: list[dict[str, Any]], folder: Path) -> Path:
    """`<stem>.xml` beside a copy of each image."""
    folder.mkdir(parents=True, exist_ok=True)
    for image in images:
        Image.open(image["file"]).save(folder / Path(image["file"]).name)
        objects = "".join(
            f"<object><name>{b['category']}</name><bndbox><xmin>{b['box'][0]}</xmin><ymin>{b['box'][1]}</ymin>"
            f"<xmax>{b['box'][2]}</xmax><ymax>{b['box'][3]}</ymax></bndbox></object>"
            for b in image["boxes"]
        )
        (folder / f"{Path(image['file']).stem}.xml").write_text(
            f"<annotation><filename>{Path(image['file']).name}</filename><size><width>{image['width']}</width>"
            f"<height>{image['height']}</height><depth>3</depth></size>{objects}</annotation>"
        )
    return folder


def write_yolo(images: list[dict[str, Any]], folder: Path) -> Path:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    for image in images:
        stem = Path(image["file"]).stem
        Image.open(image["file"]).save(folder / "images" / f"{stem}.png")
        w, h = image["width"], image["height"]
        lines = [
            f"{CLASSES.index(b['category'])} {(b['box'][0] + b['box'][2]) / 2 / w} {(b['box'][1] + b['box'][3]) / 2 / h} "
            f"{(b['box'][2] - b['box'][0]) / w} {(b['box'][3] - b['box'][1]) / h}"
            for b in image["boxes"]
        ]
        (folder / "labels" / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    return folder


def write_objects(images: list[dict[str, Any]], path: Path) -> Path:
    """A jsonl table: image path, and objects {bbox: [x, y, w, h], category: [name]} as on the Hub."""
    with path.open("w") as handle:
        for image in images:
            bbox = [
                [b["box"][0], b["box"][1], b["box"][2] - b["box"][0], b["box"][3] - b["box"][1]] for b in image["boxes"]
            ]
            row = {
                "image": str(image["file"]),
                "objects": {"bbox": bbox, "category": [b["category"] for b in image["boxes"]]},
            }
            handle.write(json.dumps(row) + "\n")
    return path
