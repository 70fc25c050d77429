"""What every task with a label head shares: building and reloading the model, and single-label scoring."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from torch import nn
from transformers import EvalPrediction
from transformers.trainer_utils import PredictionOutput

from pipelines.metrics import load_metric
from pipelines.modeling import load_classifier
from pipelines.run_folder import label_names_of, load_run_model
from pipelines.tasks.base import confusion_artifact, logits_of


class LabelHeadMixin:
    """`build_model` / `load_run_model` for a `AutoModelFor...` whose head predicts `label_names`."""

    auto_model: ClassVar[Any]
    head_suffix: ClassVar[str]  # architecture names ending in it carry a trained head of this kind
    label_names: list[str]

    def build_model(self) -> nn.Module:
        return load_classifier(self.auto_model, self.config.model, self.label_names, self.head_suffix)

    def load_run_model(self, run_dir: str) -> nn.Module:
        model = load_run_model(self.auto_model, run_dir, self.config.model.trust_remote_code)
        self.label_names = label_names_of(model)
        return model


class SingleLabelMixin(LabelHeadMixin):
    """Single-label classification: accuracy, macro and per-class scores, and a confusion matrix per split."""

    _classification_metric = None

    def compute_metrics(self, prediction: EvalPrediction) -> dict[str, float]:
        if self._classification_metric is None:
            self._classification_metric = load_metric("classification")
        predicted = np.argmax(logits_of(prediction.predictions), axis=-1)
        return self._classification_metric.compute(predictions=predicted, references=prediction.label_ids,
                                                   label_names=self.label_names)

    def prediction_artifacts(self, output: PredictionOutput) -> dict[str, Any]:
        return confusion_artifact(output, self.label_names)
