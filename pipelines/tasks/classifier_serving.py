"""The serving half every classifier (text, image, audio) shares: logits -> the prediction record of its
`data.problem_type`, and the line `hubtune predict` prints for it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch

from pipelines.runs.folder import label_names_of
from pipelines.tasks.base import PreparedData
from pipelines.tasks.classifier import ClassifierMixin
from pipelines.tasks.serving_base import Batch, OnnxAxes, TaskServing, dynamic_axes

ClassifierT = TypeVar("ClassifierT", bound=ClassifierMixin)


def label_predictions(
    inputs: list[str],
    probabilities: Sequence[torch.Tensor] | torch.Tensor,
    label_names: list[str],
    top_k: int | None = None,
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


class ClassifierServing(TaskServing[ClassifierT]):
    """Records of a label head's logits: the class (single_label), every class at or above its threshold (tuned,
    or `data.threshold`) with every class's probability (multi_label), or the value (regression). Subclasses
    implement `preprocess`; the model's one forward pass gives the logits, so the model exports to ONNX."""

    # Label sets too large to list in every record keep the k most probable (`top`) instead of all (`scores`).
    top_k: ClassVar[int | None] = None

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.model(**batch.features).logits

    def postprocess(self, batch: Batch, outputs: torch.Tensor) -> list[dict[str, Any]]:
        return self.records(batch.inputs, outputs)

    def records(self, inputs: list[str], logits: torch.Tensor) -> list[dict[str, Any]]:
        task, names = self.task, label_names_of(self.model)
        if task.problem_type == "single_label":
            return label_predictions(inputs, logits.softmax(-1), names, self.top_k)
        if task.problem_type == "regression":
            trained = task.from_trained(PreparedData({}, None), self.model)
            return [{"input": item, "value": float(value)} for item, value in zip(inputs, task.scores(logits, trained))]
        records = []
        thresholds = task.class_thresholds(self.model, names)
        for item, row in zip(inputs, task.scores(logits, None)):
            chosen = task.above_threshold(row, thresholds)
            above = [i for i in np.argsort(-row) if chosen[i]]
            records.append(
                {
                    "input": item,
                    "labels": [names[i] for i in above],
                    "scores": {name: float(p) for name, p in zip(names, row)},
                }
            )
        return records

    def format(self, prediction: dict[str, Any]) -> str:
        if self.task.problem_type == "regression":
            return f"{prediction['value']:.4g}\t{prediction['input']}"
        if self.task.problem_type == "multi_label":
            found = ", ".join(f"{name} {prediction['scores'][name]:.3f}" for name in prediction["labels"]) or "-"
            return f"{found}\t{prediction['input']}"
        return f"{prediction['label']}\t{prediction['score']:.3f}\t{prediction['input']}"

    def onnx_axes(self, features: Mapping[str, torch.Tensor]) -> OnnxAxes:
        return dynamic_axes(features)
