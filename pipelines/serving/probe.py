"""The probe every export is checked with: a few real examples of the run's own data, preprocessed and collated
as in training, fed to the run model and to the exported one, whose outputs must agree within TOLERANCE.

Exporting needs no data: where the run's data cannot be read here (moved, deleted, a Hub dataset outside the
cache), the check runs on inputs the task's serving half makes up instead (`TaskServing.probe_inputs`), with a
warning; the comparison is of two models' outputs on the same inputs, which any inputs serve.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import Dataset

from pipelines.data.splits import streamed
from pipelines.errors import HubtuneError
from pipelines.serving.predictor import Predictor

logger = logging.getLogger(__name__)

EXPORT_CHECK_FILE = "export_check.json"
PROBE_SIZE = 8
TOLERANCE = 1e-4
MADE_UP = "made-up inputs"


@dataclass
class Probe:
    batches: list[dict[str, torch.Tensor]]
    source: str  # where the examples came from: a split of the run's data, or MADE_UP


def _data_probe(run: Predictor, sizes: list[int]) -> Probe:
    """Batches of the first `size` (at most PROBE_SIZE) real examples of the recipe's test split (else validation,
    else train), preprocessed and collated as in training; only that split is read, once for all of them."""
    config = run.config.data
    named = {"test": config.test_split, "validation": config.validation_split, "train": config.train_split}
    role = next(role for role, split in named.items() if split is not None)
    splits = run.task.read_splits(roles=(role,))
    examples = splits[role]
    if streamed(examples):  # a `data.streaming` recipe: its first rows, read from the stream
        examples = Dataset.from_list(list(examples.take(PROBE_SIZE)), features=examples.features)
    splits.datasets = {role: examples.select(range(min(PROBE_SIZE, len(examples))))}
    data = run.task.prepare(splits, run.processor, label_names=run.label_names)
    run.task.check_model(run.model, data)
    collate = run.task.data_collator(run.processor)
    batches = [collate([data[role][i] for i in range(min(size, len(data[role])))]) for size in sizes]
    return Probe(batches, f"{role} split")


def _made_up_probe(run: Predictor, sizes: list[int]) -> Probe:
    with tempfile.TemporaryDirectory(prefix="hubtune-probe-") as folder:
        inputs = run.serving.probe_inputs(Path(folder), PROBE_SIZE)
        return Probe([run.serving.probe_batch(inputs[:size]) for size in sizes], MADE_UP)


def probe_batches(run: Predictor, sizes: list[int]) -> Probe:
    """Batches of `sizes` examples to check an export on: the run's own data where it can be read, else made-up
    inputs (a warning says why)."""
    try:
        return _data_probe(run, sizes)
    except HubtuneError as error:
        logger.warning(
            "the run's data cannot be read here (%s); exporting needs none, and the export is checked on %d %s instead",
            error,
            PROBE_SIZE,
            MADE_UP,
        )
        return _made_up_probe(run, sizes)
