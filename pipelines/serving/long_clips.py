"""`hubtune evaluate` of a speech recogniser scores every clip in full.

The Trainer's evaluation (the one training runs on its validation and test splits) drops a clip longer than
`data.max_duration_s`, since training cannot cut a transcript, and would cut one longer than the model's window
(Whisper's extractor keeps its first 30 s). `hubtune evaluate` sets those clips aside, transcribes them as
`hubtune predict` does (long-form, pipelines/tasks/transcript_serving.py), and scores them with the others: one
WER and CER over the whole split, the same metric on the same normalised text. The loss, which needs a transcript
the decoder can hold in one pass, is over the clips the Trainer scored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from transformers.trainer_utils import PredictionOutput

from pipelines.data.audio import undecoded_audio
from pipelines.data.splits import Splits, streamed
from pipelines.data.transcripts import transcripts
from pipelines.tasks.audio_task import TranscriptTask
from pipelines.tasks.base import logits_of
from pipelines.tasks.collate import pad_labels
from pipelines.tasks.transcript_serving import TranscriptServing

# (paths, batch size) -> one `predict` record per path: how the long clips are transcribed.
Transcribe = Callable[[list[str], int], list[dict[str, Any]]]


@dataclass
class LongClips:
    """The clips of a split set aside for long-form transcription, with their reference transcripts as scored."""

    task: TranscriptTask
    paths: list[str]
    references: list[str]


def set_aside(serving: TranscriptServing, splits: Splits, split: str) -> LongClips | None:
    """The long clips of `split` (`TranscriptServing.long_form_rows`), taken out of `splits`; None where there are
    none. The rows left keep their file row numbers for messages."""
    dataset, locate = splits[split], splits.locate(split)
    if streamed(dataset):
        # A stream is read once, batch by batch: its long clips are left out as in training (a warning counts
        # them), not set aside, which would read the stream twice (docs/large-data.md).
        return None
    rows = serving.long_form_rows(dataset, locate)
    if not rows:
        return None
    task: TranscriptTask = serving.task
    data, tokenizer = task.data, serving.processor.tokenizer
    long = dataset.select(rows)

    def locate_long(i: int) -> str:
        return locate(rows[i])

    texts = transcripts(long, data, locate_long)
    # Through the tokenizer and back, as the Trainer's references are (a character the vocabulary lacks included).
    references = task.references(tokenizer, pad_labels(tokenizer(texts).input_ids).numpy())
    column = data.audio_column
    paths = serving.data_inputs(undecoded_audio(long, column)[column], locate_long, column)
    kept = sorted(set(range(len(dataset))) - set(rows))
    splits.take(split, np.array(kept, dtype=np.int64))
    return LongClips(task, paths, references)


def score(
    long: LongClips,
    split: str,
    output: PredictionOutput | None,
    tokenizer: Any,
    transcribe: Transcribe,
    batch_size: int,
) -> dict[str, float]:
    """The split's WER and CER over the Trainer's `output` (None where every clip was long) and the long clips."""
    task, hypotheses, references = long.task, [], []
    if output is not None:
        hypotheses = task.hypotheses(tokenizer, logits_of(output.predictions))
        references = task.references(tokenizer, np.asarray(output.label_ids))
    hypotheses += [task.scored_transcript(record["transcript"]) for record in transcribe(long.paths, batch_size)]
    scores = task.score(hypotheses, references + long.references)
    return {**{f"{split}_{name}": value for name, value in scores.items()}, f"{split}_long_form_clips": len(long.paths)}
