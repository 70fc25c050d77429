"""Semantic segmentation: a class for every pixel, through `AutoModelForSemanticSegmentation`.

Two kinds of model: a complete checkpoint (SegFormer, UperNet, DPT, BEiT ... from the Hub or a folder) with its
head replaced for the recipe's classes, or `model.architecture: upernet` (any model type transformers builds around
a backbone) around a timm ImageNet checkpoint (`pipelines.models.dense_backbone`). The checkpoint's image processor
preprocesses; a built model gets a `SegformerImageProcessor` (resize, rescale, normalise; masks resized with nearest
neighbours) with its backbone's ImageNet mean and std, saved with the run like any processor.

Data: `<split>/images/<name>.png` + `<split>/masks/<name>.png` folders, or tables / Hub datasets with an image and a
mask column (`pipelines.data.masks`). Scored by mean IoU over the classes (`pipelines/metrics/mean_iou`), at the model's
input size (`data.image_size`): the class maps the model trains on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from datasets import Dataset
from PIL import Image as PILImage
from torch.nn import functional
from transformers import (
    AutoImageProcessor,
    AutoModelForSemanticSegmentation,
    DefaultDataCollator,
    EvalPrediction,
    SegformerImageProcessor,
)

from pipelines.config import DataConfig, option
from pipelines.data.images import (
    decode_checked,
    predict_images,
    resolve_image_paths,
    undecoded,
    write_probe_images,
)
from pipelines.data.masks import check_pairs, load_mask_folder, paired_augmentation, read_mask
from pipelines.data.pixels import size_overrides
from pipelines.data.splits import Locate, Splits, load_table_file, require_columns
from pipelines.errors import HubtuneError
from pipelines.models.dense_backbone import backbone_source, build_on_backbone
from pipelines.models.loading import from_pretrained, load_classifier
from pipelines.runs.folder import label_names_of, load_run_model
from pipelines.tasks.base import PreparedData, Task, TaskModel, logits_of
from pipelines.tasks.classifier import trained_head_labels
from pipelines.tasks.labels import missing_classes
from pipelines.tasks.serving_base import Batch, OnnxAxes, TaskServing, dynamic_axes, file_paths

# The input side of a built model when `data.image_size` is not set: SegformerImageProcessor's own default.
DEFAULT_SIDE = 512
# Model-config fields of the pixel label the loss skips, by model family (UperNet; SegFormer, BEiT, DPT ...).
IGNORE_INDEX_FIELDS = ("loss_ignore_index", "semantic_loss_ignore_index")
OVERLAY_OPACITY = 0.5
# matplotlib's qualitative colour map: colours that stay apart on screen.
PALETTE, PALETTE_SIZE = "tab10", 10


@dataclass
class SegmentationDataConfig(DataConfig):
    image_column: str = option("image", "an Image feature, or a path relative to the csv/jsonl file")
    mask_column: str = option(
        "mask", "the masks: an Image feature (a Hub dataset's annotation column), or a path like image_column"
    )
    labels: list[str] | None = option(
        None,
        "required: the class names in mask-value order (pixel value 0 is the first name); any other value but "
        "ignore_index is an error",
    )
    ignore_index: int = option(255, "the mask value of pixels left out of the loss and the metrics (0-255)")
    image_augment: bool = option(
        True, "the same random scale/crop (50-100% of the area) and horizontal flip of training images and masks"
    )
    image_size: int | None = option(
        None,
        f"square input side (images and masks are resized to it); null: the checkpoint's, {DEFAULT_SIDE} for a "
        "model built on a backbone",
    )

    def validate(self) -> None:
        super().validate()
        if not self.labels or len(self.labels) < 2:
            raise HubtuneError(
                "recipe key 'data.labels' is required for semantic-segmentation: at least two class names in "
                f"mask-value order (pixel value 0 is the first), got {self.labels}"
            )
        if len(set(self.labels)) != len(self.labels):
            raise HubtuneError(f"recipe key 'data.labels' repeats a label: {self.labels}")
        if not 0 <= self.ignore_index <= 255:
            raise HubtuneError(f"recipe key 'data.ignore_index' must lie in 0..255, got {self.ignore_index}")
        if self.ignore_index < len(self.labels):
            raise HubtuneError(
                f"recipe key 'data.ignore_index' is {self.ignore_index}, the mask value of class "
                f"'{self.labels[self.ignore_index]}' ('data.labels'); use a value of no class, such as 255"
            )
        if self.image_size is not None and self.image_size < 1:
            raise HubtuneError(
                f"recipe key 'data.image_size' must be a positive number of pixels, got {self.image_size}"
            )


def input_size(processor: Any) -> tuple[int, int]:
    """(height, width) of the processor's model inputs."""
    size = processor.crop_size if getattr(processor, "do_center_crop", False) else processor.size
    if "height" in size:
        return size["height"], size["width"]
    return size["shortest_edge"], size["shortest_edge"]


def class_maps_of(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The predicted class of every labelled pixel: logits (SegFormer's come at 1/4 of the input side) upsampled to
    the label maps' size, then the best class."""
    scores = cast(torch.Tensor, logits_of(logits))
    if scores.shape[-2:] != labels.shape[-2:]:
        scores = functional.interpolate(scores, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    return scores.argmax(dim=1)


class SemanticSegmentationServing(TaskServing["SemanticSegmentation"]):
    input_kind = "path"
    input_column_key = "image_column"

    def data_inputs(self, values: list[Any], locate: Locate, column: str) -> list[str]:
        return file_paths(values, locate, column, "image")

    def pixels(self, images: list[PILImage.Image]) -> torch.Tensor:
        return self.processor(images=images, return_tensors="pt")["pixel_values"]

    def probe_inputs(self, folder: Path, count: int) -> list[str]:
        return write_probe_images(folder, count)

    def preprocess(self, inputs: list[str]) -> Batch:
        images = predict_images(inputs)
        return Batch(inputs, {"pixel_values": self.pixels(images)}, {"images": images})

    def upsampled(self, outputs: Any, images: list[PILImage.Image]) -> list[np.ndarray]:
        """Each image's predicted class map at the image's own size (the processor's post-processing upsamples)."""
        sizes = [(image.height, image.width) for image in images]
        return [
            class_map.cpu().numpy()
            for class_map in self.processor.post_process_semantic_segmentation(outputs, target_sizes=sizes)
        ]

    @torch.no_grad()
    def class_maps(self, images: list[PILImage.Image]) -> list[np.ndarray]:
        """The class maps of decoded images, at their own sizes (for drawing, and for research code)."""
        return self.upsampled(self.model(pixel_values=self.pixels(images).to(self.model.device)), images)

    def postprocess(self, batch: Batch, outputs: Any) -> list[dict[str, Any]]:
        names = label_names_of(self.model)
        records = []
        images = batch.context["images"]
        for text, image, class_map in zip(batch.inputs, images, self.upsampled(outputs, images)):
            counts = np.bincount(class_map.ravel(), minlength=len(names))
            records.append(
                {
                    "input": text,
                    "width": image.width,
                    "height": image.height,
                    "fractions": {name: float(count / class_map.size) for name, count in zip(names, counts)},
                }
            )
        return records

    def draw(self, prediction: dict[str, Any]) -> dict[str, PILImage.Image]:
        """The class-id mask (mode L, the image's size) and the image under a coloured class overlay; pixels of
        class 0 (the first label: background in most data) are left unpainted, so the image shows through.

        A prediction record keeps only pixel fractions (a mask in JSON would be megabytes), so the mask is predicted
        again here.
        """
        from matplotlib import colormaps  # plotting only when drawing

        (image,) = predict_images([prediction["input"]])
        (class_map,) = self.class_maps([image])
        colours = (colormaps[PALETTE](np.arange(PALETTE_SIZE))[:, :3] * 255).astype(np.uint8)
        # More classes than colours reuse them in turn; the mask PNG keeps every id apart.
        painted = PILImage.fromarray(colours[class_map % len(colours)])
        overlay = PILImage.blend(image, painted, OVERLAY_OPACITY)
        overlay.paste(image, mask=PILImage.fromarray(((class_map == 0) * 255).astype(np.uint8)))
        stem = Path(prediction["input"]).stem
        # The mask as 2-D bytes: mode L.
        return {f"{stem}_mask.png": PILImage.fromarray(class_map.astype(np.uint8)), f"{stem}_overlay.png": overlay}

    def onnx_axes(self, features: Mapping[str, torch.Tensor]) -> OnnxAxes:
        return dynamic_axes(features)


class SemanticSegmentation(Task[SegmentationDataConfig]):
    name = "semantic-segmentation"
    pipeline_tag = "image-segmentation"
    data_config = SegmentationDataConfig
    primary_metric = "mean_iou"
    summary_metrics = ("mean_iou", "overall_accuracy", "mean_accuracy")
    head_suffix = "ForSemanticSegmentation"
    builds_on_backbone = True
    caches_features = False
    serving = SemanticSegmentationServing
    # Images and masks are decoded per batch by a dataset transform from the (undecoded) columns, which the
    # Trainer would otherwise drop for not being model inputs.
    training_defaults = {"remove_unused_columns": False}

    def load_processor(self, source: str | None = None) -> Any:
        model, side = self.config.model, self.data.image_size
        if source is not None:
            return from_pretrained(AutoImageProcessor, model, source)
        if model.architecture:
            backbone = backbone_source(model)
            square = side or DEFAULT_SIDE
            return SegformerImageProcessor(
                size={"height": square, "width": square},
                image_mean=backbone.mean,
                image_std=backbone.std,
                do_reduce_labels=False,
            )
        processor = from_pretrained(AutoImageProcessor, model)
        overrides = size_overrides(processor, side)
        # Some checkpoints (ADE20k's) shift mask values down by one to drop a background class; here mask value i
        # is always `data.labels[i]`.
        if getattr(processor, "do_reduce_labels", False):
            overrides["do_reduce_labels"] = False
        return from_pretrained(AutoImageProcessor, model, **overrides) if overrides else processor

    def data_path_kind(self) -> str | None:
        return None  # images/ and masks/ folders, or a table of image and mask paths

    def load_data_file(self, path: Path) -> Dataset:
        data = self.data
        if path.is_dir():
            return load_mask_folder(path, data.image_column, data.mask_column)
        table = resolve_image_paths(load_table_file(path), data.image_column, path)
        return resolve_image_paths(table, data.mask_column, path)

    def prepare(self, splits: Splits, processor: Any, label_names: list[str] | None = None) -> PreparedData:
        data = self.data
        names = list(label_names or data.labels or [])
        columns = {"image_column": data.image_column, "mask_column": data.mask_column}
        checked = {}
        warnings: list[str] = []
        # Every split is checked before any is preprocessed: a bad test mask stops the run before training.
        for role, dataset in splits.datasets.items():
            source = splits.sources[role]
            require_columns(dataset, columns, source)
            dataset = undecoded(dataset, data.image_column, source)
            dataset = undecoded(dataset, data.mask_column, source, "data.mask_column")
            dataset = dataset.select_columns([data.image_column, data.mask_column])
            found = check_pairs(
                dataset,
                data.image_column,
                data.mask_column,
                len(names),
                data.ignore_index,
                splits.locate(role),
                data.preprocessing_num_workers,
            )
            checked[role] = dataset
            if role == "train" and label_names is None:
                # A class no training pixel has (a 0/255 mask marks its foreground with ignore_index 255, say).
                warnings += missing_classes(names, found, source)
        result = PreparedData({}, processor, names, warnings)
        for role, dataset in checked.items():
            augment = paired_augmentation(input_size(processor)) if role == "train" and data.image_augment else None
            result.datasets[role] = dataset.with_transform(self._encoder(processor, augment, splits.sources[role]))
        return result

    def _encoder(self, processor: Any, augment: Callable | None, source: str) -> Callable[[dict], dict]:
        data = self.data

        def encode(batch: dict[str, list]) -> dict[str, Any]:
            # Files were verified up front; one changed or damaged since is still named, mid-run.
            images: list[Any] = [decode_checked(value, source) for value in batch[data.image_column]]
            # Class ids fit a byte: ignore_index is at most 255 and above every class id (both checked).
            masks: list[Any] = [read_mask(value, source).astype(np.uint8) for value in batch[data.mask_column]]
            if augment is not None:
                pairs = [augment(image, mask) for image, mask in zip(images, masks)]
                images, masks = [image for image, _ in pairs], [mask for _, mask in pairs]
            encoded = processor(images=images, segmentation_maps=masks, return_tensors="pt")
            return {"pixel_values": encoded["pixel_values"], "labels": encoded["labels"]}

        return encode

    def build_model(self, prepared: PreparedData) -> TaskModel:
        model_config = self.config.model
        if model_config.architecture:
            model = build_on_backbone(AutoModelForSemanticSegmentation, model_config, prepared.label_names)
        else:
            model = load_classifier(
                AutoModelForSemanticSegmentation, model_config, prepared.label_names, self.head_suffix
            )
        for key in IGNORE_INDEX_FIELDS:
            if hasattr(model.config, key):
                setattr(model.config, key, self.data.ignore_index)
        return model

    def load_run_model(self, run_dir: str) -> TaskModel:
        return load_run_model(AutoModelForSemanticSegmentation, run_dir, self.config.model.trust_remote_code)

    def trained_label_names(self, model: TaskModel) -> list[str]:
        return label_names_of(model)

    def checkpoint_label_names(self) -> list[str]:
        return trained_head_labels(self.config.model, self.head_suffix)

    def data_collator(self, processor: Any) -> Any:
        return DefaultDataCollator()

    def preprocess_logits_for_metrics(self) -> Callable[[Any, Any], Any] | None:
        return class_maps_of

    def compute_metrics(self, prediction: EvalPrediction, prepared: PreparedData) -> dict[str, float]:
        return self.metric("mean_iou").compute(
            predictions=logits_of(prediction.predictions),
            references=prediction.label_ids,
            num_labels=len(prepared.label_names),
            ignore_index=self.data.ignore_index,
            label_names=prepared.label_names,
        )
