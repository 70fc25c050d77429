"""`Recipe`: a validated recipe config plus the one run path every task shares."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments, set_seed

from pipelines.adapt import format_table, parameter_table, plan_groups
from pipelines.adapt.strategies import ProbeStage, Strategy, strategy_for
from pipelines.config import RecipeConfig, dump_recipe_config, load_recipe_config
from pipelines.data.in_memory import GivenData, InMemoryData, read_in_memory
from pipelines.data.splits import shuffle_stream, streamed
from pipelines.errors import HubtuneError, require_path
from pipelines.processes import process_state
from pipelines.runner.failure import RunEnding
from pipelines.runner.plan import RunPlan, plan_run
from pipelines.runner.result import RunResult
from pipelines.runs.folder import PARAMETERS_FILE, RECIPE_FILE, RESULTS_FILE, write_json
from pipelines.runs.guard import (
    finish_run,
    recover_interrupted_swap,
    remove_run_folder,
    start_run,
    swap_in,
)
from pipelines.runs.lock import run_lock
from pipelines.runs.report import write_report
from pipelines.runs.resume import drop_incomplete
from pipelines.serving.hub import PushTarget, push_run
from pipelines.tasks import PreparedData, Task, get_task
from pipelines.tasks.base import logits_of
from pipelines.training.batches import fit_last_batch
from pipelines.training.custom import Collator, CustomPieces, LossFunction, MetricFunction
from pipelines.training.feature_cache import FeatureCache
from pipelines.training.machine import check_machine
from pipelines.training.setup_record import training_setup
from pipelines.training.speed import speed_settings
from pipelines.training.trackers import tracker_callbacks
from pipelines.training.trainer import (
    GroupOptimization,
    build_trainer,
    early_stopping,
    save_full_model,
    training_arguments,
)

logger = logging.getLogger(__name__)

PROBE_DIR = "linear_probe"


def _absolute_files(config: RecipeConfig) -> None:
    # The run folder's recipe must work from any directory: `hubtune evaluate RUN` re-reads its data.
    # Whether each is a file or a folder, as the task reads it, is checked where the splits are read.
    for split, path in config.data.files.items():
        absolute = Path(path).expanduser().resolve()
        relative = (
            ""
            if Path(path).expanduser().is_absolute()
            else f" (a relative path is read from the working directory '{Path.cwd()}', not from the recipe's folder)"
        )
        require_path(absolute, None, "data file", f"data.files.{split}", relative)
        config.data.files[split] = str(absolute)
    checkpoint = Path(config.model.checkpoint).expanduser()
    if checkpoint.exists():
        config.model.checkpoint = str(checkpoint.resolve())


@dataclass
class TrainedStage:
    trainer: Trainer
    model: nn.Module
    table: list[dict]
    results: dict[str, Any]
    artifacts: dict[str, Any]


def _train_examples(trainer: Trainer, train: Any) -> int:
    """The training set's size; for a stream (no size), the examples training read from it."""
    if not streamed(train):
        return len(train)
    args = trainer.args
    return trainer.state.global_step * args.train_batch_size * args.gradient_accumulation_steps * args.world_size


class Recipe:
    """A recipe ready to run: `Recipe.from_yaml(path, overrides=[...]).run()` -> a `RunResult`, which reads as the
    metrics dict and holds the run folder, the trained model, the Trainer and the prepared data."""

    def __init__(self, config: RecipeConfig):
        self.config = config
        _absolute_files(self.config)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
        """The recipe file at `path` with dotted `key=value` overrides, validated (`load_recipe_config`)."""
        return cls(load_recipe_config(path, overrides))

    @classmethod
    def from_dict(cls, values: dict[str, Any], overrides: Sequence[str] = ()) -> Recipe:
        """A recipe given as the mapping its YAML would hold, with dotted `key=value` overrides, validated."""
        return cls(load_recipe_config(values=values, overrides=overrides))

    @property
    def output_dir(self) -> Path:
        """The run folder: `output_dir`, else runs/<name>."""
        return self.config.resolved_output_dir

    def _open_folder(self, plan: RunPlan, state: PartialState) -> None:
        """Mark the folder the run trains in as hubtune's (one process writes, the others wait)."""
        if state.is_main_process:
            drop_incomplete(plan.incomplete)
            if plan.replaces and plan.checkpoint is None:
                remove_run_folder(plan.work_dir)  # what an earlier, interrupted replacement left
            start_run(plan.work_dir)
        state.wait_for_everyone()

    def _adapt(
        self, task: Task, model: nn.Module, strategy: Strategy
    ) -> tuple[nn.Module, GroupOptimization, list[dict]]:
        adapt = strategy.settings
        model, groups = strategy.adapt(model, task.peft_task_type)
        plans = plan_groups(model, groups, adapt)
        table = parameter_table(model, groups, plans)
        logger.info("trainable parameters by layer group (%s):\n%s", strategy.describe(), format_table(table))
        unit = adapt.unfreeze_schedule.unit if adapt.unfreeze_schedule else "epoch"
        return model, GroupOptimization(groups, plans, unit), table

    def _probe(
        self,
        task: Task,
        model: nn.Module,
        data: PreparedData,
        plan: RunPlan,
        stage: ProbeStage,
        drop_last: bool,
        custom: CustomPieces,
    ) -> dict[str, Any]:
        """A strategy's first stage (LP-FT's linear probe): the head alone; its metrics are kept as `probe_*`."""
        probe_dir = plan.work_dir / PROBE_DIR
        if plan.checkpoint is not None and (probe_dir / RESULTS_FILE).is_file():
            # The fine-tuning stage's checkpoint already holds the probed head.
            return json.loads((probe_dir / RESULTS_FILE).read_text())
        probe, optimization, _ = self._adapt(task, model, stage.strategy)
        args = training_arguments(
            self.config,
            probe_dir,
            "validation" in data,
            task.training_arguments_class,
            task.training_defaults,
            num_train_epochs=stage.epochs,
            max_steps=-1,
            learning_rate=stage.learning_rate,
            save_strategy="no",
            load_best_model_at_end=False,
            dataloader_drop_last=drop_last,
        )
        trainer = build_trainer(task, probe, data, args, optimization=optimization, custom=custom)
        metrics = dict(trainer.train().metrics)
        if "validation" in data:
            metrics.update(trainer.evaluate(data["validation"], metric_key_prefix="eval"))
        results = {f"probe_{key}": value for key, value in metrics.items()}
        if trainer.is_world_process_zero():
            write_json(probe_dir / RESULTS_FILE, results)
        return results

    def _prepare_data(self, task: Task, given: InMemoryData | None) -> tuple[PreparedData, dict[str, str]]:
        """The prepared data (the recipe's, or `given` to `run`), and the data split each role (train, validation,
        test) was read from."""
        data = self.config.data
        processor = task.load_processor()
        splits = task.read_splits() if given is None else given.splits(data, self.config.seed)
        prepared = task.prepare(splits, task.fit_processor(splits, processor))
        if streamed(prepared.datasets.get("train")):
            prepared.datasets["train"] = shuffle_stream(prepared["train"], self.config.seed)
        names = {"train": data.train_split, "validation": data.validation_split, "test": data.test_split}
        if splits.carved_validation is not None:
            names["validation"] = f"{data.train_split} ({splits.carved_validation:.0%} held out for validation)"
        return prepared, {role: str(names[role]) for role in splits.datasets}

    def _train_and_score(
        self,
        task: Task,
        model: nn.Module,
        data: PreparedData,
        args: TrainingArguments,
        plan: RunPlan,
        callbacks: Sequence[TrainerCallback],
        custom: CustomPieces,
    ) -> TrainedStage:
        config = self.config
        strategy = strategy_for(config.adapt)
        probe = strategy.probe_stage()
        if probe is None:
            model, optimization, table = self._adapt(task, model, strategy)
        fit_last_batch(task, model, data, args)  # for the probe stage too
        state = process_state()
        cache = None
        if config.adapt.feature_cache:
            cache = FeatureCache(model, config, task.data_collator(data.processor))
            with state.main_process_first():  # one rank writes the cache, the others then read it
                cached_data = cache.cached(data.datasets, args.per_device_eval_batch_size)
        self._open_folder(plan, state)

        results: dict[str, Any] = {}
        if probe is not None:
            results.update(self._probe(task, model, data, plan, probe, args.dataloader_drop_last, custom))
            model, optimization, table = self._adapt(task, model, strategy)
        backbone: contextlib.AbstractContextManager[None]
        datasets = data.datasets
        if cache is None:
            trainer = build_trainer(task, model, data, args, callbacks, optimization, custom=custom)
            backbone = contextlib.nullcontext()
        else:
            # Training and the final scores run on the cached features: the cache checked that the head on
            # them gives the full model's logits. The full model (real backbone) is what gets saved.
            datasets = cached_data
            trainer = build_trainer(
                task, model, data, args, callbacks, optimization, cache.collator, datasets, custom=custom
            )
            backbone = cache.standing_in()
        artifacts: dict[str, Any] = {}
        with backbone:
            train_result = trainer.train(resume_from_checkpoint=plan.checkpoint)
            results.update(train_result.metrics, train_samples=_train_examples(trainer, datasets["train"]))
            for role, prefix in (("validation", "eval"), ("test", "test")):
                if role in datasets:
                    output = trainer.predict(datasets[role], metric_key_prefix=prefix)
                    # A stream's size is known once it has been read: the predictions count it.
                    examples = len(logits_of(output.predictions) if streamed(datasets[role]) else datasets[role])
                    results.update(output.metrics or {}, **{f"{prefix}_samples": examples})
                    if role == "validation":
                        tuned = task.validation_results(output, data, model)
                        results.update({f"eval_{name}": value for name, value in tuned.items()})
                    artifacts.update(
                        {
                            f"{role}_{name}.json": payload
                            for name, payload in task.prediction_artifacts(output, data).items()
                        }
                    )
        trainable = sum(row["trainable"] for row in table)
        total = sum(row["total"] for row in table)
        results.update(trainable_parameters=trainable, total_parameters=total, trainable_share=trainable / total)
        results["speed_settings"] = speed_settings(args, model, config.data.packs_sequences())
        return TrainedStage(trainer, model, table, results, artifacts)

    def _write_run_folder(self, stage: TrainedStage, plan: RunPlan, task: Task) -> None:
        trainer, folder = stage.trainer, plan.work_dir
        broken = [name for name, parameter in stage.model.named_parameters() if not torch.isfinite(parameter).all()]
        if broken:
            # The loss stayed finite (each step checks it), so the checkpoints may hold the same weights: none is
            # offered as a place to resume from.
            raise HubtuneError(
                f"the trained model has weights that are not finite numbers ({broken[0]} and {len(broken) - 1} more), "
                "so it is not saved as the run's result; look for non-finite or extreme inputs, or lower "
                "'training.learning_rate', and train again with 'overwrite=true'"
            )
        model = trainer.accelerator.unwrap_model(stage.model)
        # Every score is in: the model and processor become what a consumer without hubtune (transformers'
        # pipeline(), the Hub widget) needs to preprocess and predict as hubtune does. The Trainer saves its
        # processing class with the model.
        task.saved_model(model)
        trainer.processing_class = task.saved_processor(trainer.processing_class, model)
        save_full_model(trainer, folder)
        trainer.save_state()
        if trainer.is_world_process_zero():
            # The label names live in the task model's config; an adapter folder does not save it itself.
            model.config.save_pretrained(folder)
            recorded = stage.results.get("custom", {})
            dump_recipe_config(self.config, folder / RECIPE_FILE, [f"{key}: {note}" for key, note in recorded.items()])
            write_json(folder / PARAMETERS_FILE, stage.table)
            write_json(folder / RESULTS_FILE, stage.results)
            for name, payload in stage.artifacts.items():
                write_json(folder / name, payload)
            write_report(folder, self.config.name, task.summary_metrics)
            finish_run(folder)
            if plan.replaces:
                swap_in(folder, self.output_dir)
        trainer.accelerator.wait_for_everyone()
        logger.info("run folder: %s", self.output_dir)

    def run(
        self,
        callbacks: Sequence[TrainerCallback] = (),
        *,
        data: GivenData | None = None,
        compute_metrics: MetricFunction | None = None,
        loss: LossFunction | None = None,
        data_collator: Collator | None = None,
    ) -> RunResult:
        """Train, evaluate on validation and test, and write the run folder; returns the `RunResult`.

        `data` takes the place of the recipe's files or Hub dataset: a `datasets.DatasetDict`, or a dict of split
        name (the recipe's `data.*_split`) -> `datasets.Dataset`, pandas `DataFrame` or list of dicts. It is checked
        and preprocessed as files are; the run folder's recipe records what it was (`data.in_memory`).
        `callbacks` are extra `TrainerCallback`s. `compute_metrics` (EvalPrediction -> dict) adds metrics to the
        task's, `loss` ((logits, labels) -> loss) and `data_collator` (examples -> batch) replace the task's; the run
        folder records each as custom, not reproducible from the recipe (`pipelines.training.custom`).
        The main process holds the run folder's lock throughout: a second run on the same folder is refused."""
        custom = CustomPieces(compute_metrics, loss, data_collator)
        custom.check(self.config)
        given = None if data is None else read_in_memory(data, self.config.data)
        if given is not None:
            self.config.data.in_memory = given.record
        check_machine(self.config)
        state = process_state()
        with run_lock(self.output_dir) if state.is_main_process else contextlib.nullcontext():
            return self._run(callbacks, state, custom, given)

    def _run(
        self,
        callbacks: Sequence[TrainerCallback],
        state: PartialState,
        custom: CustomPieces,
        given: InMemoryData | None,
    ) -> RunResult:
        started = time.perf_counter()
        if state.is_main_process:
            recover_interrupted_swap(self.output_dir)
        state.wait_for_everyone()
        plan = plan_run(self.config, self.output_dir)
        # Everything that can be wrong with the input is checked before the run folder is touched.
        task = get_task(self.config.task)(self.config)
        data, split_names = self._prepare_data(task, given)
        # The arguments exist before the model: under DeepSpeed ZeRO-3 they hold the config that transformers
        # reads through a weak reference in from_pretrained (zero3_init), so that each rank loads only its shard
        # of the weights instead of the whole model. `args` keeps that reference alive until training.
        args = training_arguments(
            self.config, plan.work_dir, "validation" in data, task.training_arguments_class, task.training_defaults
        )
        set_seed(self.config.seed)
        model = task.build_model(data)
        task.check_model(model, data)
        # From here on, a run that stops early says why and where it can resume, and leaves nothing half-written.
        ending = RunEnding(plan.work_dir, self.output_dir, plan.replaces, state.is_main_process)
        with ending.guard():
            callbacks = [*callbacks, ending.watch, *early_stopping(self.config), *tracker_callbacks(self.config)]
            stage = self._train_and_score(task, model, data, args, plan, callbacks, custom)
            stage.results["training_setup"] = training_setup(stage.trainer, split_names)
            if custom.given():
                stage.results["custom"] = custom.record()
            stage.results["wall_time_s"] = time.perf_counter() - started
            if data.warnings:
                stage.results["warnings"] = list(data.warnings)
            self._write_run_folder(stage, plan, task)
        if self.config.hub.push and stage.trainer.is_world_process_zero():
            pushed = push_run(self.output_dir, self.config, PushTarget(self.config.hub))
            stage.results["hub_url"] = pushed.where
        model = stage.trainer.accelerator.unwrap_model(stage.model)
        return RunResult(stage.results, self.output_dir, model, stage.trainer, data, data.label_names or None)
