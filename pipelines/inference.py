"""`evaluate` and `predict` from a run folder alone."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from transformers import PrinterCallback

from pipelines.data import load_splits
from pipelines.errors import HubtuneError
from pipelines.run_folder import read_run_recipe, write_json
from pipelines.tasks import get_task
from pipelines.training import build_trainer, training_arguments

EVALUATE_FILE = "evaluate_results.json"


class RunModel:
    """A trained run loaded for inference: the task, its processor and its model."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        if not self.run_dir.is_dir():
            raise HubtuneError(f"run folder '{self.run_dir}' does not exist")
        self.config = read_run_recipe(self.run_dir)
        self.task = get_task(self.config.task)(self.config)
        self.processor = self.task.load_processor(str(self.run_dir))
        self.model = self.task.load_run_model(str(self.run_dir))

    def predict(self, inputs: list[str]) -> list[dict[str, Any]]:
        if not inputs:
            raise HubtuneError("predict needs at least one input")
        return self.task.predict(self.model, self.processor, inputs)

    def format_prediction(self, prediction: dict[str, Any]) -> str:
        return self.task.format_prediction(prediction)

    def evaluate(self, split: str = "test") -> dict[str, float]:
        """Metrics on a split of the recipe's data (`train`, `validation` or `test`), written to the run folder."""
        splits = load_splits(self.config.data, self.config.seed, self.task.load_data_file)
        if split not in splits:
            raise HubtuneError(f"the recipe of '{self.run_dir}' has no {split} split")
        data = self.task.prepare(splits, self.processor, label_names=self.task.label_names)
        with tempfile.TemporaryDirectory() as scratch:
            args = training_arguments(self.config, Path(scratch), False, self.task.training_arguments_class,
                                      self.task.training_defaults, report_to="none")
            trainer = build_trainer(self.task, self.model, self.processor, {}, args)
            trainer.remove_callback(PrinterCallback)  # stdout carries only the JSON the CLI prints
            metrics = trainer.evaluate(data[split], metric_key_prefix=split)
        write_json(self.run_dir / EVALUATE_FILE, metrics)
        return metrics
