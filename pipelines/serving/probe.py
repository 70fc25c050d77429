"""The probe every export is checked with: a few real examples of the run's own data, preprocessed and collated
as in training, fed to the run model and to the exported one, whose outputs must agree within TOLERANCE."""

from __future__ import annotations

import torch
from datasets import Dataset

from pipelines.data.splits import streamed
from pipelines.serving.predictor import Predictor

EXPORT_CHECK_FILE = "export_check.json"
PROBE_SIZE = 8
TOLERANCE = 1e-4


def probe_batches(run: Predictor, sizes: list[int]) -> list[dict[str, torch.Tensor]]:
    """Batches of the first `size` (at most PROBE_SIZE) real examples of the recipe's data, preprocessed and
    collated as in training; the data is read and preprocessed once for all of them."""
    splits = run.task.read_splits()
    role = next(role for role in ("test", "validation", "train") if role in splits)
    examples = splits[role]
    if streamed(examples):  # a `data.streaming` recipe: its first rows, read from the stream
        examples = Dataset.from_list(list(examples.take(PROBE_SIZE)), features=examples.features)
    splits.datasets = {role: examples.select(range(min(PROBE_SIZE, len(examples))))}
    data = run.task.prepare(splits, run.processor, label_names=run.label_names)
    collate = run.task.data_collator(run.processor)
    return [collate([data[role][i] for i in range(min(size, len(data[role])))]) for size in sizes]
