"""Batches by length. Training with `group_by_length` draws batches of similar lengths, with the lengths read
from the data's columns in one pass (the Trainer would read them row by row, decoding each audio clip to do so).
Evaluation and prediction read examples sorted by length, so a batch pads to lengths close to its own, and the
outputs are put back in the data's order.

The Trainer reads evaluation data in order (or, with `group_by_length`, in random length-grouped chunks whose
order it does not undo, which would misalign per-example outputs with the data's rows). Metrics do not depend
on the order of examples; per-example outputs do, so `restore_order` undoes the sort before anyone sees them.
The Trainer keeps every prediction in memory anyway, so one sort of the whole split costs nothing more. Under
several processes, a stream's evaluation is read by the main process and sent out in batches (`_dispatched`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from datasets import Dataset
from torch.utils.data import RandomSampler, SequentialSampler
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices
from transformers.trainer_utils import PredictionOutput, has_length

from pipelines.compat import SamplerHookTrainer

logger = logging.getLogger(__name__)


def input_lengths(dataset: Any, columns: Sequence[str]) -> np.ndarray | None:
    """Each row's length, from the first of `columns` the dataset has: a column of lengths (as audio's header
    lengths), or a list column (such as input_ids). None where there is nothing to group or sort by: no such
    column (features made on the fly), or every row of one length."""
    if not isinstance(dataset, Dataset):
        return None
    column = next((name for name in columns if name in dataset.column_names), None)
    if column is None:
        return None
    values = dataset.with_format("arrow")[column]
    if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
        lengths = pc.list_value_length(values).to_numpy(zero_copy_only=False)
    elif pa.types.is_integer(values.type):
        lengths = values.to_numpy()
    else:
        return None
    if len(lengths) < 2 or lengths.min() == lengths.max():
        return None
    return lengths


def length_order(dataset: Any, columns: Sequence[str]) -> list[int] | None:
    """The rows of `dataset` from shortest to longest `column` (a stable sort: equal lengths keep their order),
    or None where `input_lengths` finds nothing to sort by."""
    lengths = input_lengths(dataset, columns)
    return None if lengths is None else np.argsort(lengths, kind="stable").tolist()


def _unsort(value: Any, inverse: np.ndarray) -> Any:
    if isinstance(value, np.ndarray) and value.ndim > 0 and len(value) == len(inverse):
        return value[inverse]
    if isinstance(value, (tuple, list)):
        return type(value)(_unsort(item, inverse) for item in value)  # several outputs, each one row per example
    if isinstance(value, dict):
        return {key: _unsort(item, inverse) for key, item in value.items()}
    return value


def restore_order(output: PredictionOutput, order: Sequence[int]) -> PredictionOutput:
    """`output` of a prediction over rows in `order`, as if it had been made over the rows in their own order."""
    inverse = np.argsort(np.asarray(order), kind="stable")
    return PredictionOutput(
        predictions=_unsort(output.predictions, inverse),
        label_ids=_unsort(output.label_ids, inverse),
        metrics=output.metrics,
    )


class ShuffledLengthGroupedSampler(LengthGroupedSampler):
    """transformers' length-grouped batches, made less uniform and handed out in random order.

    Upstream sorts each mega-batch (4 or more per epoch) by exact length and hands its batches out from longest
    to shortest. Both cost accuracy where length goes with the target (a regression whose score counts cue words
    lost 0.25 of its Pearson correlation, tests/test_text_classification_labels.py): every batch held one length,
    so one kind of target, and every epoch swept long to short a few times. Here lengths count in steps of
    `step` (the collators pad to a multiple of 8 tokens, so within a step the padding is the same) and examples
    of one step stay in random order; the batches after the first (the longest, so that running out of memory
    happens at once) come in random order, drawn from the same generator, so a resumed run sees the same order.
    """

    def __init__(self, batch_size: int, lengths: list[int], step: int = 1):
        super().__init__(batch_size, lengths=[-(-length // step) for length in lengths])

    def __iter__(self):
        indices = get_length_grouped_indices(self.lengths, self.batch_size, generator=self.generator)
        batches = [indices[start : start + self.batch_size] for start in range(0, len(indices), self.batch_size)]
        rest = torch.randperm(len(batches) - 1, generator=self.generator).tolist() if len(batches) > 1 else []
        order = [0, *(position + 1 for position in rest)]
        return iter([index for position in order for index in batches[position]])


class LengthAwareBatching(SamplerHookTrainer):
    """A Trainer that groups training batches by length from the lengths `input_lengths` reads, and whose
    evaluation and prediction read the examples sorted by length when `sort_by_length` (a keyword of `__init__`)
    is true, with predictions back in the data's order."""

    def __init__(self, *args: Any, sort_by_length: bool = False, length_step: int = 1, **kwargs: Any):
        self.sort_by_length = sort_by_length
        self.length_step = length_step  # lengths that pad to the same batch width: the collator's padding multiple
        super().__init__(*args, **kwargs)

    def _length_columns(self) -> tuple[str, str]:
        # Where the Trainer looks for lengths: its length column, then the model's first input.
        model_input = (getattr(self.processing_class, "model_input_names", None) or ["input_ids"])[0]
        return self.args.length_column_name, model_input

    def training_sampler(self, dataset=None):
        dataset = self.train_dataset if dataset is None else dataset
        if self.args.train_sampling_strategy != "group_by_length" or not has_length(dataset):
            return super().training_sampler(dataset)
        lengths = input_lengths(dataset, self._length_columns())
        if lengths is None:
            logger.info(
                "training batches are drawn in random order: the examples' lengths are all the same, or in none of "
                "the columns %s ('training.train_sampling_strategy' is group_by_length)",
                list(self._length_columns()),
            )
            return RandomSampler(dataset)
        return ShuffledLengthGroupedSampler(
            self.args.train_batch_size * self.args.gradient_accumulation_steps,
            lengths=lengths.tolist(),
            step=self.length_step,
        )

    def evaluation_sampler(self, dataset):
        # The Trainer's own choice, less its random length-grouped order under `group_by_length`, which it never
        # undoes: `evaluate` and `predict` sort instead, and put predictions back in order.
        if dataset is None or not has_length(dataset) or self.args.world_size > 1:
            return None
        return SequentialSampler(dataset)

    def _dispatched(self, build: Callable[[], Any]) -> Any:
        """An evaluation loader under several processes where each rank reads its own share (`dispatch_batches` off,
        as for streams), made with the main process reading and sending each rank its batches instead: accelerate
        then knows the last batch's size and drops its padding from the gathered predictions. Read per rank, a
        stream's last batch is filled up with its first examples, which would be scored twice."""
        config = self.accelerator.dataloader_config
        if self.args.world_size == 1 or config.dispatch_batches is not False:
            return build()
        config.dispatch_batches = True
        try:
            return build()
        finally:
            config.dispatch_batches = False

    def get_eval_dataloader(self, eval_dataset=None):
        return self._dispatched(functools.partial(super().get_eval_dataloader, eval_dataset))

    def get_test_dataloader(self, test_dataset):
        return self._dispatched(functools.partial(super().get_test_dataloader, test_dataset))

    def _by_length(self, dataset: Any) -> list[int] | None:
        if not self.sort_by_length or not self.args.eval_do_concat_batches:
            return None  # batch by batch outputs cannot be put back in order row by row
        return length_order(dataset, self._length_columns())

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval", **kwargs):
        dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        order = self._by_length(dataset)
        if order is not None:
            eval_dataset = dataset.select(order)  # metrics do not depend on the order of the examples
        return super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix, **kwargs)

    def predict(self, test_dataset, ignore_keys=None, metric_key_prefix="test", **kwargs):
        order = self._by_length(test_dataset)
        if order is None:
            return super().predict(test_dataset, ignore_keys, metric_key_prefix, **kwargs)
        output = super().predict(test_dataset.select(order), ignore_keys, metric_key_prefix, **kwargs)
        return restore_order(output, order)
