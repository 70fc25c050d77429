"""`Recipe`: a validated recipe config plus the one run path every task shares."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

from accelerate import PartialState
from transformers import TrainerCallback, set_seed
from transformers.trainer_utils import get_last_checkpoint

from pipelines.adapt import adapt_model, format_table, parameter_table
from pipelines.config import RecipeConfig, dump_recipe_config, load_recipe_config
from pipelines.data import load_splits
from pipelines.errors import HubtuneError
from pipelines.run_folder import PARAMETERS_FILE, RECIPE_FILE, RESULTS_FILE, write_json
from pipelines.tasks import get_task
from pipelines.training import build_trainer, training_arguments

logger = logging.getLogger(__name__)


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
        model, groups = adapt_model(model, config.adapt, task.peft_task_type)
        table = parameter_table(model, groups)
        logger.info("trainable parameters by layer group (%s):\n%s", config.adapt.strategy, format_table(table))

        args = training_arguments(config, self.output_dir, "validation" in data, task.training_arguments_class,
                                  task.training_defaults)
        if checkpoint is None and self.output_dir.exists() and state.is_main_process:
            shutil.rmtree(self.output_dir)
        state.wait_for_everyone()
        trainer = build_trainer(task, model, processor, data, args, callbacks)
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        results: dict[str, Any] = dict(train_result.metrics, train_samples=len(data["train"]))
        if "validation" in data:
            results.update(trainer.evaluate(data["validation"], metric_key_prefix="eval"),
                           eval_samples=len(data["validation"]))
        if "test" in data:
            results.update(trainer.evaluate(data["test"], metric_key_prefix="test"), test_samples=len(data["test"]))
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
        logger.info("run folder: %s", self.output_dir)
        return results
