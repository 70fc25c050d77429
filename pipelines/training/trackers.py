"""Experiment trackers a run logs to (`training.report_to`), through transformers' own integrations.

TensorBoard is part of the default install, so a run logs its training loss and every evaluation metric to
`<run folder>/runs/` with no setting; trackio joins it when installed. MLflow and Weights & Biases are named in
the recipe. On top of what transformers logs (the TrainingArguments and the model config), the recipe itself
goes to MLflow as parameters, so a run there can be told from its siblings by the keys a user actually set.
"""

from __future__ import annotations

import importlib.util
import json
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from pipelines.config import TRACKERS, RecipeConfig

# Trackers that write local files and need no account or server: the default when installed.
LOCAL_TRACKERS = ("tensorboard", "trackio")
# MLflow caps a parameter value at 6,000 characters; a longer recipe value (a long label list) is cut there.
MLFLOW_PARAM_LIMIT = 6000


def installed_local_trackers() -> list[str]:
    return [name for name in LOCAL_TRACKERS if importlib.util.find_spec(TRACKERS[name]) is not None]


def default_report_to() -> list[str] | str:
    """What `training.report_to` is when the recipe does not set it."""
    return installed_local_trackers() or "none"


def named_trackers(report_to: Any) -> list[str]:
    """The trackers a `report_to` value names ("none" names none)."""
    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    return [name for name in names if name != "none"]


def flat_recipe(values: dict[str, Any], prefix: str = "recipe.") -> dict[str, str]:
    """The recipe as dotted key -> text, the shape experiment trackers take parameters in."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            flat.update(flat_recipe(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.dumps(value)[:MLFLOW_PARAM_LIMIT]
    return flat


class RecipeParameters(TrainerCallback):
    """Logs the recipe to the MLflow run that transformers' MLflowCallback opened at the start of training (it
    runs first: the Trainer puts reporting callbacks before the ones a caller passes)."""

    def __init__(self, config: RecipeConfig):
        self.params = flat_recipe(config.to_dict())

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not state.is_world_process_zero or "mlflow" not in named_trackers(args.report_to):
            return
        import mlflow  # installed: checked when the run started (pipelines.training.machine)

        if mlflow.active_run() is not None:
            mlflow.log_params(self.params)


def tracker_callbacks(config: RecipeConfig) -> list[TrainerCallback]:
    return [RecipeParameters(config)] if "mlflow" in named_trackers(config.training.get("report_to")) else []
