"""What every task with a label head shares: building and reloading the model, and single-label scoring."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from transformers import EvalPrediction
from transformers.trainer_utils import PredictionOutput

from pipelines.adapt.adapters import quantization_kwargs
from pipelines.config import RecipeConfig
from pipelines.modeling import load_classifier
from pipelines.run_folder import label_names_of, load_run_model
from pipelines.tasks.base import PreparedData, TaskModel, confusion_artifact, logits_of


class LabelHeadMixin:
    """`build_model` / `load_run_model` for a `AutoModelFor...` whose head predicts the prepared label names."""

    auto_model: ClassVar[Any]
    head_suffix: ClassVar[str]
    config: RecipeConfig

    def build_model(self, prepared: PreparedData) -> TaskModel:
        quantization = quantization_kwargs(self.config.adapt.peft)  # QLoRA's 4-bit base
        return load_classifier(
            self.auto_model, self.config.model, prepared.label_names, self.head_suffix, **quantization
        )

    def load_run_model(self, run_dir: str) -> TaskModel:
        return load_run_model(self.auto_model, run_dir, self.config.model.trust_remote_code)

    def trained_label_names(self, model: TaskModel) -> list[str]:
        return label_names_of(model)


def label_predictions(
    inputs: list[str], probabilities: Sequence[torch.Tensor], label_names: list[str], top_k: int | None = None
) -> list[dict[str, Any]]:
    """`hubtune predict`'s record of one single-label prediction per input: the best label, its probability, and
    every label's (`scores`) or, with `top_k` for label sets too large to list, the k most probable (`top`)."""
    records = []
    for item, row in zip(inputs, probabilities):
        best = int(row.argmax())
        record = {"input": item, "label": label_names[best], "score": float(row[best])}
        if top_k is None:
            record["scores"] = {name: float(p) for name, p in zip(label_names, row)}
        else:
            top = row.topk(min(top_k, len(row)))
            record["top"] = {label_names[int(i)]: float(p) for p, i in zip(top.values, top.indices)}
        records.append(record)
    return records


class SingleLabelMixin(LabelHeadMixin):
    """Single-label classification: accuracy, macro and per-class scores, and a confusion matrix per split."""

    if TYPE_CHECKING:  # provided by Task, which every class using this mixin also derives from

        def metric(self, name: str) -> Any: ...

    def compute_metrics(self, prediction: EvalPrediction, prepared: PreparedData) -> dict[str, float]:
        predicted = np.argmax(logits_of(prediction.predictions), axis=-1)
        return self.metric("classification").compute(
            predictions=predicted, references=prediction.label_ids, label_names=prepared.label_names
        )

    def prediction_artifacts(self, output: PredictionOutput, prepared: PreparedData) -> dict[str, Any]:
        return confusion_artifact(output, prepared.label_names)
