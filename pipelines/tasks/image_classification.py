"""Image classification on transformers (ViT, ConvNeXt, Swin, ResNet…) and timm backbones.

timm checkpoints (`timm/resnet18.a1_in1k`, `hf-hub:timm/…`, or a folder with timm's `config.json`) load
through transformers' own timm integration (`TimmWrapperForImageClassification`), so both families share
the Trainer, the head replacement, `save_pretrained` and the run folder. Preprocessing comes from the
checkpoint: its `AutoImageProcessor` for transformers models, timm's `resolve_data_config` +
`create_transform` (inside `TimmWrapperImageProcessor`) for timm models.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers import (
    AutoImageProcessor,
    AutoModelForImageClassification,
    DefaultDataCollator,
    EvalPrediction,
)

from pipelines.config import option
from pipelines.data.images import (
    check_images,
    decode_checked,
    load_image_folder,
    predict_images,
    resolve_image_paths,
    undecoded,
    write_probe_images,
)
from pipelines.data.pixels import pixel_transform, size_timm_config, sized_processor
from pipelines.data.splits import Locate, Splits, load_table_file, require_columns
from pipelines.errors import HubtuneError
from pipelines.models.loading import from_pretrained
from pipelines.tasks.base import PreparedData, Task, TaskModel, logits_of
from pipelines.tasks.classifier import ClassifierMixin
from pipelines.tasks.classifier_serving import ClassifierServing
from pipelines.tasks.data_sections import LabelledDataConfig
from pipelines.tasks.serving_base import Batch, file_paths

TOP_K = 5


@dataclass
class ImageDataConfig(LabelledDataConfig):
    image_column: str = option("image", "an Image feature, or a path relative to the csv/jsonl file")
    image_augment: bool = option(
        True, "random crop and flip of training images (timm models: their own train transform)"
    )
    image_size: int | None = option(
        None, "square input side instead of the checkpoint's (e.g. for small source images)"
    )

    def validate(self) -> None:
        super().validate()
        if self.image_size is not None and self.image_size < 1:
            raise HubtuneError(
                f"recipe key 'data.image_size' must be a positive number of pixels, got {self.image_size}"
            )


class ImageClassificationServing(ClassifierServing["ImageClassification"]):
    input_kind = "path"
    input_column_key = "image_column"
    top_k = TOP_K

    def data_inputs(self, values: list[Any], locate: Locate, column: str) -> list[str]:
        return file_paths(values, locate, column, "image")

    def probe_inputs(self, folder: Path, count: int) -> list[str]:
        return write_probe_images(folder, count)

    def preprocess(self, inputs: list[str]) -> Batch:
        to_pixels = pixel_transform(self.processor, False, self.task.data.image_size)
        return Batch(inputs, {"pixel_values": to_pixels(predict_images(inputs))})


class ImageClassification(ClassifierMixin, Task[ImageDataConfig]):
    name = "image-classification"
    data_config = ImageDataConfig
    auto_model = AutoModelForImageClassification
    head_suffix = "ForImageClassification"
    pipeline_tag = "image-classification"
    serving = ImageClassificationServing
    # Images are decoded per batch by a dataset transform from the (undecoded) image column, which the
    # Trainer would otherwise drop for not being a model input.
    training_defaults = {"remove_unused_columns": False}

    def load_processor(self, source: str | None = None) -> Any:
        return from_pretrained(AutoImageProcessor, self.config.model, source)

    def saved_processor(self, processor: Any, model: TaskModel) -> Any:
        return sized_processor(processor, self.data.image_size)

    def saved_model(self, model: TaskModel) -> None:
        super().saved_model(model)
        size_timm_config(model.config, self.data.image_size)

    def data_path_kind(self) -> str | None:
        return None  # a class-per-folder tree, or a table of image paths

    def load_data_file(self, path: Path) -> Dataset:
        data = self.data
        if path.is_dir():
            return load_image_folder(path, data.image_column, data.label_column)
        return resolve_image_paths(load_table_file(path), data.image_column, path)

    def prepare(self, splits: Splits, processor: Any, label_names: list[str] | None = None) -> PreparedData:
        data = self.data
        columns = {"image_column": data.image_column, "label_column": data.label_column}
        checked = {}
        for role, dataset in splits.datasets.items():
            require_columns(dataset, columns, splits.sources[role])
            checked[role] = undecoded(dataset, data.image_column, splits.sources[role])
        names, coding = self.resolve_names(splits, label_names)
        if len(names) < 2 and self.problem_type != "regression":
            raise HubtuneError(
                f"{splits.sources['train']}: column '{data.label_column}' has only the class "
                f"{names}; a classifier needs at least two"
            )
        result = PreparedData({}, processor, names)
        for role, dataset in checked.items():
            labels = self.split_labels(splits, role, dataset, names, coding)
            if role == "train":
                self.learn_from_train(result, labels, splits.sources[role])
            dataset = self.with_labels(dataset, labels).select_columns([data.image_column, "labels"])
            check_images(dataset, data.image_column, splits.locate(role), data.preprocessing_num_workers)
            to_pixels = pixel_transform(processor, role == "train" and data.image_augment, data.image_size)

            def transform(batch: dict[str, list], to_pixels=to_pixels, source=splits.sources[role]) -> dict[str, Any]:
                # Headers were verified up front; a file changed or damaged since is still named, mid-run.
                images = [decode_checked(value, source) for value in batch[data.image_column]]
                return {"pixel_values": to_pixels(images), "labels": batch["labels"]}

            result.datasets[role] = dataset.with_transform(transform)
        return result

    def data_collator(self, processor: Any) -> Any:
        return DefaultDataCollator()

    def compute_metrics(self, prediction: EvalPrediction, prepared: PreparedData) -> dict[str, float]:
        results = super().compute_metrics(prediction, prepared)
        if self.problem_type == "single_label" and len(prepared.label_names) > TOP_K:
            results.update(
                self.metric("top_k_accuracy").compute(
                    predictions=logits_of(prediction.predictions), references=prediction.label_ids, k=TOP_K
                )
            )
        return results
