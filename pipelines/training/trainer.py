"""The shared Trainer wrapper: one `TrainingArguments` + `Trainer` build for every task."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from datasets import Dataset
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import Sampler
from transformers import (
    EarlyStoppingCallback,
    Seq2SeqTrainer,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    get_scheduler,
)
from transformers.trainer_optimizer import is_optimizer_factory

from pipelines.adapt.param_groups import GroupPlan, no_weight_decay_names, optimizer_groups
from pipelines.compat import mark_lr_scheduler_created
from pipelines.config import HUBTUNE_TRAINING_KEYS, RecipeConfig
from pipelines.errors import HubtuneError
from pipelines.models.groups import LayerGroups
from pipelines.processes import cpu_processes
from pipelines.runs.resume import find_resumable
from pipelines.tasks.base import PredictionStep, PreparedData, Task
from pipelines.training.custom import CustomPieces
from pipelines.training.eval_parts import eval_mode_parts
from pipelines.training.length_order import LengthAwareBatching
from pipelines.training.speed import speed_defaults
from pipelines.training.trackers import default_report_to


def early_stopping(config: RecipeConfig) -> list[TrainerCallback]:
    """transformers' `EarlyStoppingCallback` as the recipe's `training.early_stopping_*` keys ask (or none)."""
    patience = config.training.get("early_stopping_patience")
    if patience is None:
        return []
    threshold = config.training.get("early_stopping_threshold") or 0.0
    return [EarlyStoppingCallback(early_stopping_patience=patience, early_stopping_threshold=threshold)]


def training_arguments(
    config: RecipeConfig,
    output_dir: Path,
    has_validation: bool,
    arguments_class: type[TrainingArguments] = TrainingArguments,
    defaults: dict[str, Any] | None = None,
    **overrides: Any,
) -> TrainingArguments:
    """`defaults` (the task's `training_defaults`) give way to the recipe, `overrides` win over both."""
    values = training_values(config, has_validation, defaults, overrides)
    try:
        return arguments_class(output_dir=str(output_dir), seed=config.seed, data_seed=config.seed, **values)
    except (ValueError, TypeError) as error:
        raise HubtuneError(f"recipe section 'training' is not valid for TrainingArguments: {error}") from error


def training_values(
    config: RecipeConfig,
    has_validation: bool,
    defaults: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The TrainingArguments fields of a run (all but output_dir and the seeds): the task's defaults, then the
    device's speed settings (`pipelines.training.speed`), then the recipe, then `overrides`."""
    values = dict(defaults or {})
    values.update(speed_defaults(config.training))
    values.update({k: v for k, v in config.training.items() if k not in HUBTUNE_TRAINING_KEYS})
    if config.training.get("early_stopping_patience") is not None:
        # Early stopping keeps the best evaluated checkpoint as the run's model (checked at load).
        values["load_best_model_at_end"] = True
    values.update(overrides or {})
    values.setdefault("report_to", default_report_to())
    # Progress bars for a person at a terminal; quiet in CI logs and batch jobs.
    values.setdefault("disable_tqdm", not sys.stderr.isatty())
    if not has_validation:
        values["eval_strategy"] = "no"
        values["load_best_model_at_end"] = False
    if config.data.is_streamed():
        # By default accelerate lets the main process read a stream and send every rank its batches. Each rank
        # reads its own share instead: accelerate splits the stream by its file shards (as datasets'
        # `split_dataset_by_node` does), or, with fewer shards than ranks, keeps every n-th batch per rank.
        # Evaluation loaders still dispatch, so that no example is scored twice (`LengthAwareBatching._dispatched`).
        accelerator = dict(values.get("accelerator_config") or {})
        accelerator.setdefault("dispatch_batches", False)
        values["accelerator_config"] = accelerator
    if cpu_processes():
        # Several processes and no GPU: only `use_cpu` makes the Trainer pick gloo (docs/platform-notes.md).
        values.setdefault("use_cpu", True)
    return values


@dataclass
class GroupOptimization:
    """What the optimizer needs from adaptation: the layer groups, their LR plans and the schedule's unit."""

    groups: LayerGroups
    plans: dict[str, GroupPlan]
    unfreeze_unit: str = "epoch"


# Optimizer arguments by which upstream's optimizers take the whole model (or build per-parameter optimizers)
# instead of param groups: GaLore, APOLLO, LOMO and the layer-wise variants.
WHOLE_MODEL_OPTIMIZER_KEYS = {"params", "model", "optimizer_dict"}


class FreshOptimizerStateAtUnfreeze(TrainerCallback):
    """Clears a gated group's optimizer state (Adam moments, step count) at its unfreeze step.

    Before that step the group's learning rate is zero but it still gets gradients, which would otherwise fill
    its moments with history from steps it never took; clearing makes unfreezing equal to adding the group then.
    """

    def __init__(self, starts: list[int]):
        self.starts = starts

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        for group, start in zip(optimizer.param_groups, self.starts):
            if start > 0 and state.global_step == start:
                for parameter in group["params"]:
                    optimizer.state.pop(parameter, None)


def _gated(schedule: Callable[[int], float], start_step: int) -> Callable[[int], float]:
    """The Trainer's LR schedule for one param group, held at zero until the group's start step.

    A plain function, not a callable object: LambdaLR leaves functions out of its state_dict, so checkpoints
    stay loadable with torch.load(weights_only=True) and resume rebuilds the same gates from the recipe.
    """

    def lr_lambda(step: int) -> float:
        return schedule(step) if step >= start_step else 0.0

    return lr_lambda


class HubtuneTrainer(LengthAwareBatching):
    """transformers' Trainer with what a hubtune run adds, each from a collaborator given to `__init__`; where one
    is None the Trainer's own behaviour stands.

    - `optimization`: optimizer groups by layer group (LR decay, head scale, no decay for biases and norms), a
      per-group LR gate for gradual unfreezing, and frozen parts kept in eval mode. Every trainable parameter is
      in the optimizer from the start and only its learning rate waits, so DDP, the LR scheduler and checkpoint
      resume see one fixed set of parameters (the Trainer has no such hook).
    - `task_loss`: the task's `loss_function(logits, labels)` (a weighted cross-entropy, binary cross-entropy per
      label, MSE on standardised targets) instead of the model's own loss.
    - `train_sampler`: the task's sampler of training examples (a class-balanced one).
    - `train_collator`: training batches from it (padding-free packing); evaluation and prediction batches still
      come from `data_collator`, since metrics and prediction files need one row per example.
    - `task_prediction_step`: the task's evaluation of a batch (`Task.prediction_step`).
    - `sort_by_length` (`LengthAwareBatching`): evaluation and prediction read the examples from shortest to
      longest, and predictions come back in the data's order; for tasks whose examples vary in length.
    """

    def __init__(
        self,
        *,
        optimization: GroupOptimization | None = None,
        task_loss: Callable[[Any, Any], Any] | None = None,
        train_sampler: Sampler | None = None,
        train_collator: Callable | None = None,
        task_prediction_step: PredictionStep | None = None,
        hold_batchnorm_statistics: bool = False,
        **trainer_arguments: Any,
    ):
        self.optimization = optimization
        self.hold_batchnorm_statistics = hold_batchnorm_statistics
        self.task_loss = task_loss
        self.task_sampler = train_sampler
        self.train_collator = train_collator
        self.task_prediction_step = task_prediction_step
        self.eval_parts: list[nn.Module] | None = None
        if task_loss is not None:
            # An override of `compute_loss`, not the Trainer's `compute_loss_func` argument: with that argument the
            # Trainer takes the loss as already normalised over the whole accumulated batch, while the task's are
            # per-batch means, which it must divide by the gradient accumulation steps.
            self.loss_is_scaled_for_ga = False
        super().__init__(**trainer_arguments)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.optimization is not None or self.hold_batchnorm_statistics:
            # training_step has just put the whole model in train mode; frozen parts run in eval mode instead, so
            # their features are deterministic (no dropout) and BatchNorm keeps its pretrained statistics (every
            # BatchNorm layer, with adapt.hold_batchnorm_statistics).
            if self.eval_parts is None:
                self.eval_parts = eval_mode_parts(self.model, self.hold_batchnorm_statistics)
            for module in self.eval_parts:
                module.eval()
        if self.task_loss is None or "labels" not in inputs:  # no labels: prediction, with no loss to compute
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss = self.task_loss(outputs["logits"], labels)
        return (loss, outputs) if return_outputs else loss

    def train(self, *args: Any, **kwargs: Any):
        result = super().train(*args, **kwargs)
        # Mixed precision is for training: accelerate wrapped the model's forward in autocast. Unwrapped, the final
        # scores and the model a Python caller gets run as `predict` and pipeline() run the saved model, in its own
        # precision (docs/distributed.md).
        self.accelerator.unwrap_model(self.model, keep_fp32_wrapper=False)
        return result

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not bool(torch.isfinite(loss).all()):
            # The Trainer leaves a non-finite loss out of the logged average (`logging_nan_inf_filter`) and steps
            # the optimizer anyway: every weight turns NaN and the run "succeeds". Stop before that step.
            checkpoint, _ = find_resumable(Path(self.args.output_dir))
            kept = f"the last complete checkpoint is '{checkpoint}'" if checkpoint else "no checkpoint was saved yet"
            raise HubtuneError(
                f"the training loss is {float(loss.float().mean())} at step {self.state.global_step + 1}: training "
                f"stopped before that step changed the weights; {kept}. Look for non-finite or extreme inputs, or "
                "lower 'training.learning_rate'"
            )
        return loss

    def create_optimizer(self, model=None):
        """The optimizer `training.optim` names (upstream's choice of class and arguments, 8-bit and paged ones
        included), over hubtune's layer-group param groups instead of upstream's decay/no-decay pair."""
        if self.optimization is None:
            return super().create_optimizer(model)
        if self.optimizer is None:
            target = self.model if model is None else model
            if self.optimizer_cls_and_kwargs is not None:
                optimizer_cls, kwargs = self.optimizer_cls_and_kwargs
                kwargs = dict(kwargs)
            else:
                optimizer_cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, target)
            if is_optimizer_factory(optimizer_cls) or WHOLE_MODEL_OPTIMIZER_KEYS & kwargs.keys():
                raise HubtuneError(
                    f"optimizer '{self.args.optim}' ('training.optim') builds its own parameter "
                    "groups, so it cannot take hubtune's layer-group learning rates"
                )
            groups = optimizer_groups(
                target,
                self.optimization.groups,
                self.optimization.plans,
                self.args.learning_rate,
                self.args.weight_decay,
                no_weight_decay_names(target),
            )
            self.optimizer = optimizer_cls(groups, **kwargs)
        return self.optimizer

    def update_steps_per_epoch(self) -> int:
        # As Trainer counts them: the per-process batch count (DDP split and drop_last applied by the prepared
        # loader), and a last partial accumulation window still makes an update step.
        batches = len(self.get_train_dataloader())
        accumulation = self.args.gradient_accumulation_steps
        return max(1, batches // accumulation + int(batches % accumulation > 0))

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.optimization is None:
            return super().create_scheduler(num_training_steps, optimizer)
        if self.lr_scheduler is None:
            optimizer = optimizer or self.optimizer
            schedule = get_scheduler(
                self.args.lr_scheduler_type,
                optimizer=optimizer,
                num_warmup_steps=self.args.get_warmup_steps(num_training_steps),
                num_training_steps=num_training_steps,
                # TrainingArguments has already parsed a JSON string given here into a dict.
                scheduler_specific_kwargs=cast(dict | None, self.args.lr_scheduler_kwargs),
            )
            if any(group.get("unfreeze_at", 0) > 0 for group in optimizer.param_groups):
                if not isinstance(schedule, LambdaLR):
                    raise HubtuneError(
                        f"'adapt.unfreeze_schedule' needs a LambdaLR schedule; "
                        f"'training.lr_scheduler_type={self.args.lr_scheduler_type}' is not one"
                    )
                unit = 1 if self.optimization.unfreeze_unit == "step" else self.update_steps_per_epoch()
                starts = [round(group["unfreeze_at"] * unit) for group in optimizer.param_groups]
                schedule = LambdaLR(optimizer, [_gated(schedule.lr_lambdas[0], start) for start in starts])
                self.add_callback(FreshOptimizerStateAtUnfreeze(starts))
            self.lr_scheduler = schedule
            mark_lr_scheduler_created(self)
        return self.lr_scheduler

    def get_train_dataloader(self):
        if self.train_collator is None:
            return super().get_train_dataloader()
        # The Trainer builds every loader from `self.data_collator`; training swaps in its own for that one build.
        collator = self.data_collator
        self.data_collator = self.train_collator
        try:
            return super().get_train_dataloader()
        finally:
            self.data_collator = collator

    def training_sampler(self, dataset=None):
        # Through the Trainer's own sampler hook, so that accelerate still shards the task sampler's batches.
        return super().training_sampler(dataset) if self.task_sampler is None else self.task_sampler

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None, **kwargs):
        standard = functools.partial(super().prediction_step, ignore_keys=ignore_keys, **kwargs)
        if self.task_prediction_step is None:
            return standard(model, inputs, prediction_loss_only)
        return self.task_prediction_step(self, model, inputs, prediction_loss_only, standard)


class HubtuneSeq2SeqTrainer(HubtuneTrainer, Seq2SeqTrainer):
    """`HubtuneTrainer` over transformers' `Seq2SeqTrainer`, which evaluates by generating (`trainer_base`
    "seq2seq")."""


# The Trainer class for each `Task.trainer_base`.
TRAINERS: dict[str, type[HubtuneTrainer]] = {"trainer": HubtuneTrainer, "seq2seq": HubtuneSeq2SeqTrainer}


def build_trainer(
    task: Task,
    model: nn.Module,
    prepared: PreparedData,
    args: TrainingArguments,
    callbacks: Sequence[TrainerCallback] = (),
    optimization: GroupOptimization | None = None,
    data_collator: Callable | None = None,
    datasets: dict[str, Dataset] | None = None,
    custom: CustomPieces | None = None,
) -> HubtuneTrainer:
    """The task's Trainer on `prepared` data; `datasets` (with their `data_collator`) stand in for the prepared
    splits where a run trains on something else, such as cached backbone features. `custom` holds the pieces that
    research code gave `Recipe.run` in place of (or, for metrics, beside) the task's."""
    custom = custom or CustomPieces()
    # Cached features and a custom collator make every batch themselves, training batches included.
    own_batches = datasets is not None or custom.data_collator is not None
    train_collator = None if own_batches else task.train_data_collator(prepared.processor, model)
    sampler = task.train_sampler(prepared, args.seed)
    loss = custom.loss or task.loss_function(prepared)
    datasets = prepared.datasets if datasets is None else datasets
    return TRAINERS[task.trainer_base](
        optimization=optimization,
        task_loss=loss,
        train_sampler=sampler,
        train_collator=train_collator,
        task_prediction_step=task.prediction_step(),
        hold_batchnorm_statistics=task.config.adapt.hold_batchnorm_statistics,
        # Cached backbone features have no input lengths to sort by.
        sort_by_length=task.variable_length and data_collator is None,
        length_step=task.length_step,
        model=model,
        args=args,
        processing_class=prepared.processor,
        data_collator=data_collator or custom.data_collator or task.data_collator(prepared.processor),
        train_dataset=datasets.get("train"),
        eval_dataset=datasets.get("validation"),
        compute_metrics=custom.metrics(functools.partial(task.compute_metrics, prepared=prepared)),
        preprocess_logits_for_metrics=task.preprocess_logits_for_metrics(),
        callbacks=list(callbacks),
    )


def save_full_model(trainer: Trainer, folder: Path) -> None:
    """`trainer.save_model(folder)` with full weights (or a PEFT adapter with its head) under FSDP too.

    Under FSDP, `Trainer.save_model` writes weights only for the `FULL_STATE_DICT` type; with the sharded type
    (accelerate_configs/fsdp.yaml, whose checkpoints resume faster) it writes nothing, and the trained model
    would be lost. The final save switches to the full type, which makes the Trainer gather the weights with
    `accelerator.get_state_dict` (FSDP1 and FSDP2) and save them from the main process; every rank takes part.
    """
    plugin = trainer.accelerator.state.fsdp_plugin if trainer.is_fsdp_enabled else None
    if plugin is None or "FULL_STATE_DICT" in str(plugin.state_dict_type):
        trainer.save_model(str(folder))
        return
    sharded = plugin.state_dict_type
    plugin.set_state_dict_type("FULL_STATE_DICT")
    try:
        trainer.save_model(str(folder))
    finally:
        plugin.set_state_dict_type(sharded)  # what later checkpoints of this Trainer are saved as
