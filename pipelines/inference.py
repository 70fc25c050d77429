"""`evaluate` and `predict` from a run folder alone."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from transformers import PrinterCallback

from pipelines.data import load_splits
from pipelines.errors import HubtuneError
from pipelines.run_folder import read_run_recipe, write_json
from pipelines.run_guard import record_written
from pipelines.tasks import get_task
from pipelines.training import build_trainer, training_arguments

logger = logging.getLogger(__name__)

EVALUATE_FILE = "evaluate_results.json"


def collect_inputs(input_kind: str, values: Sequence[str], files: Sequence[str], stdin: Iterable[str]) -> Iterator[str]:
    """The inputs of `hubtune predict`, in order.

    Text tasks: each value is a text, `-` reads one text per line from stdin, `--file F` one per line of F.
    Path tasks (images, audio): each value is a file or a folder (its files, sorted), `-` reads paths from stdin.
    """

    def lines(source: Iterable[str]) -> Iterator[str]:
        return (line.rstrip("\n") for line in source if line.strip())

    def expand(value: str) -> Iterator[str]:
        if input_kind != "path":
            yield value
            return
        path = Path(value)
        if path.is_dir():
            yield from (str(p) for p in sorted(path.rglob("*")) if p.is_file() and not p.name.startswith("."))
        elif path.is_file():
            yield str(path)
        else:
            raise HubtuneError(f"input '{value}' is neither a file nor a folder")

    def text_lines(source: Iterable[str], name: str) -> Iterator[str]:
        number = 0
        try:
            for number, line in enumerate(lines(source), start=1):
                if "\x00" in line:
                    raise HubtuneError(
                        f"{name}, line {number}: holds NUL bytes, so it is binary, not text; "
                        "--file and - read one input per line of text"
                    )
                try:
                    line.encode("utf-8")
                except UnicodeEncodeError as error:
                    # Python reads stdin with errors="surrogateescape": bytes that are not UTF-8 arrive as
                    # lone surrogates instead of raising, and would be predicted as garbage text.
                    raise HubtuneError(
                        f"{name}, line {number}: not UTF-8 text; --file and - read one input per line of text"
                    ) from error
                yield line
        except UnicodeDecodeError as error:
            raise HubtuneError(
                f"{name}, after line {number}: not UTF-8 text ({error.reason}); --file and - read "
                "one input per line of text"
            ) from error

    for file in files:
        if not Path(file).is_file():
            raise HubtuneError(f"input file '{file}' does not exist")
    for value in values:
        for item in text_lines(stdin, "standard input") if value == "-" else [value]:
            yield from expand(item)
    for file in files:
        with open(file, encoding="utf-8") as handle:
            for line in text_lines(handle, f"input file '{file}'"):
                yield from expand(line)


def _is_file(text: str) -> bool:
    try:
        return "\n" not in text and Path(text).is_file()
    except OSError:  # a long text is no valid path at all ("File name too long")
        return False


def check_texts(inputs: Sequence[str]) -> None:
    """Texts for a text run: a blank one is an error (a label for nothing would look confident); the path of a
    file is classified as the text it is, with a warning, since `--file` was likely meant."""
    for number, text in enumerate(inputs, start=1):
        if not text.strip():
            raise HubtuneError(f"input {number} is empty or blank: there is nothing to predict")
        if _is_file(text):
            logger.warning(
                "input %d ('%s') is the path of a file, and is predicted as that text; to read one text "
                "per line from a file, pass --file %s",
                number,
                text,
                text,
            )


class Predictor:
    """A trained run loaded for inference: the task, its processor and its model.

    `Predictor.from_run("runs/x").predict(["a text", ...])` in research code; the CLI's predict and evaluate.
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        if not self.run_dir.is_dir():
            raise HubtuneError(f"run folder '{self.run_dir}' does not exist")
        self.config = read_run_recipe(self.run_dir)
        self.task = get_task(self.config.task)(self.config)
        self.processor = self.task.load_processor(str(self.run_dir))
        self.model = self.task.load_run_model(str(self.run_dir))
        self.label_names = self.task.trained_label_names(self.model)

    @classmethod
    def from_run(cls, run_dir: str | Path) -> Predictor:
        return cls(run_dir)

    def predict(self, inputs: Sequence[str], batch_size: int = 32) -> list[dict[str, Any]]:
        """One prediction dict per input (texts, or file paths for image and audio tasks), in batches."""
        if not inputs:
            raise HubtuneError("predict needs at least one input")
        if batch_size < 1:
            raise HubtuneError(f"batch size must be at least 1, got {batch_size}")
        if self.task.input_kind == "text":
            check_texts(inputs)
        predictions = []
        for start in range(0, len(inputs), batch_size):
            predictions += self.task.predict(self.model, self.processor, list(inputs[start : start + batch_size]))
        return predictions

    def format_prediction(self, prediction: dict[str, Any]) -> str:
        return self.task.format_prediction(prediction)

    def evaluate(self, split: str = "test") -> dict[str, float]:
        """Metrics on a split of the recipe's data (`train`, `validation` or `test`), written to the run folder."""
        splits = load_splits(self.config.data, self.config.seed, self.task.load_data_file)
        if split not in splits:
            raise HubtuneError(f"the recipe of '{self.run_dir}' has no {split} split")
        data = self.task.prepare(splits, self.processor, label_names=self.label_names)
        with tempfile.TemporaryDirectory() as scratch:
            args = training_arguments(
                self.config,
                Path(scratch),
                False,
                self.task.training_arguments_class,
                self.task.training_defaults,
                report_to="none",
            )
            trainer = build_trainer(self.task, self.model, data, args)
            trainer.remove_callback(PrinterCallback)  # stdout carries only the JSON the CLI prints
            output = trainer.predict(data[split], metric_key_prefix=split)
        written = {EVALUATE_FILE: output.metrics}
        written.update(
            {f"{split}_{name}.json": payload for name, payload in self.task.prediction_artifacts(output, data).items()}
        )
        for name, payload in written.items():
            write_json(self.run_dir / name, payload)
        record_written(self.run_dir, list(written))
        return dict(output.metrics or {})
