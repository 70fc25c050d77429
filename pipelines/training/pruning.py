"""Pruning a search trial while it trains: each evaluation's score goes to the trial, which may ask to stop.

The trial is any object with Optuna's `report(value, step)` and `should_prune()` (an `optuna.Trial`); this layer
imports no Optuna and knows nothing of the search around it. Transformers' own Optuna hook lives in
`Trainer.hyperparameter_search`, which a hubtune search does not use (pipelines.runner.search says why), so the
two calls are made here.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from transformers import TrainerCallback

logger = logging.getLogger(__name__)


class PrunableTrial(Protocol):
    def report(self, value: float, step: int) -> None: ...

    def should_prune(self) -> bool: ...


class ReportToTrial(TrainerCallback):
    """After every evaluation, report `metric` at the training step; when the trial's pruner says so, training
    stops at once (the Trainer ends after this step, without another evaluation) and `pruned_at` holds the step."""

    def __init__(self, trial: PrunableTrial, metric: str) -> None:
        self.trial = trial
        self.metric = metric
        self.pruned_at: int | None = None
        self.reported: dict[int, float] = {}

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None, **kwargs):
        if metrics is None or self.metric not in metrics or not state.is_world_process_zero:
            return control
        value = float(metrics[self.metric])
        self.trial.report(value, state.global_step)
        self.reported[state.global_step] = value
        if self.trial.should_prune():
            logger.info("pruned at step %d: %s %.4f", state.global_step, self.metric, value)
            self.pruned_at = state.global_step
            control.should_training_stop = True
            control.should_save = False
        return control
