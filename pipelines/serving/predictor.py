"""`evaluate` and `predict` from a run folder alone: on inputs, on the recipe's splits, or on a new data file.

The Predictor owns batching and every output: the task's serving half (pipelines/tasks/serving_base.py) only turns
a batch of inputs into prediction records, one line each, or pictures.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import torch
from accelerate import PartialState
from datasets import Dataset
from transformers import PrinterCallback
from transformers.trainer_utils import PredictionOutput

from pipelines.data.splits import Splits, require_columns, streamed
from pipelines.errors import HubtuneError, require_path
from pipelines.processes import process_state
from pipelines.runs.folder import read_run_recipe, write_json
from pipelines.runs.guard import (
    MARKER,
    check_output_folder,
    record_outputs,
    record_written,
    written_by_hubtune,
)
from pipelines.serving import long_clips
from pipelines.serving.inputs import check_texts, collect_inputs
from pipelines.tasks import TASKS, get_task
from pipelines.tasks.serving_base import TaskServing, on_device
from pipelines.tasks.transcript_serving import TranscriptServing
from pipelines.training.trainer import build_trainer, training_arguments

logger = logging.getLogger(__name__)

# Text inputs are read this many batches at a time and sorted by length within them, so that a batch pads to
# lengths close to its own while memory stays bounded by the chunk, however long the input.
SORTED_CHUNK_BATCHES = 64

EVALUATE_FILE = "evaluate_results.json"
EVALUATE_DATA_FILE = "evaluate_data_results.json"  # scores on a data file given to `hubtune evaluate --data`
DATA_ROLE = "data"


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise HubtuneError(f"batch size must be at least 1, got {batch_size}")


def _share(rows: int, state: PartialState) -> range:
    """This process's contiguous share of `rows`: concatenated in process order, the shares keep input order."""
    size, extra = divmod(rows, state.num_processes)
    start = state.process_index * size + min(state.process_index, extra)
    return range(start, start + size + (state.process_index < extra))


def check_output(output: Path, overwrite: bool, inputs: Sequence[str | Path] = ()) -> None:
    """An output file may replace one only when asked to, never one of the `inputs` it is made from, and goes into
    a folder that exists: checked before any prediction is made (the CLI checks before the model loads)."""
    for source in inputs:
        if Path(source).is_file() and output.exists() and output.resolve() == Path(source).resolve():
            raise HubtuneError(
                f"--output file '{output}' is also an input ('{source}'): the predictions would replace what they "
                "are made from; write them to another file"
            )
    if output.exists():
        require_path(output, "file", "output file", "--output")
    if output.exists() and not overwrite:
        raise HubtuneError(f"--output file '{output}' already exists; pass --overwrite to replace it")
    if not output.parent.is_dir():
        raise HubtuneError(f"--output file '{output}': folder '{output.parent}' does not exist")


def _check_drawing_target(
    target: Path, source: str, inputs: dict[Path, str], drawn: dict[str, str], earlier: set[str], overwrite: bool
) -> None:
    """A drawing replaces no input, no other drawing of this command, and (with --overwrite) only a drawing hubtune
    made in that folder before."""
    if target.resolve() in inputs:
        raise HubtuneError(
            f"--draw: the drawing of '{source}' would be '{target}', which is an input ('{inputs[target.resolve()]}'); "
            "draw into another folder"
        )
    if target.name in drawn:
        raise HubtuneError(
            f"--draw: '{drawn[target.name]}' and '{source}' would both be drawn as '{target}'; predict them apart, "
            "or rename one"
        )
    if target.exists() and target.name not in earlier:
        raise HubtuneError(
            f"--draw: '{target}' already exists, and hubtune has no record of drawing it (the folder's {MARKER} lists "
            "what it drew); --overwrite replaces only its own drawings: draw into another folder, or move it away"
        )
    if target.exists() and not overwrite:
        raise HubtuneError(f"--draw: '{target}' already exists; pass --overwrite to replace the drawings")


@contextmanager
def atomic_output(output: Path) -> Iterator[TextIO]:
    """The one way predictions reach a file: written beside `output` and renamed onto it when complete, so a
    predict that fails half way leaves neither a half file in its place nor one beside it."""
    partial = output.with_name(f".{output.name}.partial")
    try:
        with partial.open("w", encoding="utf-8") as handle:
            yield handle
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(output)


class Predictor:
    """A trained run loaded for inference: the task, its processor, its model (on this process's GPU when there is
    one) and the task's serving half, which the Predictor drives in batches (preprocess, forward, postprocess). It
    writes every output itself: JSON lines, drawings, the evaluation results.

    `Predictor.from_run("runs/x").predict(["a text", ...])` in research code; the CLI's predict and evaluate.
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.config = read_run_recipe(self.run_dir)
        self.task = get_task(self.config.task)(self.config)
        self.processor = self.task.load_processor(str(self.run_dir))
        # accelerate's device for this process: its own GPU under `accelerate launch`, the GPU (or Apple's MPS)
        # when there is one, else the CPU.
        self.model = self.task.load_run_model(str(self.run_dir)).to(process_state().device).eval()
        self.label_names = self.task.trained_label_names(self.model)
        self.serving = self.task.serving(self.task, self.model, self.processor)

    @classmethod
    def from_run(cls, run_dir: str | Path) -> Predictor:
        """The run folder `run_dir` (`RunResult.run_dir`, or a folder `hubtune train` wrote) loaded for inference."""
        return cls(run_dir)

    def read_inputs(self, values: Sequence[str], files: Sequence[str], stdin: Iterable[str]) -> list[str]:
        """`hubtune predict`'s inputs (`collect_inputs`), all read and checked before any is predicted."""
        return list(collect_inputs(self.serving.input_kind, values, files, stdin))

    def serving_for(self, timestamps: bool = False) -> TaskServing:
        """The serving half that predicts with these options: timestamps are for speech recognisers alone."""
        if not timestamps:
            return self.serving
        if not isinstance(self.serving, TranscriptServing):
            timed = TASKS.where(lambda task: issubclass(task.serving, TranscriptServing))
            raise HubtuneError(
                f"--timestamps: a {self.task.name} run transcribes no speech, so it has no times to give "
                f"({', '.join(timed)} runs do)"
            )
        return type(self.serving)(self.task, self.model, self.processor, timestamps=True)

    def _predict_batch(self, inputs: list[str], serving: TaskServing) -> list[dict[str, Any]]:
        batch = serving.preprocess(inputs)
        batch.features = on_device(batch.features, self.model.device)
        with torch.no_grad():
            outputs = serving.forward(batch)
        return serving.postprocess(batch, outputs)

    def _predict_chunk(self, inputs: Sequence[str], batch_size: int, serving: TaskServing) -> list[dict[str, Any]]:
        """Predictions for `inputs`, in their order; texts are batched from shortest to longest."""
        order = list(range(len(inputs)))
        if serving.input_kind == "text":
            order.sort(key=lambda position: len(inputs[position]))
        predictions: list[dict[str, Any]] = [{} for _ in inputs]
        for start in range(0, len(order), batch_size):
            positions = order[start : start + batch_size]
            for position, prediction in zip(positions, self._predict_batch([inputs[i] for i in positions], serving)):
                predictions[position] = prediction
        return predictions

    def predict(self, inputs: Sequence[str], batch_size: int = 32, timestamps: bool = False) -> list[dict[str, Any]]:
        """One prediction dict per input (texts, or file paths for image and audio tasks), in input order.

        `timestamps`: speech recognisers add each clip's `segments` (Whisper) or `words` (CTC) with their times."""
        if not inputs:
            raise HubtuneError("predict needs at least one input")
        _check_batch_size(batch_size)
        serving = self.serving_for(timestamps)
        if serving.input_kind == "text":
            check_texts(inputs)
        predictions = []
        chunk = batch_size * SORTED_CHUNK_BATCHES
        for start in range(0, len(inputs), chunk):
            predictions += self._predict_chunk(inputs[start : start + chunk], batch_size, serving)
        return predictions

    def format_prediction(self, prediction: dict[str, Any]) -> str:
        """The line `hubtune predict` prints for one prediction."""
        return self.serving.format(prediction)

    def write(self, predictions: Iterable[dict[str, Any]], output: str | Path, overwrite: bool = False) -> int:
        """`predictions` as JSON lines in `output`, which appears only when complete; returns their number."""
        output = Path(output)
        check_output(output, overwrite)
        with atomic_output(output) as handle:
            lines = [handle.write(json.dumps(prediction) + "\n") for prediction in predictions]
        return len(lines)

    def check_drawing(self) -> None:
        """Drawing is for tasks whose serving half implements `draw`; another's run is one line naming those."""
        if not self.serving.implements("draw"):
            drawing = TASKS.where(lambda task: task.serving.implements("draw"))
            raise HubtuneError(
                f"--draw: a {self.task.name} run predicts nothing to draw ({', '.join(drawing)} runs do)"
            )

    def check_draw_folder(self, out_dir: Path) -> None:
        """`--draw DIR` is a folder outside the run folder (checked before any prediction is made)."""
        check_output_folder(out_dir, "--draw", self.run_dir)

    def draw(self, predictions: Sequence[dict[str, Any]], out_dir: Path, overwrite: bool = False) -> list[Path]:
        """The task's pictures of `predictions` (boxes, masks) in `out_dir`. They are drawn in a scratch folder inside
        it and moved in when all are drawn, and a name taken stops the drawing before anything is written there:
        `overwrite` replaces only drawings hubtune made there before (the folder's marker lists them), never a
        user's file, and never one of the inputs."""
        self.check_drawing()
        self.check_draw_folder(out_dir)
        inputs = {Path(prediction["input"]).resolve(): prediction["input"] for prediction in predictions}
        earlier = written_by_hubtune(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        drawn: dict[str, str] = {}  # drawing -> the input it is of
        with tempfile.TemporaryDirectory(dir=out_dir, prefix=".drawing-") as scratch:
            for prediction in predictions:
                with torch.no_grad():
                    pictures = self.serving.draw(prediction)
                for name, picture in pictures.items():
                    _check_drawing_target(out_dir / name, prediction["input"], inputs, drawn, earlier, overwrite)
                    picture.save(Path(scratch) / name)
                    drawn[name] = prediction["input"]
            for name in drawn:
                (Path(scratch) / name).replace(out_dir / name)
        record_outputs(out_dir, list(drawn))
        return [out_dir / name for name in drawn]

    def read_data_file(self, data: str | Path) -> tuple[Dataset, str]:
        """A new file or folder in a format of the run's task (a table, an image or audio folder, CoNLL)."""
        path = Path(data).expanduser()
        kind = self.task.data_path_kind()
        require_path(path, kind, "data folder" if kind == "folder" else "data file", "--data")
        return self.task.load_data_file(path), f"data file '{path}'"

    def predict_data(
        self,
        data: str | Path,
        output: str | Path,
        batch_size: int = 32,
        column: str | None = None,
        overwrite: bool = False,
        timestamps: bool = False,
    ) -> int:
        """Predict every row of a data file into `output` (JSON lines, in row order, each with its `row`).

        Rows are read, predicted (sorted by length) and written a chunk of batches at a time, so memory stays flat
        however large the file.
        Under `accelerate launch` each process predicts its share; the main process joins the shares in order.
        The output appears only when complete. Returns the number of rows. `timestamps` as in `predict`.
        """
        _check_batch_size(batch_size)
        serving = self.serving_for(timestamps)
        output = Path(output)
        check_output(output, overwrite, [data])
        dataset, source = self.read_data_file(data)
        key = self.serving.input_column_key
        column = column or getattr(self.config.data, key)
        require_columns(dataset, {key: column}, source)
        dataset = dataset.select_columns([column])
        state = process_state()
        shares = [output.with_name(f".{output.name}.part{index}") for index in range(state.num_processes)]
        rows = _share(len(dataset), state)
        share = shares[state.process_index]
        try:
            with share.open("w", encoding="utf-8") as handle:
                chunk = batch_size * SORTED_CHUNK_BATCHES
                for start in range(rows.start, rows.stop, chunk):
                    positions = range(start, min(start + chunk, rows.stop))
                    values = dataset[positions.start : positions.stop][column]

                    def locate(i: int, first: int = start) -> str:
                        return f"{source}, row {first + i + 1}"

                    inputs = serving.data_inputs(values, locate, column)
                    for position, prediction in zip(positions, self._predict_chunk(inputs, batch_size, serving)):
                        handle.write(json.dumps({"row": position + 1, **prediction}) + "\n")
        except BaseException:
            share.unlink(missing_ok=True)  # a failed or interrupted predict leaves no part behind
            raise
        state.wait_for_everyone()
        if state.is_main_process:
            with atomic_output(output) as joined:
                for share in shares:
                    with share.open(encoding="utf-8") as part:
                        shutil.copyfileobj(part, joined)
                    share.unlink()
        state.wait_for_everyone()
        return len(dataset)

    def evaluate(self, split: str = "test", data_file: str | Path | None = None) -> dict[str, float]:
        """Metrics on one split of the recipe's data (`train`, `validation` or `test`), or on a new labelled data
        file (`data_file`), written to the run folder. Only what is scored is read and preprocessed. A run trained
        on data given in memory (`Recipe.run(data=...)`) has no split to read again: it takes `data_file` only."""
        if data_file is not None:
            dataset, source = self.read_data_file(data_file)
            split = DATA_ROLE
            splits = Splits({split: dataset}, {split: source})
        elif self.config.data.in_memory:
            raise HubtuneError(
                f"run folder '{self.run_dir}' was trained on data given to Recipe.run(data=...) in memory, which no "
                f"file holds, so its {split} split cannot be read again; score it on a file with --data FILE"
            )
        else:
            splits = self.task.read_splits(roles=(split,))
            if split not in splits:
                raise HubtuneError(f"the recipe of '{self.run_dir}' has no {split} split")
        long = (
            long_clips.set_aside(self.serving, splits, split) if isinstance(self.serving, TranscriptServing) else None
        )
        output, written = None, dict[str, Any]()
        if streamed(splits[split]) or len(splits[split]):  # not when every clip of a speech split is long
            output, written = self._evaluate_in_trainer(splits, split)
        metrics = dict(output.metrics or {}) if output is not None else {}
        if long is not None:
            batch_size = self.config.training.get("per_device_eval_batch_size") or 8
            tokenizer = self.processor.tokenizer
            metrics.update(long_clips.score(long, split, output, tokenizer, self.predict, batch_size))
        written[EVALUATE_FILE if split != DATA_ROLE else EVALUATE_DATA_FILE] = metrics
        for name, payload in written.items():
            write_json(self.run_dir / name, payload)
        record_written(self.run_dir, list(written))
        return metrics

    def _evaluate_in_trainer(self, splits: Splits, split: str) -> tuple[PredictionOutput, dict[str, Any]]:
        """The Trainer's predictions on the split, and the task's artifacts of them (file name -> payload)."""
        prepared = self.task.from_trained(
            self.task.prepare(splits, self.processor, label_names=self.label_names), self.model
        )
        self.task.check_model(self.model, prepared)
        with tempfile.TemporaryDirectory() as scratch:
            args = training_arguments(
                self.config,
                Path(scratch),
                False,
                self.task.training_arguments_class,
                self.task.training_defaults,
                report_to="none",
                # Scored as the run's final scores were: in the model's own precision, as predict runs it.
                bf16=False,
                fp16=False,
            )
            trainer = build_trainer(self.task, self.model, prepared, args)
            trainer.remove_callback(PrinterCallback)  # stdout carries only the JSON the CLI prints
            output = trainer.predict(prepared[split], metric_key_prefix=split)
        artifacts = self.task.prediction_artifacts(output, prepared)
        return output, {f"{split}_{name}.json": payload for name, payload in artifacts.items()}
