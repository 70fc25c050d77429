"""`Recipe`: a validated recipe config plus the one run path every task shares."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

from accelerate import PartialState
from datasets import Dataset
from torch import nn
from transformers import TrainerCallback, set_seed
from transformers.trainer_utils import get_last_checkpoint

from pipelines.adapt import adapt_model, format_table, parameter_table, plan_groups
from pipelines.config import AdaptConfig, RecipeConfig, dump_recipe_config, load_recipe_config
from pipelines.data import load_splits
from pipelines.errors import HubtuneError
from pipelines.feature_cache import FeatureCache
from pipelines.hub import push_run
from pipelines.report import write_report
from pipelines.run_folder import PARAMETERS_FILE, RECIPE_FILE, RESULTS_FILE, write_json
from pipelines.tasks import Task, get_task
from pipelines.training import GroupOptimization, build_trainer, training_arguments

logger = logging.getLogger(__name__)

PROBE_DIR = "linear_probe"


def _absolute_files(config: RecipeConfig) -> None:
    # The run folder's recipe must work from any directory: `hubtune evaluate RUN` re-reads its data.
    config.data.files = {split: str(Path(path).expanduser().resolve()) for split, path in config.data.files.items()}
    checkpoint = Path(config.model.checkpoint).expanduser()
    if checkpoint.exists():
        config.model.checkpoint = str(checkpoint.resolve())


class Recipe:
    """A recipe ready to run: `Recipe.from_yaml(path, overrides=[...]).run()` -> metrics dict."""

    def __init__(self, config: RecipeConfig):
        self.config = config
        _absolute_files(self.config)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Sequence[str] = ()) -> "Recipe":
        return cls(load_recipe_config(path, overrides))

    @classmethod
    def from_dict(cls, values: dict[str, Any], overrides: Sequence[str] = ()) -> "Recipe":
        return cls(load_recipe_config(values=values, overrides=overrides))

    @property
    def output_dir(self) -> Path:
        return self.config.resolved_output_dir

    def _last_checkpoint(self) -> str | None:
        resume = self.config.training.get("resume", False)
        existing = self.output_dir.is_dir() and any(self.output_dir.iterdir())
        if resume:
            checkpoint = get_last_checkpoint(str(self.output_dir)) if self.output_dir.is_dir() else None
            if checkpoint is None:
                raise HubtuneError(f"'training.resume' is true but '{self.output_dir}' holds no checkpoint-* folder")
            return checkpoint
        if existing and not self.config.overwrite:
            raise HubtuneError(
                f"run folder '{self.output_dir}' already exists; set 'training.resume=true' to continue it, "
                "'overwrite=true' to replace it, or another 'output_dir'")
        return None

    def _adapt(self, task: Task, model: nn.Module, strategy: str) -> tuple[nn.Module, GroupOptimization, list[dict]]:
        adapt = self.config.adapt
        model, groups = adapt_model(model, adapt, task.peft_task_type, strategy)
        plans = plan_groups(model, groups, adapt)
        table = parameter_table(model, groups, plans)
        logger.info("trainable parameters by layer group (%s):\n%s", strategy, format_table(table))
        unit = adapt.unfreeze_schedule.unit if adapt.unfreeze_schedule else "epoch"
        return model, GroupOptimization(groups, plans, unit), table

    def _linear_probe(self, task: Task, model: nn.Module, processor: Any, data: dict[str, Dataset],
                      resuming: bool) -> dict[str, Any]:
        """LP-FT's first stage: train the head alone; its metrics are kept as `probe_*`."""
        probe_dir = self.output_dir / PROBE_DIR
        if resuming and (probe_dir / RESULTS_FILE).is_file():
            # The fine-tuning stage's checkpoint already holds the probed head.
            return json.loads((probe_dir / RESULTS_FILE).read_text())
        lp_ft = self.config.adapt.lp_ft
        probe, groups = adapt_model(model, AdaptConfig(), task.peft_task_type, "freeze_backbone")
        optimization = GroupOptimization(groups, plan_groups(probe, groups, AdaptConfig()))
        logger.info("LP-FT stage 1, linear probe:\n%s", format_table(parameter_table(probe, groups)))
        args = training_arguments(self.config, probe_dir, "validation" in data, task.training_arguments_class,
                                  task.training_defaults, num_train_epochs=lp_ft.probe_epochs, max_steps=-1,
                                  learning_rate=lp_ft.probe_learning_rate, save_strategy="no",
                                  load_best_model_at_end=False)
        trainer = build_trainer(task, probe, processor, data, args, optimization=optimization)
        metrics = dict(trainer.train().metrics)
        if "validation" in data:
            metrics.update(trainer.evaluate(data["validation"], metric_key_prefix="eval"))
        results = {f"probe_{key}": value for key, value in metrics.items()}
        if trainer.is_world_process_zero():
            write_json(probe_dir / RESULTS_FILE, results)
        return results

    def run(self, callbacks: Sequence[TrainerCallback] = ()) -> dict[str, Any]:
        """Train, evaluate on validation and test, and write the run folder. Returns all results."""
        config = self.config
        started = time.perf_counter()
        task = get_task(config.task)(config)
        state = PartialState()
        checkpoint = self._last_checkpoint()
        # Everything that can be wrong with the input is checked before the run folder is touched.
        processor = task.load_processor()
        splits = load_splits(config.data, config.seed, task.load_data_file)
        processor = task.fit_processor(splits, processor)
        data = task.prepare(splits, processor)
        set_seed(config.seed)
        model = task.build_model()
        lp_ft = config.adapt.strategy == "lp_ft"
        if not lp_ft:
            model, optimization, table = self._adapt(task, model, config.adapt.strategy)
        args = training_arguments(config, self.output_dir, "validation" in data, task.training_arguments_class,
                                  task.training_defaults)
        cache = None
        if config.adapt.feature_cache:
            cache = FeatureCache(model, config, task.data_collator(processor))
            with state.main_process_first():  # one rank writes the cache, the others then read it
                cached_data = cache.cached(data, args.per_device_eval_batch_size)
        if checkpoint is None and self.output_dir.exists() and state.is_main_process:
            shutil.rmtree(self.output_dir)
        state.wait_for_everyone()

        results: dict[str, Any] = {}
        if lp_ft:
            results.update(self._linear_probe(task, model, processor, data, resuming=checkpoint is not None))
            model, optimization, table = self._adapt(task, model, config.adapt.lp_ft.then)
        if cache is None:
            trainer = build_trainer(task, model, processor, data, args, callbacks, optimization)
            backbone = contextlib.nullcontext()
        else:
            # Training and the final scores run on the cached features: the cache checked that the head on
            # them gives the full model's logits. The full model (real backbone) is what gets saved.
            data = cached_data
            trainer = build_trainer(task, model, processor, data, args, callbacks, optimization, cache.collator)
            backbone = cache.standing_in()
        artifacts: dict[str, Any] = {}
        with backbone:
            train_result = trainer.train(resume_from_checkpoint=checkpoint)
            results.update(train_result.metrics, train_samples=len(data["train"]))
            for role, prefix in (("validation", "eval"), ("test", "test")):
                if role in data:
                    output = trainer.predict(data[role], metric_key_prefix=prefix)
                    results.update(output.metrics, **{f"{prefix}_samples": len(data[role])})
                    artifacts.update({f"{role}_{name}.json": payload
                                      for name, payload in task.prediction_artifacts(output).items()})
        trainable = sum(row["trainable"] for row in table)
        total = sum(row["total"] for row in table)
        results.update(trainable_parameters=trainable, total_parameters=total,
                       trainable_share=trainable / total, wall_time_s=time.perf_counter() - started)

        trainer.save_model(str(self.output_dir))
        trainer.save_state()
        if trainer.is_world_process_zero():
            # The label names live in the task model's config; an adapter folder does not save it itself.
            trainer.accelerator.unwrap_model(model).config.save_pretrained(self.output_dir)
            dump_recipe_config(config, self.output_dir / RECIPE_FILE)
            write_json(self.output_dir / PARAMETERS_FILE, table)
            write_json(self.output_dir / RESULTS_FILE, results)
            for name, payload in artifacts.items():
                write_json(self.output_dir / name, payload)
            write_report(self.output_dir, config.name)
        logger.info("run folder: %s", self.output_dir)
        if config.hub.push and trainer.is_world_process_zero():
            results["hub_url"] = push_run(self.output_dir, config, config.hub, task.pipeline_tag)
        return results
