"""The shared Trainer wrapper: one `TrainingArguments` + `Trainer` build for every task."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch
from datasets import Dataset
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments

from pipelines.config import HUBTUNE_TRAINING_KEYS, RecipeConfig
from pipelines.errors import HubtuneError
from pipelines.tasks.base import Task


def training_arguments(config: RecipeConfig, output_dir: Path, has_validation: bool,
                       arguments_class: type[TrainingArguments] = TrainingArguments,
                       task_defaults: dict[str, Any] | None = None, **overrides: Any) -> TrainingArguments:
    values = dict(task_defaults or {})
    values.update({k: v for k, v in config.training.items() if k not in HUBTUNE_TRAINING_KEYS})
    values.update(overrides)
    if not has_validation:
        values["eval_strategy"] = "no"
        values["load_best_model_at_end"] = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        # Several processes and no GPU: only `use_cpu` makes the Trainer pick gloo (shared/ENVIRONMENT.md).
        values.setdefault("use_cpu", True)
    try:
        return arguments_class(output_dir=str(output_dir), seed=config.seed, data_seed=config.seed, **values)
    except (ValueError, TypeError) as error:
        raise HubtuneError(f"recipe section 'training' is not valid for TrainingArguments: {error}") from error


def build_trainer(task: Task, model: nn.Module, processor: Any, data: dict[str, Dataset], args: TrainingArguments,
                  callbacks: Sequence[TrainerCallback] = ()) -> Trainer:
    return task.trainer_class(
        model=model, args=args, processing_class=processor, data_collator=task.data_collator(processor),
        train_dataset=data.get("train"), eval_dataset=data.get("validation"),
        compute_metrics=task.compute_metrics, callbacks=list(callbacks))
