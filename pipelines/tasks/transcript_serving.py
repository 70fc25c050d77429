"""The serving half of the speech recognisers: every clip transcribed in full, whatever its length.

A clip within the model's window goes through in one pass, as in training. A longer one is transcribed the way
transformers does it: Whisper by its sequential long-form generation (each 30 s window decoded with timestamp
tokens, the next one starting where the last complete segment ended), CTC in strided chunks whose overlapping edges
are dropped before one decode (transformers' ASR pipeline with `chunk_length_s`). Each record says how in its
`chunking` entry:

    {"method": "none" | "whisper-sequential" | "ctc-strided", "duration_s": seconds of audio,
     "chunk_s": the window each pass sees (null for "none"), "stride_s": the context dropped at each inner chunk edge
     (CTC; null otherwise), "chunks": the number of forward passes (only in "ctc-strided")}

With timestamps asked for, a Whisper record has `segments` ([{start, end, text}], from its timestamp tokens) and a
CTC record `words` ([{word, start, end}], from the tokenizer's word offsets): seconds from the clip's start.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from typing import Any

import torch
from datasets import Dataset

from pipelines.data.audio import audio_lengths, undecoded_audio
from pipelines.data.splits import Locate
from pipelines.tasks.audio_task import AudioServing, AudioTaskT, extract_features, feature_extractor_of
from pipelines.tasks.serving_base import TaskModel

# Seconds: three decimals (a millisecond) say all a 20 ms frame or timestamp token can.
TIME_DECIMALS = 3


def seconds(value: float) -> float:
    return round(float(value), TIME_DECIMALS)


def chunking(method: str, samples: int, rate: int, chunk: int | None = None, stride: int | None = None) -> dict:
    """A record's `chunking` entry (this module's docstring): lengths in samples at `rate`, given in seconds."""
    return {
        "method": method,
        "duration_s": seconds(samples / rate),
        "chunk_s": None if chunk is None else seconds(chunk / rate),
        "stride_s": None if stride is None else seconds(stride / rate),
    }


class TranscriptServing(AudioServing[AudioTaskT]):
    """Serving half of the speech recognisers: one full transcript per clip, timestamps when asked for."""

    def __init__(self, task: AudioTaskT, model: TaskModel, processor: Any, timestamps: bool = False):
        super().__init__(task, model, processor)
        self.timestamps = timestamps  # `predict --timestamps`: segments (Whisper) or words (CTC) with their times

    @property
    def rate(self) -> int:
        return int(feature_extractor_of(self.processor).sampling_rate)

    @abstractmethod
    def window_samples(self) -> int:
        """The longest clip (samples at `rate`) transcribed in one pass; a longer one is transcribed in pieces."""

    def long_form_rows(self, dataset: Dataset, locate: Locate) -> list[int]:
        """The rows of a labelled split that the Trainer's evaluation drops (`TranscriptTask.longest_kept_clip`: over
        `data.max_duration_s` or Whisper's window), or that are longer than one pass of `predict` (a CTC chunk):
        `hubtune evaluate` transcribes them as `predict` does. Read from the files' headers, as training reads them."""
        limits = [self.window_samples(), self.task.longest_kept_clip(self.processor)[0]]
        limit = min(limit for limit in limits if limit is not None)
        column = self.task.data.audio_column
        lengths = audio_lengths(undecoded_audio(dataset, column), column, self.rate, locate)
        return [row for row, length in enumerate(lengths) if length > limit]

    def probe_batch(self, inputs: list[str]) -> dict[str, torch.Tensor]:
        # The one-pass features of each (short, made-up) clip, joined: what an export is checked on.
        features = [extract_features(self.processor, [wave]) for wave in self.waveforms(inputs)]
        return {key: torch.cat([each[key] for each in features]) for key in features[0]}

    def format(self, prediction: dict[str, Any]) -> str:
        if "segments" in prediction or "words" in prediction:
            return json.dumps(prediction)  # times do not fit the one-line transcript: the whole record
        return f"{prediction['transcript']}\t{prediction['input']}"
