"""What every task with a label head shares: building and reloading the model, and scoring its labels.

Text, image and audio classification predict one class (`data.problem_type: single_label`), any number of classes
(`multi_label`) or a number (`regression`); `ClassifierMixin` gives them the labels, loss, sampler and metrics of
each (their prediction records: pipelines/tasks/classifier_serving.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, cast

import numpy as np
import torch
from datasets import Dataset
from sklearn.metrics import precision_recall_curve
from sklearn.utils.class_weight import compute_class_weight
from torch import nn
from torch.nn import functional
from torch.utils.data import WeightedRandomSampler
from transformers import AutoConfig, EvalPrediction
from transformers.trainer_utils import PredictionOutput

from pipelines.adapt.strategies import strategy_for
from pipelines.config import ModelConfig, RecipeConfig
from pipelines.data.splits import Splits
from pipelines.errors import HubtuneError
from pipelines.models.loading import from_pretrained, load_classifier
from pipelines.runs.folder import label_names_of, load_run_model
from pipelines.tasks.base import PreparedData, TaskModel, confusion_artifact, logits_of
from pipelines.tasks.collate import IGNORE
from pipelines.tasks.data_sections import LabelledDataConfig
from pipelines.tasks.labels import (
    float_targets,
    label_ids,
    missing_classes,
    multi_hot,
    resolve_label_set,
    resolve_labels,
)

logger = logging.getLogger(__name__)

# transformers' `problem_type` for each of hubtune's: the saved config.json says how the head was trained.
TRANSFORMERS_PROBLEM_TYPES = {
    "single_label": "single_label_classification",
    "multi_label": "multi_label_classification",
    "regression": "regression",
}
# The model-config fields holding a regression's target scaling and a multi-label classifier's decision thresholds
# (name -> threshold, tuned or `data.threshold`): config.json carries them with the weights.
TARGET_SCALING = "hubtune_target_scaling"
THRESHOLDS = "hubtune_thresholds"
# Marks a target scaling that the saved weights already apply (`fold_target_scaling`).
IN_WEIGHTS = "in_weights"


def problem_type_of(config: RecipeConfig) -> str:
    return getattr(config.data, "problem_type", "single_label")


class LabelHeadMixin:
    """`build_model` / `load_run_model` for a `AutoModelFor...` whose head predicts the prepared label names."""

    auto_model: ClassVar[Any]
    head_suffix: ClassVar[str]
    config: RecipeConfig

    def build_model(self, prepared: PreparedData) -> TaskModel:
        problem_type = TRANSFORMERS_PROBLEM_TYPES[problem_type_of(self.config)]
        strategy_kwargs = strategy_for(self.config.adapt).model_load_kwargs()  # QLoRA's 4-bit base
        model = load_classifier(
            self.auto_model, self.config.model, prepared.label_names, self.head_suffix, problem_type, **strategy_kwargs
        )
        if prepared.target_scaling is not None:
            mean, std = prepared.target_scaling
            setattr(model.config, TARGET_SCALING, {"mean": mean, "std": std})
        return model

    def load_run_model(self, run_dir: str) -> TaskModel:
        return load_run_model(self.auto_model, run_dir, self.config.model.trust_remote_code)

    def trained_label_names(self, model: TaskModel) -> list[str]:
        return label_names_of(model)

    def checkpoint_label_names(self) -> list[str]:
        return trained_head_labels(self.config.model, self.head_suffix)


def output_layer(model: TaskModel) -> nn.Linear | None:
    """The output layer of a classifier's head: the last linear layer with one output per label and a bias (where
    PEFT keeps the head in `modules_to_save`, the trained copy, which comes after the original); None if none is."""
    found = [
        module
        for module in model.modules()
        if isinstance(module, nn.Linear) and module.out_features == model.config.num_labels and module.bias is not None
    ]
    return found[-1] if found else None


@torch.no_grad()
def fold_target_scaling(model: TaskModel) -> None:
    """A regression's target scaling folded into its output layer (w * std, b * std + mean), so that the model
    outputs values in the data's own units to any consumer (transformers' pipeline() returns them as they are); the
    config's scaling is marked as applied, so that hubtune does not apply it again."""
    scaling = getattr(model.config, TARGET_SCALING, None)
    if scaling is None or scaling.get(IN_WEIGHTS):
        return
    layer = output_layer(model)
    if layer is None:
        logger.warning(
            "no output layer with a bias found in %s: the target scaling stays in config.json (%s), and the "
            "saved model outputs standardised values",
            type(model).__name__,
            TARGET_SCALING,
        )
        return
    layer.weight.mul_(scaling["std"])
    layer.bias.mul_(scaling["std"]).add_(scaling["mean"])
    setattr(model.config, TARGET_SCALING, {**scaling, IN_WEIGHTS: True})


def trained_head_labels(model: ModelConfig, head_suffix: str) -> list[str]:
    """The label names of the checkpoint's trained head, where its architecture ends in `head_suffix` (a head of
    the task's kind); none for a model built new on a backbone (`model.architecture`) or a checkpoint without one."""
    if model.architecture:
        return []
    checkpoint = from_pretrained(AutoConfig, model)
    if not any(name.endswith(head_suffix) for name in checkpoint.architectures or []):
        return []
    return [str(name) for name in checkpoint.id2label.values()]


def class_weights(setting: Any, label_names: list[str], labels: Sequence[int]) -> list[float] | None:
    """`training.class_weights` as one weight per class: `balanced` is scikit-learn's n / (classes x count) over the
    training labels (ignored positions left out); a list must have one weight per label."""
    if setting is None:
        return None
    if setting != "balanced":
        if len(setting) != len(label_names):
            raise HubtuneError(
                f"recipe key 'training.class_weights' has {len(setting)} weights for {len(label_names)} classes "
                f"({', '.join(label_names)}); give one per class in this order"
            )
        return [float(weight) for weight in setting]
    seen = np.array([label for label in labels if label != IGNORE])
    present = np.unique(seen)
    weights = dict(zip(present.tolist(), compute_class_weight("balanced", classes=present, y=seen)))
    # A class without training examples cannot be balanced; it keeps the plain weight (it is warned about).
    return [float(weights.get(i, 1.0)) for i in range(len(label_names))]


class EpochSeededSampler(WeightedRandomSampler):
    """Draws by weight, with replacement, from a generator seeded by the run's seed and the epoch.

    Under DDP every rank draws the same sequence, and accelerate's batch sharding hands each rank its share of the
    batches: the ranks see different examples, together one epoch's draw. The Trainer calls `set_epoch`.
    """

    def __init__(self, weights: Sequence[float], seed: int):
        super().__init__(list(weights), num_samples=len(weights), replacement=True)
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.generator = torch.Generator().manual_seed(self.seed + epoch)


def best_thresholds(probabilities: np.ndarray, references: np.ndarray, label_names: list[str]) -> dict[str, float]:
    """Per label, the probability threshold with the best F1 on these predictions (0.5 where the label never
    occurs: no threshold is better there)."""
    found = {}
    for i, name in enumerate(label_names):
        if references[:, i].sum() == 0:
            found[name] = 0.5
            continue
        precision, recall, thresholds = precision_recall_curve(references[:, i], probabilities[:, i])
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        found[name] = float(thresholds[int(np.argmax(f1[:-1]))])
    return found


class ClassifierMixin(LabelHeadMixin):
    """Labels, loss, sampler, metrics and predictions of `data.problem_type`: single_label (accuracy, macro and
    per-class scores, a confusion matrix per split), multi_label (F1 at `data.threshold`, thresholds tuned on
    validation) or regression (MSE, MAE, Pearson, Spearman)."""

    class_weighted_loss = True
    primary_metric: str
    summary_metrics: tuple[str, ...]
    lower_is_better: tuple[str, ...]

    if TYPE_CHECKING:  # provided by Task, which every class using this mixin also derives from

        def metric(self, name: str) -> Any: ...

    def __init__(self, config: RecipeConfig):
        super().__init__(config)  # type: ignore[call-arg]  # Task.__init__, next in the task's MRO
        if problem_type_of(config) == "multi_label":
            self.primary_metric = "f1_micro"
            self.summary_metrics = ("f1_micro", "f1_macro", "f1_samples", "subset_accuracy")
        elif problem_type_of(config) == "regression":
            self.primary_metric = "mse"
            self.summary_metrics = ("mse", "mae", "pearson", "spearman")
            self.lower_is_better = ("loss", "mse", "mae")  # errors

    @property
    def labelled(self) -> LabelledDataConfig:
        """The recipe's `data` section (the task's own `data`, typed here by what this mixin reads of it)."""
        return cast(LabelledDataConfig, self.config.data)

    @property
    def problem_type(self) -> str:
        return self.labelled.problem_type

    def resolve_names(self, splits: Splits, known: list[str] | None) -> tuple[list[str], str]:
        """Label names in id order and how labels are written ('names' or 'ids'); a regression's one output is
        named after its column."""
        if self.problem_type == "single_label":
            return resolve_labels(self.labelled, splits, known)
        if self.problem_type == "multi_label":
            return resolve_label_set(self.labelled, splits, known), "names"
        return [self.labelled.label_column], "numbers"

    def split_labels(self, splits: Splits, role: str, dataset: Dataset, names: list[str], coding: str) -> list[Any]:
        """One split's labels as the model trains on them: class ids, multi-hot float vectors, or float targets."""
        data, locate = self.labelled, splits.locate(role)
        values = dataset[data.label_column]
        if self.problem_type == "multi_label":
            return multi_hot(values, data.label_column, names, data.label_separator, locate)
        if self.problem_type == "regression":
            return float_targets(values, data.label_column, locate)
        return label_ids(values, dataset.features[data.label_column], data.label_column, names, locate, coding)

    def learn_from_train(self, prepared: PreparedData, labels: list[Any], source: str) -> None:
        """What training needs from the train split's labels: warnings, class weights, target scaling, and the
        labels a balanced sampler draws by."""
        names = prepared.label_names
        if self.problem_type == "single_label":
            prepared.warnings += missing_classes(names, labels, source)
            prepared.class_weights = class_weights(self.config.training.get("class_weights"), names, labels)
            prepared.train_labels = list(labels)
        elif self.problem_type == "multi_label":
            prepared.warnings += missing_classes(names, np.flatnonzero(np.sum(labels, axis=0)).tolist(), source)
        elif self.labelled.scale_targets:
            std = float(np.std(labels))
            if std == 0:
                raise HubtuneError(f"{source}: every target is {labels[0]}; 'data.scale_targets' needs them to vary")
            prepared.target_scaling = (float(np.mean(labels)), std)

    def with_labels(self, dataset: Dataset, labels: list[Any]) -> Dataset:
        """`dataset` with `labels` in its `labels` column (replacing a label column of that name)."""
        if "labels" in dataset.column_names:
            dataset = dataset.remove_columns("labels")
        return dataset.add_column("labels", labels)

    def from_trained(self, prepared: PreparedData, model: TaskModel) -> PreparedData:
        scaling = getattr(model.config, TARGET_SCALING, None)
        if scaling is not None:
            prepared.target_scaling = (scaling["mean"], scaling["std"])
            prepared.scaling_in_weights = bool(scaling.get(IN_WEIGHTS))
        prepared.thresholds = self.class_thresholds(model, label_names_of(model))
        return prepared

    def class_thresholds(self, model: TaskModel, names: list[str]) -> list[float] | None:
        """The tuned per-class thresholds a trained multi-label model carries, in id order; None where it has none."""
        tuned = getattr(model.config, THRESHOLDS, None)
        return [tuned[name] for name in names] if tuned else None

    def above_threshold(self, probabilities: np.ndarray, thresholds: list[float] | None) -> np.ndarray:
        """Multi-label decisions: each class's probability against its tuned threshold, or `data.threshold`."""
        cut = np.asarray(thresholds) if thresholds is not None else self.labelled.threshold
        return probabilities >= cut

    def loss_function(self, prepared: PreparedData) -> Callable[[Any, Any], Any] | None:
        # The task computes these losses itself instead of the model: audio heads (wav2vec2, HuBERT, Whisper)
        # compute cross-entropy whatever the config's problem_type, and the targets may be standardised.
        if self.problem_type == "multi_label":
            return lambda logits, labels: functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        if self.problem_type == "regression":
            mean, std = prepared.target_scaling or (0.0, 1.0)
            # On standardised targets; outputs that are in the targets' units already are standardised too.
            outputs_mean, outputs_std = (mean, std) if prepared.scaling_in_weights else (0.0, 1.0)
            return lambda logits, labels: functional.mse_loss(
                (logits.view(-1) - outputs_mean) / outputs_std, (labels.view(-1).to(logits.dtype) - mean) / std
            )
        return weighted_cross_entropy(prepared.class_weights)

    def train_sampler(self, prepared: PreparedData, seed: int) -> Any:
        if self.labelled.sampler != "balanced":
            return None
        counts = np.bincount(prepared.train_labels, minlength=len(prepared.label_names))
        return EpochSeededSampler((1.0 / counts[prepared.train_labels]).tolist(), seed)

    def scores(self, logits: torch.Tensor | np.ndarray, prepared: PreparedData | None) -> np.ndarray:
        """Logits as what they predict: class probabilities (softmax, or sigmoid per label) or values in the targets'
        units (`prepared`'s target scaling applied, unless the weights apply it)."""
        logits = torch.as_tensor(logits).detach().float().cpu()
        if self.problem_type == "multi_label":
            return logits.sigmoid().numpy()
        if self.problem_type == "regression":
            values = logits.view(-1)
            if prepared is not None and prepared.target_scaling is not None and not prepared.scaling_in_weights:
                mean, std = prepared.target_scaling
                values = values * std + mean
            return values.numpy()
        return logits.softmax(-1).numpy()

    def compute_metrics(self, prediction: EvalPrediction, prepared: PreparedData) -> dict[str, float]:
        logits = logits_of(prediction.predictions)
        if self.problem_type == "multi_label":
            predicted = self.above_threshold(self.scores(logits, None), prepared.thresholds).astype(int)
            return self.metric("multi_label").compute(
                predictions=predicted,
                references=np.asarray(prediction.label_ids).astype(int),
                label_names=prepared.label_names,
            )
        if self.problem_type == "regression":
            return self.metric("regression").compute(
                predictions=self.scores(logits, prepared), references=prediction.label_ids
            )
        return self.metric("classification").compute(
            predictions=np.argmax(logits, axis=-1), references=prediction.label_ids, label_names=prepared.label_names
        )

    def saved_model(self, model: TaskModel) -> None:
        if self.problem_type == "multi_label" and getattr(model.config, THRESHOLDS, None) is None:
            # Every class's decision threshold goes where a consumer without hubtune looks (config.json), tuned or
            # not: transformers' pipeline() returns the probabilities and takes no decision.
            setattr(model.config, THRESHOLDS, dict.fromkeys(label_names_of(model), self.labelled.threshold))
        fold_target_scaling(model)

    def prediction_artifacts(self, output: PredictionOutput, prepared: PreparedData) -> dict[str, Any]:
        return confusion_artifact(output, prepared.label_names) if self.problem_type == "single_label" else {}

    def validation_results(self, output: PredictionOutput, prepared: PreparedData, model: TaskModel) -> dict[str, Any]:
        if self.problem_type != "multi_label":
            return {}
        probabilities = self.scores(logits_of(output.predictions), None)
        references = np.asarray(output.label_ids).astype(int)
        found = best_thresholds(probabilities, references, prepared.label_names)
        if self.labelled.tune_thresholds:
            prepared.thresholds = [found[name] for name in prepared.label_names]
            setattr(model.config, THRESHOLDS, found)
        return {"best_thresholds": found}


def weighted_cross_entropy(weights: list[float] | None) -> Callable[[Any, Any], Any] | None:
    """Cross-entropy with one weight per class (a weighted mean over the batch, positions labelled -100
    ignored), or None for the model's own unweighted loss."""
    if weights is None:
        return None
    table = torch.tensor(weights)

    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(),
            labels.reshape(-1),
            weight=table.to(logits.device),
            ignore_index=IGNORE,
        )

    return loss
