"""Object detection with transformers' DETR family (DETR, Conditional / Deformable DETR, RT-DETR ...).

The model is a complete detection checkpoint (its head replaced for the recipe's classes) or, with
`model.architecture`, a detector built new around a timm ImageNet backbone (pipelines/dense_backbone.py). Boxes are
read from COCO, Pascal VOC, YOLO or Hub-style `objects` annotations (pipelines/boxes.py) and checked against their
images before anything is written. The checkpoint's image processor (or, for a built model, the processor class of
its model type, normalised like the backbone) resizes, normalises and turns the boxes into the model's targets, and
post-processes predictions back to boxes in the original image's pixels (the serving half,
pipelines/tasks/object_detection_serving.py); torchvision's v2 transforms augment images and boxes together; the
score is torchmetrics' COCO mean average precision.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from datasets import ClassLabel, Dataset
from transformers import AutoConfig, AutoImageProcessor, AutoModelForObjectDetection, EvalPrediction, Trainer

from pipelines.compat import prepare_inputs
from pipelines.config import DataConfig, option, require_one_of
from pipelines.data.boxes import (
    BOX_FORMATS,
    augmentation,
    augmented,
    checked_box,
    coco_annotation,
    read_coco,
    read_objects,
    read_voc,
    read_yolo,
)
from pipelines.data.images import decode_checked, resolve_image_paths, undecoded
from pipelines.data.splits import Splits, load_table_file, require_columns
from pipelines.errors import HubtuneError
from pipelines.models.dense_backbone import backbone_source, build_on_backbone
from pipelines.models.groups import label_sized_parameters
from pipelines.models.loading import from_config, from_pretrained, redraw
from pipelines.runs.folder import label_names_of, load_run_model
from pipelines.tasks.base import PredictionStep, PreparedData, Task, TaskModel
from pipelines.tasks.object_detection_serving import ObjectDetectionServing

logger = logging.getLogger(__name__)

ANNOTATION_FORMATS = ("coco", "voc", "yolo", "objects")
# Formats whose split is a folder (images beside their annotation files); the others are one file.
FOLDER_FORMATS = ("voc", "yolo")
# Padding of the evaluation target table (`target_table`): the Trainer pads its gathered labels with this too.
PAD = -100


@dataclass
class DetectionDataConfig(DataConfig):
    annotation_format: str = option(
        "coco",
        "coco (a json per split in 'files'), voc (a folder of <stem>.xml beside the images, or Annotations/ + "
        "JPEGImages/), yolo (a folder with images/ and labels/<stem>.txt), objects (a table or Hub dataset with an "
        "image column and an objects column of bbox + category lists)",
    )
    labels: list[str] | None = option(
        None,
        "class names in id order; read from the data when absent (COCO: by category id; VOC and objects: sorted names "
        "or the ClassLabel's; YOLO: from a classes.txt beside images/)",
    )
    image_column: str = option("image", "objects format: the image column (an Image feature or paths)")
    objects_column: str = option("objects", "objects format: the column of {bbox: [...], category: [...]}")
    bbox_format: str = option(
        "coco",
        "objects format: how 'bbox' is written: coco (x, y, width, height in pixels), pascal_voc (xmin, ymin, xmax, "
        "ymax in pixels) or yolo (centre x, centre y, width, height over the image size)",
    )
    image_size: int | None = option(
        None,
        "longest image side the model sees (aspect kept, batches padded; a square for processors that squash, as "
        "RT-DETR's); null: the checkpoint processor's size",
    )
    image_augment: bool = option(
        True, "training images randomly flipped and cropped (SSD's IoU crop), their boxes moved and clipped with them"
    )
    score_threshold: float = option(0.5, "predict: boxes scoring below this are left out")

    def validate(self) -> None:
        super().validate()
        require_one_of("data.annotation_format", self.annotation_format, ANNOTATION_FORMATS)
        require_one_of("data.bbox_format", self.bbox_format, BOX_FORMATS)
        if self.dataset and self.annotation_format != "objects":
            raise HubtuneError(
                f"recipe key 'data.annotation_format' is {self.annotation_format}, but a Hub dataset ('data.dataset') "
                "holds its boxes in a column: set it to objects"
            )
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise HubtuneError(f"recipe key 'data.labels' repeats a label: {self.labels}")
        if self.image_size is not None and self.image_size < 32:
            raise HubtuneError(f"recipe key 'data.image_size' must be at least 32 pixels, got {self.image_size}")
        if not 0.0 <= self.score_threshold < 1.0:
            raise HubtuneError(f"recipe key 'data.score_threshold' must lie in [0, 1), got {self.score_threshold}")


def size_setting(size: dict[str, int] | None, side: int) -> dict[str, int]:
    """The processor `size` (in place of its default `size`) that fits images into `side` x `side`: a fixed square
    for processors that squash (RT-DETR's height/width), else the longest side, aspect kept (DETR's max_height/width)."""
    if "height" in (size or {}):
        return {"height": side, "width": side}
    return {"max_height": side, "max_width": side}


def target_table(labels: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    """A batch's targets as one tensor the Trainer can pad and gather across processes (a list of dicts of
    different lengths it cannot): per image, row 0 holds (height, width) of the original image, then one row
    (class, cx, cy, w, h) per box, normalised as the processor gives them; missing rows are PAD."""
    rows = 1 + max(len(label["class_labels"]) for label in labels)
    table = torch.full((len(labels), rows, 5), float(PAD), device=labels[0]["boxes"].device)
    for i, label in enumerate(labels):
        n = len(label["class_labels"])
        table[i, 0, :2] = label["orig_size"].float()
        table[i, 0, 2:] = 0
        table[i, 1 : n + 1, 0] = label["class_labels"].float()
        table[i, 1 : n + 1, 1:] = label["boxes"].float()
    return table


def corners(boxes: torch.Tensor, height: float, width: float) -> torch.Tensor:
    """Normalised (cx, cy, w, h) boxes as [xmin, ymin, xmax, ymax] in pixels of a height x width image."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height], -1)


def boxes_and_targets(
    trainer: Trainer, model: TaskModel, inputs: dict[str, Any], prediction_loss_only: bool, standard: Callable
) -> tuple:
    """An evaluation step that keeps the predicted class logits and boxes (not the loss parts and decoder states a
    DETR output also holds), with the targets as `target_table` rows (a `PredictionStep`)."""
    inputs = prepare_inputs(trainer, inputs)
    labels = inputs.get("labels")
    with torch.no_grad(), trainer.compute_loss_context_manager():
        if labels is None:
            loss, outputs = None, model(**inputs)
        else:
            loss, outputs = trainer.compute_loss(model, inputs, return_outputs=True)
            loss = loss.detach().mean()
    if prediction_loss_only:
        return loss, None, None
    predictions = (outputs.logits.detach(), outputs.pred_boxes.detach())
    return loss, predictions, None if labels is None else target_table(labels)


class DetectionCollator:
    """Examples of different sizes padded into one batch (bottom and right, with the processor's own `pad`) with
    their pixel mask; the boxes stay normalised to the image itself, which is what the mask marks."""

    def __init__(self, processor: Any):
        self.processor = processor

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        height = max(example["pixel_values"].shape[-2] for example in examples)
        width = max(example["pixel_values"].shape[-1] for example in examples)
        padded = [self.processor.pad(example["pixel_values"], (height, width)) for example in examples]
        batch: dict[str, Any] = {"pixel_values": torch.stack([image for image, _, _ in padded])}
        if "pixel_mask" in self.processor.model_input_names:
            batch["pixel_mask"] = torch.stack([mask for _, mask, _ in padded])
        if "labels" in examples[0]:
            batch["labels"] = [example["labels"] for example in examples]
        return batch


class ObjectDetection(Task[DetectionDataConfig]):
    name = "object-detection"
    data_config = DetectionDataConfig
    pipeline_tag = "object-detection"
    primary_metric = "map_50"
    summary_metrics = ("map_50", "map", "map_75", "mar_100")
    builds_on_backbone = True
    serving = ObjectDetectionServing
    # Images and boxes are decoded per batch by a dataset transform; the Trainer would drop their columns.
    training_defaults = {"remove_unused_columns": False}

    def load_processor(self, source: str | None = None) -> Any:
        model, side = self.config.model, self.data.image_size
        if source is not None:  # a run folder's processor already holds the recipe's size and normalisation
            return from_pretrained(AutoImageProcessor, model, source)
        if model.architecture is None:
            processor = from_pretrained(AutoImageProcessor, model)
            if side is None:
                return processor
            return from_pretrained(AutoImageProcessor, model, size=size_setting(processor.size, side))
        from transformers.models.auto.image_processing_auto import (
            IMAGE_PROCESSOR_MAPPING_NAMES,
            get_image_processor_class_from_name,
        )

        names = IMAGE_PROCESSOR_MAPPING_NAMES.get(model.architecture) or {}
        processor_class = get_image_processor_class_from_name(names.get("torchvision") or names.get("pil") or "")
        if processor_class is None:
            raise HubtuneError(f"'model.architecture' {model.architecture} has no image processor in transformers")
        backbone = backbone_source(model)
        size = {} if side is None else {"size": size_setting(processor_class.size, side)}
        return processor_class(image_mean=backbone.mean, image_std=backbone.std, **size)

    def data_path_kind(self) -> str | None:
        return "folder" if self.data.annotation_format in FOLDER_FORMATS else "file"

    def load_data_file(self, path: Path) -> Dataset:
        data = self.data
        if data.annotation_format == "coco":
            return read_coco(path)
        if data.annotation_format == "voc":
            return read_voc(path)
        if data.annotation_format == "yolo":
            return read_yolo(path, data.labels)
        return resolve_image_paths(load_table_file(path), data.image_column, path)

    def _rows(self, splits: Splits, role: str) -> Dataset:
        """A split as the readers' rows (image, width, height, objects with xyxy boxes, annotation)."""
        data, dataset = self.data, splits[role]
        if data.annotation_format != "objects":
            return dataset
        require_columns(
            dataset,
            {"image_column": data.image_column, "objects_column": data.objects_column},
            splits.sources[role],
        )
        images = undecoded(dataset, data.image_column, splits.sources[role])
        return read_objects(images, data.image_column, data.objects_column, data.bbox_format, splits.locate(role))

    def _label_names(self, rows: Dataset, known: list[str] | None) -> list[str]:
        if known:
            return known
        if self.data.labels is not None:
            return list(self.data.labels)
        category = rows.features["objects"]["category"].feature
        if isinstance(category, ClassLabel):
            return list(category.names)
        return sorted({name for names in rows["objects"] for name in names["category"]})

    def prepare(self, splits: Splits, processor: Any, label_names: list[str] | None = None) -> PreparedData:
        rows = {role: self._rows(splits, role) for role in splits.datasets}
        names = self._label_names(rows[splits.reference_role], label_names)
        result = PreparedData({}, processor, names)
        for role, dataset in rows.items():
            targets = self._targets(dataset, names)
            if role == "train":
                seen = {box["category_id"] for boxes in targets for box in boxes}
                missing = [name for i, name in enumerate(names) if i not in seen]
                if missing:
                    result.warnings.append(f"{splits.sources[role]} has no box of the classes {missing}")
            dataset = dataset.select_columns(["image"]).add_column("targets", targets)
            result.datasets[role] = dataset.with_transform(
                self._transform(processor, role == "train" and self.data.image_augment, splits.sources[role])
            )
        return result

    def _targets(self, rows: Dataset, names: list[str]) -> list[list[dict[str, Any]]]:
        """Every row's boxes checked against its image and its classes against `names`, as COCO annotations
        (bbox x, y, w, h in pixels; category_id in `names` order)."""
        ids = {name: i for i, name in enumerate(names)}
        category = rows.features["objects"]["category"].feature
        targets = []
        for row in rows.select_columns(["width", "height", "objects", "annotation"]):
            objects = row["objects"]
            found = []
            for number, (box, label) in enumerate(zip(objects["bbox"], objects["category"]), start=1):
                name = category.int2str(label) if isinstance(category, ClassLabel) else label
                where = f"{row['annotation']}, object {number} ('{name}')"
                if name not in ids:
                    raise HubtuneError(f"{where}: class '{name}' is not one of the labels {names}")
                found.append(coco_annotation(checked_box(box, row["width"], row["height"], where), ids[name]))
            targets.append(found)
        return targets

    def _transform(self, processor: Any, train: bool, source: str) -> Callable[[dict[str, list]], dict[str, Any]]:
        augment = augmentation() if train else None

        def transform(batch: dict[str, list]) -> dict[str, Any]:
            pixels, labels = [], []
            for image_id, (value, targets) in enumerate(zip(batch["image"], batch["targets"])):
                image = decode_checked(value, source)
                if augment is not None:
                    image, targets = augmented(augment, image, targets)
                annotation = {"image_id": image_id, "annotations": targets}
                encoded = processor(images=image, annotations=annotation, return_tensors="pt", do_pad=False)
                pixels.append(encoded["pixel_values"][0])
                labels.append(dict(encoded["labels"][0]))
            return {"pixel_values": pixels, "labels": labels}

        return transform

    def build_model(self, prepared: PreparedData) -> TaskModel:
        model, names = self.config.model, prepared.label_names
        if model.architecture is not None:
            return build_on_backbone(AutoModelForObjectDetection, model, names)
        labels: dict[str, Any] = {
            "id2label": dict(enumerate(names)),
            "label2id": {name: i for i, name in enumerate(names)},
        }
        if model.from_scratch:
            config = from_pretrained(AutoConfig, model, **labels)
            built = from_config(AutoModelForObjectDetection, config, model)
            built.name_or_path = model.checkpoint
            return built
        detector = from_pretrained(AutoModelForObjectDetection, model, ignore_mismatched_sizes=True, **labels)
        trained = from_pretrained(AutoConfig, model).id2label
        if len(trained) == len(names) and [trained[i] for i in sorted(trained)] != names:
            # Same number of classes under other names: the sizes match, so from_pretrained would keep the
            # checkpoint's class scores under the new names. They are drawn anew (the box regressor, which is
            # class-agnostic, is kept).
            logger.info("checkpoint classes %s differ from %s: new class head", list(trained.values()), names)
            redraw(detector, label_sized_parameters(detector))
        return detector

    def load_run_model(self, run_dir: str) -> TaskModel:
        return load_run_model(AutoModelForObjectDetection, run_dir, self.config.model.trust_remote_code)

    def trained_label_names(self, model: TaskModel) -> list[str]:
        return label_names_of(model)

    def data_collator(self, processor: Any) -> Any:
        return DetectionCollator(processor)

    def prediction_step(self) -> PredictionStep:
        return boxes_and_targets

    def compute_metrics(self, prediction: EvalPrediction, prepared: PreparedData) -> dict[str, float]:
        logits, boxes = (torch.as_tensor(np.asarray(array)) for array in prediction.predictions)
        table = torch.as_tensor(np.asarray(prediction.label_ids))
        sizes = table[:, 0, :2]
        found = prepared.processor.post_process_object_detection(
            SimpleNamespace(logits=logits, pred_boxes=boxes), threshold=0.0, target_sizes=sizes
        )
        predictions, references = [], []
        for image, rows, (height, width) in zip(found, table[:, 1:], sizes.tolist()):
            rows = rows[rows[:, 0] != PAD]
            predictions.append({key: image[key].tolist() for key in ("boxes", "scores", "labels")})
            references.append(
                {"boxes": corners(rows[:, 1:], height, width).tolist(), "labels": rows[:, 0].long().tolist()}
            )
        return self.metric("detection_map").compute(
            predictions=predictions, references=references, label_names=prepared.label_names
        )
