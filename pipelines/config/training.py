"""The `training` section: TrainingArguments fields (checked against the installed transformers) plus hubtune's
own keys, with the defaults chosen for fine-tuning and the value rules that TrainingArguments itself lacks."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from pipelines.config.builder import closest, fits_type
from pipelines.errors import HubtuneError

WHOLE_MODEL_OPTIMIZERS = ("galore_", "apollo_", "lomo", "adalomo")

# Keys of `training` that hubtune handles itself rather than passing to TrainingArguments.
# hubtune's own keys in the `training` section (not TrainingArguments fields), with the type each takes.
HUBTUNE_TRAINING_TYPES: dict[str, Any] = {
    "resume": bool,
    "speed_defaults": bool,  # hubtune's speed settings (pipelines/training/speed.py); false: none of them
    "gpu_defaults": bool,  # speed_defaults' former name, still read
    "early_stopping_patience": int,  # evaluations without improvement before training stops
    "early_stopping_threshold": float,  # how much the metric must improve to count
    "class_weights": str | list,  # `balanced`, or one weight per class in id order (weighted cross-entropy)
}
HUBTUNE_TRAINING_KEYS = set(HUBTUNE_TRAINING_TYPES)

# The experiment trackers `training.report_to` may name, with the package each needs (checked when a run starts).
TRACKERS = {"tensorboard": "tensorboard", "trackio": "trackio", "mlflow": "mlflow", "wandb": "wandb"}

# Defaults that differ from TrainingArguments' own, chosen for fine-tuning a pretrained encoder.
TRAINING_DEFAULTS: dict[str, Any] = {
    "learning_rate": 5e-5,
    "per_device_train_batch_size": 16,
    "per_device_eval_batch_size": 64,
    "num_train_epochs": 3,
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "save_total_limit": 2,
    "logging_steps": 10,
    # A sequence or token classifier under DDP logs doubled losses and gets doubled gradients with the
    # default True (docs/platform-notes.md); per-device averaging is the correct choice for these tasks.
    "average_tokens_across_devices": False,
    # Every trainable parameter of these models takes part in each forward; the search costs a graph walk.
    "ddp_find_unused_parameters": False,
}


def _training_argument_types() -> dict[str, Any]:
    # Seq2SeqTrainingArguments is TrainingArguments plus the generation fields sequence-to-sequence tasks use.
    from transformers import Seq2SeqTrainingArguments

    hints = typing.get_type_hints(Seq2SeqTrainingArguments)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(Seq2SeqTrainingArguments) if f.init}


def validate_training(training: dict[str, Any]) -> None:
    if training.get("push_to_hub"):
        raise HubtuneError("use 'hub.push' (pushes the finished run folder), not 'training.push_to_hub'")
    types = _training_argument_types()
    valid = set(types) | HUBTUNE_TRAINING_KEYS
    for key, value in training.items():
        if key not in valid:
            raise HubtuneError(f"unknown recipe key 'training.{key}'{closest(key, valid, 'training.')}")
        if key == "output_dir":
            raise HubtuneError(
                "set the run folder with the top-level recipe key 'output_dir', not 'training.output_dir'"
            )
        if key not in types:
            continue
        expected = getattr(types[key], "__name__", str(types[key]).replace("typing.", ""))
        takes_null = types[key] is Any or type(None) in typing.get_args(types[key])
        if value is None and not takes_null:
            # An override written `key=` or `key=null`: TrainingArguments would take None and fail mid-run.
            raise HubtuneError(
                f"recipe key 'training.{key}' must be {expected}, got null (an empty override?); remove the key "
                "for its default"
            )
        if not fits_type(value, types[key]):
            raise HubtuneError(f"recipe key 'training.{key}' must be {expected}, got {value!r}")
    for key, kind in HUBTUNE_TRAINING_TYPES.items():
        if key in training and not fits_type(training[key], kind):
            expected = "true or false" if kind is bool else kind.__name__
            raise HubtuneError(f"recipe key 'training.{key}' must be {expected}, got {training[key]!r}")
    if {"speed_defaults", "gpu_defaults"} <= training.keys() and training["speed_defaults"] != training["gpu_defaults"]:
        raise HubtuneError(
            "recipe keys 'training.speed_defaults' and 'training.gpu_defaults' (its former name) disagree; keep "
            "'training.speed_defaults'"
        )
    _check_training_values(training)
    _check_class_weights(training)
    _check_early_stopping(training)
    _check_optimizer(training)
    _check_report_to(training)


def _check_training_values(training: dict[str, Any]) -> None:
    """Values TrainingArguments accepts but that fail later (a zero batch size in the first step, an evaluation
    batch size at the end of the first epoch) or train nothing (zero epochs): refused at load instead."""

    def number(key: str, default: float) -> float:
        value = training.get(key, default)
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else default

    def refuse(key: str, rule: str) -> None:
        raise HubtuneError(f"recipe key 'training.{key}' must be {rule}, got {training[key]!r}")

    for key in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        if number(key, 1) < 1:
            refuse(key, "at least 1")
    max_steps = number("max_steps", -1)
    if max_steps == 0 or max_steps < -1:
        refuse("max_steps", "positive (or -1 to train for 'num_train_epochs')")
    if max_steps == -1 and number("num_train_epochs", 1) <= 0:
        refuse("num_train_epochs", "positive (the run would train nothing)")
    if number("learning_rate", 1) <= 0:
        refuse("learning_rate", "positive")
    for key in ("warmup_steps", "weight_decay"):
        if number(key, 0) < 0:
            refuse(key, "at least 0")
    if number("save_total_limit", 1) < 1:
        refuse("save_total_limit", "at least 1 (or null to keep every checkpoint)")
    for key in ("logging_steps", "eval_steps", "save_steps"):
        if number(key, 1) <= 0:
            refuse(key, "positive")


def _check_class_weights(training: dict[str, Any]) -> None:
    """`balanced` or a list of positive numbers; the list's length is checked against the label set at prepare."""
    weights = training.get("class_weights")
    if weights is None or weights == "balanced":
        return
    if not isinstance(weights, list) or not weights:
        raise HubtuneError(
            f"recipe key 'training.class_weights' must be balanced or a list of weights (one per class), got {weights!r}"
        )
    for i, weight in enumerate(weights):
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise HubtuneError(f"recipe key 'training.class_weights[{i}]' must be a number >= 0, got {weight!r}")


def _check_early_stopping(training: dict[str, Any]) -> None:
    """Early stopping judges evaluations by one metric and keeps the best checkpoint: both must be there."""
    patience = training.get("early_stopping_patience")
    if patience is None:
        if training.get("early_stopping_threshold") is not None:
            raise HubtuneError("'training.early_stopping_threshold' needs 'training.early_stopping_patience'")
        return
    if patience < 1:
        raise HubtuneError(f"recipe key 'training.early_stopping_patience' must be at least 1, got {patience}")
    if (training.get("early_stopping_threshold") or 0.0) < 0:
        raise HubtuneError("recipe key 'training.early_stopping_threshold' must be at least 0")
    evaluation = training.get("eval_strategy", TRAINING_DEFAULTS["eval_strategy"])
    if evaluation == "no":
        raise HubtuneError("'training.early_stopping_patience' needs evaluations: set 'training.eval_strategy'")
    if not training.get("metric_for_best_model"):
        raise HubtuneError(
            "'training.early_stopping_patience' needs the metric it watches: set 'training.metric_for_best_model' "
            "(e.g. accuracy, f1_macro, loss; 'greater_is_better' follows from it)"
        )
    if training.get("load_best_model_at_end") is False:
        raise HubtuneError(
            "'training.early_stopping_patience' keeps the best checkpoint as the run's model; "
            "'training.load_best_model_at_end: false' contradicts it"
        )
    saving = training.get("save_strategy", TRAINING_DEFAULTS["save_strategy"])
    if saving != evaluation:
        raise HubtuneError(
            f"'training.early_stopping_patience' keeps the best evaluated checkpoint, so 'training.save_strategy' "
            f"({saving}) must equal 'training.eval_strategy' ({evaluation})"
        )


def _check_optimizer(training: dict[str, Any]) -> None:
    optim = str(training.get("optim", ""))
    if optim.startswith(WHOLE_MODEL_OPTIMIZERS):
        raise HubtuneError(
            f"recipe key 'training.optim': '{optim}' builds its own parameter groups from the whole "
            "model, so it cannot take hubtune's layer-group learning rates; choose e.g. adamw_torch, "
            "adafactor or an 8-bit/paged AdamW"
        )


def _check_report_to(training: dict[str, Any]) -> None:
    """`none`, or tracker names from TRACKERS (one, or a list): what hubtune logs to and tests."""
    value = training.get("report_to")
    if value is None or value == "none":
        return
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names:
        raise HubtuneError(f"recipe key 'training.report_to' must be a tracker name or a list of them, got {value!r}")
    for name in names:
        if name not in TRACKERS:
            raise HubtuneError(
                f"recipe key 'training.report_to' names '{name}'{closest(str(name), [*TRACKERS, 'none'], noun='values')}"
            )
