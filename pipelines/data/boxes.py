"""Box annotations for object detection: COCO json, Pascal VOC xml, YOLO txt and Hub-style `objects` columns.

Every reader gives the same rows: the image (an undecoded `Image` column), its `width` and `height` (read from the
file's header), `objects` with `bbox` ([xmin, ymin, xmax, ymax] in pixels) and `category` (class names, or a
`ClassLabel` where the format fixes the class order: COCO's category ids, YOLO's class ids), and `annotation`,
which names where the row's boxes were written, for error messages. None of these formats has a reader in
datasets or torchvision that checks boxes against their images and names the file at fault, hence this module.
Training images are augmented with their boxes by torchvision's v2 transforms (`augmentation`).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from datasets import ClassLabel, Dataset, Features, Image, Sequence, Value
from torchvision import tv_tensors
from torchvision.transforms import v2

from pipelines.data.images import describe, image_extensions, open_image
from pipelines.errors import HubtuneError, path_kind, require_path

# Pixels a box may reach past the image's edge (annotation tools round outwards); such boxes are clipped.
EDGE_TOLERANCE = 1.0
BOX_FORMATS = ("coco", "pascal_voc", "yolo")


def row_features(categories: list[str] | None) -> Features:
    """The rows every reader gives; `categories` fixes the class order (a ClassLabel), None keeps names."""
    category = ClassLabel(names=categories) if categories is not None else Value("string")
    return Features(
        {
            "image": Image(decode=False),
            "width": Value("int32"),
            "height": Value("int32"),
            "objects": {"bbox": Sequence(Sequence(Value("float32"), length=4)), "category": Sequence(category)},
            "annotation": Value("string"),
        }
    )


def image_size(path: Path, where: str) -> tuple[int, int]:
    """(width, height) from the image file's header, without decoding its pixels."""
    found = path_kind(path)
    if found != "file":
        raise HubtuneError(
            f"{where}: image '{path}' " + ("does not exist" if found is None else f"is a {found}, not an image file")
        )
    return _header_size({"path": str(path), "bytes": None}, where)


def _header_size(value: dict[str, Any], where: str) -> tuple[int, int]:
    try:
        with open_image(value, where) as image:
            return image.size
    except (OSError, SyntaxError, ValueError) as error:
        raise HubtuneError(f"{where}: {describe(value)} cannot be decoded ({error})") from error


def xyxy(box: list[float], box_format: str, width: int, height: int) -> list[float]:
    """A box in `box_format` (coco: x, y, w, h; pascal_voc: corners; yolo: centre and size over the image size)
    as [xmin, ymin, xmax, ymax] in pixels."""
    if box_format == "coco":
        x, y, w, h = box
        return [x, y, x + w, y + h]
    if box_format == "yolo":
        cx, cy, w, h = box
        return [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height]
    return list(box)


def four_numbers(box: Any, where: str, layout: str) -> list[float]:
    """`box` as four floats; anything else is an error naming `where` and the expected `layout`."""
    if not (isinstance(box, (list, tuple)) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
        raise HubtuneError(f"{where}: bbox {box!r} is not four numbers [{layout}]")
    return [float(v) for v in box]


def coco_annotation(box: list[float], category_id: int) -> dict[str, Any]:
    """An xyxy pixel box as the COCO annotation transformers' DETR image processors take."""
    x1, y1, x2, y2 = box
    return {"bbox": [x1, y1, x2 - x1, y2 - y1], "category_id": category_id, "area": (x2 - x1) * (y2 - y1), "iscrowd": 0}


def checked_box(box: list[float], width: int, height: int, where: str) -> list[float]:
    """`box` (xyxy pixels) clipped to the image; a box without area or past the edge beyond the tolerance is an
    error naming `where` and the box."""
    x1, y1, x2, y2 = box
    shown = "[" + ", ".join(f"{v:g}" for v in box) + "]"
    if not (x2 > x1 and y2 > y1):
        raise HubtuneError(f"{where}: box {shown} (xmin, ymin, xmax, ymax) has no area")
    if x1 < -EDGE_TOLERANCE or y1 < -EDGE_TOLERANCE or x2 > width + EDGE_TOLERANCE or y2 > height + EDGE_TOLERANCE:
        raise HubtuneError(
            f"{where}: box {shown} (xmin, ymin, xmax, ymax) lies outside the {width}x{height} image "
            f"(more than {EDGE_TOLERANCE:g} px past its edge)"
        )
    return [max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2)]


def _rows(rows: list[dict[str, Any]], categories: list[str] | None) -> Dataset:
    return Dataset.from_list(rows, features=row_features(categories))


def _row(
    image: Path | dict[str, Any], size: tuple[int, int], boxes: list, categories: list, annotation: str
) -> dict[str, Any]:
    return {
        "image": str(image) if isinstance(image, Path) else image,
        "width": size[0],
        "height": size[1],
        "objects": {"bbox": boxes, "category": categories},
        "annotation": annotation,
    }


def read_coco(path: Path) -> Dataset:
    """A COCO detection json: `images` (file_name relative to the json's folder), `annotations` (bbox x, y, w, h
    in pixels), `categories` (their order by id is the class order)."""
    where = f"annotation file '{path}'"
    require_path(path, "file", "COCO annotation file")
    try:
        coco = json.loads(path.read_text())
        categories = {int(c["id"]): str(c["name"]) for c in coco["categories"]}
        images = {int(image["id"]): image for image in coco["images"]}
        annotations = coco.get("annotations", [])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise HubtuneError(
            f"{where} is not a COCO detection json (images, annotations, categories): {error}"
        ) from error
    names = [categories[i] for i in sorted(categories)]
    boxes: dict[int, list[tuple[list[float], str]]] = {image_id: [] for image_id in images}
    for number, annotation in enumerate(annotations, start=1):
        label = f"{where}, annotation {annotation.get('id', number)}"
        if annotation.get("image_id") not in images:
            raise HubtuneError(f"{label}: image_id {annotation.get('image_id')!r} is not in its 'images'")
        if annotation.get("category_id") not in categories:
            raise HubtuneError(f"{label}: category_id {annotation.get('category_id')!r} is not in its 'categories'")
        if annotation.get("iscrowd", 0):
            continue  # COCO's crowd regions are not objects to find: DETR's own COCO preparation drops them too
        box = four_numbers(annotation.get("bbox"), label, "x, y, width, height")
        boxes[annotation["image_id"]].append((box, categories[annotation["category_id"]]))
    rows = []
    for image_id, image in images.items():
        file = (path.parent / str(image.get("file_name", ""))).resolve()
        size = image_size(file, f"{where}, image id {image_id}")
        found = boxes[image_id]
        rows.append(
            _row(
                file,
                size,
                [xyxy(box, "coco", *size) for box, _ in found],
                [name for _, name in found],
                f"{where}, image '{image.get('file_name')}' (id {image_id})",
            )
        )
    if not rows:
        raise HubtuneError(f"{where} lists no images")
    return _rows(rows, names)


def _images_by_stem(folder: Path) -> dict[str, Path]:
    extensions = image_extensions()
    return {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in extensions}


def _voc_objects(xml_file: Path) -> tuple[str | None, list[tuple[list[float], str]]]:
    """The image file name and the (box, class name) objects of one Pascal VOC xml file."""
    try:
        root = ElementTree.parse(xml_file).getroot()
        objects = []
        for number, item in enumerate(root.iter("object"), start=1):
            box = item.find("bndbox")
            name = item.findtext("name")
            if box is None or not name:
                raise ValueError(f"object {number} has no name or no bndbox")
            corners = [box.findtext(k) or "" for k in ("xmin", "ymin", "xmax", "ymax")]
            if "" in corners:
                raise ValueError(f"object {number} ('{name}') lacks one of xmin, ymin, xmax, ymax")
            objects.append(([float(v) for v in corners], name))
    except (ElementTree.ParseError, ValueError) as error:
        raise HubtuneError(f"annotation file '{xml_file}' is not a Pascal VOC xml: {error}") from error
    return root.findtext("filename"), objects


def read_voc(folder: Path) -> Dataset:
    """Pascal VOC: `<stem>.xml` beside each image, or the standard layout `Annotations/` + `JPEGImages/`."""
    require_path(folder, "folder", "VOC folder")
    annotations, pictures = folder, folder
    if (folder / "Annotations").is_dir() and (folder / "JPEGImages").is_dir():
        annotations, pictures = folder / "Annotations", folder / "JPEGImages"
    images = _images_by_stem(pictures)
    xml_files = sorted(annotations.glob("*.xml"))
    if not xml_files:
        raise HubtuneError(f"VOC folder '{folder}' holds no .xml annotation files")
    rows = []
    for xml_file in xml_files:
        filename, objects = _voc_objects(xml_file)
        image = images.pop(xml_file.stem, None)
        if image is None:
            named = pictures / (filename or f"{xml_file.stem}.*")
            raise HubtuneError(f"annotation file '{xml_file}' names image '{named}', which does not exist")
        size = image_size(image, f"annotation file '{xml_file}'")
        rows.append(_row(image, size, [box for box, _ in objects], [n for _, n in objects], f"'{xml_file}'"))
    if images:
        first = next(iter(images.values()))
        raise HubtuneError(f"image '{first}' has no annotation file '{annotations / (first.stem + '.xml')}'")
    return _rows(rows, None)


def yolo_names(folder: Path, labels: list[str] | None) -> list[str]:
    """YOLO's class names: the recipe's `data.labels`, else a `classes.txt` (one name a line) in the folder."""
    if labels is not None:
        return labels
    listing = folder / "classes.txt"
    if not listing.is_file():
        raise HubtuneError(
            f"YOLO folder '{folder}' numbers its classes: name them in 'data.labels' (in class-id order) "
            "or in a classes.txt file there"
        )
    return [line.strip() for line in listing.read_text().splitlines() if line.strip()]


def read_yolo(folder: Path, labels: list[str] | None) -> Dataset:
    """YOLO: `images/<stem>.<ext>` with `labels/<stem>.txt`, a line `class cx cy w h` (normalised) per object."""
    require_path(folder, "folder", "YOLO folder")
    names = yolo_names(folder, labels)
    images = _images_by_stem(folder / "images") if (folder / "images").is_dir() else {}
    if not images:
        raise HubtuneError(f"YOLO folder '{folder}' has no images/ folder with images")
    label_files = {p.stem: p for p in (folder / "labels").glob("*.txt")} if (folder / "labels").is_dir() else {}
    orphans = sorted(set(label_files) - set(images))
    if orphans:
        raise HubtuneError(
            f"label file '{label_files[orphans[0]]}' has no image '{folder / 'images' / orphans[0]}.*': it does not exist"
        )
    rows = []
    for stem, image in images.items():
        if stem not in label_files:
            raise HubtuneError(f"image '{image}' has no label file '{folder / 'labels' / (stem + '.txt')}'")
        size = image_size(image, f"label file '{label_files[stem]}'")
        boxes, categories = [], []
        for number, line in enumerate(label_files[stem].read_text().splitlines(), start=1):
            if not line.strip():
                continue
            where = f"label file '{label_files[stem]}', line {number}"
            fields = line.split()
            try:
                class_id, box = int(fields[0]), [float(v) for v in fields[1:5]]
            except (ValueError, IndexError) as error:
                raise HubtuneError(f"{where}: '{line.strip()}' is not 'class cx cy w h'") from error
            if len(fields) != 5:
                raise HubtuneError(f"{where}: '{line.strip()}' is not 'class cx cy w h'")
            if not 0 <= class_id < len(names):
                raise HubtuneError(f"{where}: class {class_id} is not one of the {len(names)} classes {names}")
            boxes.append(xyxy(box, "yolo", *size))
            categories.append(names[class_id])
        rows.append(_row(image, size, boxes, categories, f"label file '{label_files[stem]}'"))
    return _rows(rows, names)


def read_objects(
    dataset: Dataset, image_column: str, objects_column: str, box_format: str, locate: Callable[[int], str]
) -> Dataset:
    """A table or Hub dataset with an image column and an `objects` column of `bbox` (in `box_format`) and
    `category` (ids of a ClassLabel, or names), as Hub detection datasets (cppe-5) hold them."""
    feature = dataset.features[objects_column]
    category_feature = feature.get("category") if isinstance(feature, dict) else None
    inner = getattr(category_feature, "feature", category_feature)
    names = inner.names if isinstance(inner, ClassLabel) else None
    rows = []
    for index, (image, objects) in enumerate(zip(dataset[image_column], dataset[objects_column])):
        where = locate(index)
        if not isinstance(objects, dict) or "bbox" not in objects or "category" not in objects:
            raise HubtuneError(f"{where}: column '{objects_column}' holds no 'bbox' and 'category' lists")
        size = _embedded_size(image, where)
        categories = objects["category"]
        if names is None and any(not isinstance(c, str) for c in categories):
            raise HubtuneError(
                f"{where}: column '{objects_column}' numbers its categories {categories} without a ClassLabel "
                "naming them; write class names"
            )
        rows.append(
            _row(
                image,
                size,
                [xyxy(four_numbers(box, where, box_format), box_format, *size) for box in objects["bbox"]],
                categories,
                where,
            )
        )
    return _rows(rows, names)


def _embedded_size(image: dict[str, Any] | None, where: str) -> tuple[int, int]:
    if image is None:
        raise HubtuneError(f"{where}: has no image")
    if image.get("bytes"):
        return _header_size({"path": None, "bytes": image["bytes"]}, where)
    return image_size(Path(image["path"]), where)


def augmentation() -> v2.Transform:
    """Flip and SSD's IoU crop, moving the boxes with the image; boxes left without area (or outside the crop)
    are dropped with their labels (SanitizeBoundingBoxes), the rest clipped to the new image."""
    return v2.Compose(
        [
            v2.RandomHorizontalFlip(),
            v2.RandomIoUCrop(),
            v2.ClampBoundingBoxes(),
            v2.SanitizeBoundingBoxes(min_size=1),
        ]
    )


def augmented(augment: v2.Transform, image: Any, targets: list[dict[str, Any]]) -> tuple[Any, list[dict[str, Any]]]:
    """One image and its COCO annotations through `augment` (boxes as xyxy tv_tensors, moved with the image)."""
    corners = [[t["bbox"][0], t["bbox"][1], t["bbox"][0] + t["bbox"][2], t["bbox"][1] + t["bbox"][3]] for t in targets]
    boxes = tv_tensors.BoundingBoxes(
        torch.tensor(corners, dtype=torch.float32).reshape(-1, 4),
        format="XYXY",
        canvas_size=(image.height, image.width),
    )
    labels = torch.tensor([t["category_id"] for t in targets], dtype=torch.int64)
    image, out = augment(image, {"boxes": boxes, "labels": labels})
    return image, [coco_annotation(box, int(c)) for box, c in zip(out["boxes"].tolist(), out["labels"].tolist())]
