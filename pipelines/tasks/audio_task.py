"""What the three speech tasks share: audio files as data, kept undecoded, decoded and featurised per batch."""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from datasets import Dataset, IterableDataset
from transformers import BatchFeature, EvalPrediction

from pipelines.data.audio import (
    LENGTH_BATCH,
    AudioInputConfig,
    audio_length,
    audio_lengths,
    audio_name,
    crop,
    decode,
    load_audio_data_file,
    load_audio_stream,
    undecoded_audio,
    undecoded_stream,
    write_probe_clips,
)
from pipelines.data.splits import Locate, Splits, columns_of, load_splits, require_columns, streamed
from pipelines.data.transcripts import TranscriptDataConfig, normalise, transcripts
from pipelines.errors import HubtuneError, require_path
from pipelines.tasks.base import PreparedData, Task, logits_of
from pipelines.tasks.serving_base import TaskModel, TaskServing, file_paths

logger = logging.getLogger(__name__)

# Each clip's length in samples at the model's rate, from its file header: what length-grouped batching
# (`training.train_sampling_strategy: group_by_length`) sorts by, and what decides which clips are too long.
LENGTH = "input_length"
CROP_START = "crop_start"  # where a training clip's random window begins, drawn anew each time it is read
# A streamed clip's file and row ("data file 'x.csv', row 12"): a stream's rows are checked and decoded as training
# reads them, so their errors are raised there, and must still name the row.
SOURCE_ROW = "source_row"
# A batch of a stream's rows -> their labels; the second argument names the i-th row for error messages.
StreamLabels = Callable[[dict[str, list], Locate], list]


# Spectrogram models whose extractor cuts the clip into analysis windows before it pads (AST: Kaldi filter banks of
# 25 ms): a clip shorter than one window gives no frame at all, or an error deep in numpy.
ANALYSIS_WINDOW_S = {"audio-spectrogram-transformer": 0.025}


def feature_extractor_of(processor: Any) -> Any:
    return getattr(processor, "feature_extractor", processor)


@dataclass(frozen=True)
class ShortestClip:
    """The fewest samples (at the extractor's rate) from which a model makes one frame, and why."""

    samples: int
    why: str

    def check(self, length: int, rate: int, clip: str, fix: str) -> None:
        """`clip` (a message's name for it), `length` samples at `rate`: one line when it is shorter."""
        if length < self.samples:
            raise HubtuneError(
                f"{clip} lasts {length / rate:.3g} s ({length} samples at {rate} Hz), shorter than the "
                f"{self.samples / rate:.3g} s ({self.samples} samples) this model takes: {self.why}; {fix}"
            )


def shortest_clip(model: TaskModel, extractor: Any) -> ShortestClip | None:
    """What a model takes at the least, or None where any clip will do (Whisper's extractor pads every clip to
    its window before it computes a frame). A raw-waveform encoder (wav2vec2, HuBERT, WavLM) slides its
    convolutions over the clip: one frame needs their whole receptive field (400 samples, 25 ms, for wav2vec2-base).
    Padding a shorter clip with silence would have the model judge mostly silence, with confidence."""
    config = getattr(model, "config", None)
    kernels, strides = getattr(config, "conv_kernel", None), getattr(config, "conv_stride", None)
    if kernels and strides:
        samples = 1
        for kernel, stride in zip(reversed(kernels), reversed(strides)):
            samples = (samples - 1) * stride + kernel
        return ShortestClip(samples, "one frame of its convolutional feature encoder")
    window = ANALYSIS_WINDOW_S.get(getattr(config, "model_type", ""))
    if window is not None:
        return ShortestClip(round(window * extractor.sampling_rate), "one analysis window of its feature extractor")
    return None


def extract_features(processor: Any, waveforms: list[np.ndarray]) -> BatchFeature:
    """Model inputs for a batch of waveforms at the extractor's rate.

    Raw-waveform models (wav2vec2, HuBERT) are padded to the longest clip of the batch; spectrogram models
    (Whisper, AST) keep their extractor's own default, a fixed window that their position embeddings require.
    """
    extractor = feature_extractor_of(processor)
    options = {"padding": True} if extractor.model_input_names[0] == "input_values" else {}
    return extractor(waveforms, sampling_rate=extractor.sampling_rate, return_tensors="pt", **options)


AudioDataT = TypeVar("AudioDataT", bound=AudioInputConfig)
TranscriptDataT = TypeVar("TranscriptDataT", bound=TranscriptDataConfig)
AudioTaskT = TypeVar("AudioTaskT", bound="AudioTask[Any]")


class AudioTask(Task[AudioDataT]):
    """Base of the speech tasks: reading audio splits, keeping them undecoded, decoding them per batch."""

    # The collator decodes the undecoded audio column, which the Trainer would otherwise drop for not being a
    # model input; length-grouped batching reads the header lengths instead of decoding every clip.
    training_defaults = {"remove_unused_columns": False, "length_column_name": LENGTH}
    variable_length = True
    # Speech tasks that pair audio with a transcript must not crop it: they drop over-long clips instead.
    crops_long_audio = True

    def data_path_kind(self) -> str | None:
        return None  # an audio folder, or a table of audio paths

    @property
    def folder_label_column(self) -> str:
        # Transcript data has no class column of its own: class sub-folders, if a folder has them, go to `label`.
        return getattr(self.data, "label_column", "label")

    def load_data_file(self, path: Path) -> Dataset:
        return load_audio_data_file(path, self.data.audio_column, self.folder_label_column)

    def load_data_stream(self, path: Path) -> IterableDataset:
        return load_audio_stream(path, self.data.audio_column, self.folder_label_column)

    def read_splits(self, roles: Collection[str] = ("train", "validation", "test")) -> Splits:
        """Also: streams (`data.streaming`) from audio folders and tables of paths, and a streamed Hub `Audio` column
        left undecoded (`undecoded_stream`: datasets would decode it through torchcodec wherever its rows are read)."""
        data = self.data
        splits = load_splits(
            data, self.config.seed, self.load_data_file, roles, self.data_path_kind(), self.load_data_stream
        )
        for role, dataset in splits.datasets.items():
            if streamed(dataset):
                splits.datasets[role] = undecoded_stream(dataset, data.audio_column)
        return splits

    def max_samples(self, processor: Any) -> int | None:
        """`data.max_duration_s` in samples at the processor's rate."""
        seconds = self.data.max_duration_s
        return None if seconds is None else int(seconds * feature_extractor_of(processor).sampling_rate)

    def longest_kept_clip(self, processor: Any) -> tuple[int | None, str]:
        """The longest clip (samples) a task that cannot crop keeps in training and in the Trainer's evaluation, and
        what sets it, for the warning that names the clips dropped."""
        return self.max_samples(processor), f"data.max_duration_s={self.data.max_duration_s}"

    def audio_dataset(
        self, result: PreparedData, role: str, dataset: Dataset, labels: list, locate: Locate, source: str
    ) -> None:
        """The split as `result.datasets[role]`: its undecoded audio column, `labels` and each clip's header
        length; long clips dropped (transcript tasks) or, in training, given a random window per epoch (evaluation
        crops from the start). Its shortest clip goes to `result.shortest_clips`, for `check_model`.

        Reading every header here reports an unreadable file by name and row before training starts.
        """
        column, processor = self.data.audio_column, result.processor
        audio = undecoded_audio(dataset, column)
        lengths = audio_lengths(audio, column, feature_extractor_of(processor).sampling_rate, locate)
        shortest = int(np.argmin(lengths))
        clip = f"audio file '{audio_name(audio[shortest][column], locate(shortest))}' ({locate(shortest)})"
        result.shortest_clips[role] = (lengths[shortest], clip)
        split = audio.select_columns([column]).add_column("labels", labels).add_column(LENGTH, lengths)
        limit = self.max_samples(processor)
        if not self.crops_long_audio:
            longest, why = self.longest_kept_clip(processor)
            keep = [i for i, length in enumerate(lengths) if longest is None or length <= longest]
            if len(keep) < len(lengths):
                logger.warning(
                    "%s: dropped %d of %d clips longer than %s", source, len(lengths) - len(keep), len(lengths), why
                )
                split = split.select(keep)
        elif role == "train" and limit is not None:
            rng = np.random.default_rng(self.config.seed)

            def draw_windows(batch: dict[str, list]) -> dict[str, list]:
                starts = [int(rng.integers(0, max(length - limit, 0) + 1)) for length in batch[LENGTH]]
                return {**batch, CROP_START: starts}

            if self.config.adapt.feature_cache:
                # The cache runs the backbone once per clip: each training clip gets one window, drawn here, so
                # the cached features are those of the clip the cache's check and the saved run see.
                split = split.add_column(CROP_START, draw_windows({LENGTH: lengths})[CROP_START])
            else:
                # The transform only draws where each window starts: the Trainer reads the length column through
                # it row by row to group batches, so it must not decode.
                split = split.with_transform(draw_windows)
        result.datasets[role] = split

    def audio_stream(
        self,
        result: PreparedData,
        role: str,
        stream: IterableDataset,
        labels: StreamLabels,
        locate: Locate,
        source: str,
    ) -> None:
        """A streamed split as `result.datasets[role]`, read batch by batch as training goes, as `audio_dataset` reads
        a whole one: each clip's labels, header length and file row (`SOURCE_ROW`); long clips left out (transcript
        tasks, counted in the log) or, in training, given a random window each time the stream is read.

        An unreadable file, a bad label or transcript is an error naming its file and row when the stream reaches
        its batch; a clip too short for the model, when `check_model`'s check reaches it.
        """
        column, processor = self.data.audio_column, result.processor
        rate, limit = feature_extractor_of(processor).sampling_rate, self.max_samples(processor)
        longest, why = (None, "") if self.crops_long_audio else self.longest_kept_clip(processor)
        rng = np.random.default_rng(self.config.seed)
        skipped: set[int] = set()  # a stream is read again on every pass: each long clip counts once

        def read(batch: dict[str, list], positions: list[int]) -> dict[str, list]:
            where = [locate(position) for position in positions]
            lengths = [audio_length(value, rate, where[i]) for i, value in enumerate(batch[column])]
            rows = {
                column: batch[column],
                "labels": labels(batch, where.__getitem__),
                LENGTH: lengths,
                SOURCE_ROW: where,
            }
            if self.crops_long_audio:
                if role == "train" and limit is not None:
                    rows[CROP_START] = [int(rng.integers(0, max(length - limit, 0) + 1)) for length in lengths]
                return rows
            if longest is None:
                return rows
            keep = [i for i, length in enumerate(lengths) if length <= longest]
            for i, position in enumerate(positions):
                if lengths[i] <= longest or position in skipped:
                    continue
                skipped.add(position)
                if np.log10(len(skipped)).is_integer():  # 1, 10, 100, ... clips: a count, not a line per clip
                    logger.warning(
                        "%s: %d clips longer than %s left out so far (the latest: %s)",
                        source,
                        len(skipped),
                        why,
                        where[i],
                    )
            return {key: [values[i] for i in keep] for key, values in rows.items()}

        result.datasets[role] = stream.map(
            read, batched=True, batch_size=LENGTH_BATCH, with_indices=True, remove_columns=columns_of(stream)
        )

    def check_model(self, model: TaskModel, prepared: PreparedData) -> None:
        """Also: no clip shorter than the model's shortest input (one frame of its convolutional encoder)."""
        super().check_model(model, prepared)
        extractor = feature_extractor_of(prepared.processor)
        minimum = shortest_clip(model, extractor)
        if minimum is None:
            return
        fix, column = "remove its row, or give a longer clip", self.data.audio_column
        for length, clip in prepared.shortest_clips.values():
            minimum.check(length, extractor.sampling_rate, clip, fix)

        def long_enough(row: dict[str, Any]) -> None:
            clip = f"audio file '{audio_name(row[column], row[SOURCE_ROW])}' ({row[SOURCE_ROW]})"
            minimum.check(row[LENGTH], extractor.sampling_rate, clip, fix)

        for role, dataset in prepared.datasets.items():
            if streamed(dataset):
                prepared.datasets[role] = check_rows(dataset, long_enough)

    def waveforms(self, processor: Any, rows: list[dict[str, Any]]) -> list[np.ndarray]:
        """A batch of prepared rows, decoded (mono, at the processor's rate) and cropped to their windows."""
        rate = feature_extractor_of(processor).sampling_rate
        limit = self.max_samples(processor) if self.crops_long_audio else None
        column = self.data.audio_column
        return [
            crop(decode(row[column], rate, row.get(SOURCE_ROW, "in a batch")), limit, row.get(CROP_START, 0))
            for row in rows
        ]


def check_rows(stream: IterableDataset, check: Callable[[dict[str, Any]], None]) -> IterableDataset:
    """`stream` with `check` run on each row as it is read: a check that needs the model (`Task.check_model`) cannot
    read a stream ahead."""

    def checked(row: dict[str, Any]) -> dict[str, Any]:
        check(row)
        return row

    return stream.map(checked)


def check_splits_columns(splits: Splits, columns: dict[str, str | None]) -> None:
    for role, dataset in splits.datasets.items():
        require_columns(dataset, columns, splits.sources[role])


class TranscriptTask(AudioTask[TranscriptDataT]):
    """Speech recognition: each clip's label is its transcript, normalised and tokenised by the processor's
    tokenizer."""

    # Cropping a clip would cut its transcript: over-long clips are dropped instead.
    crops_long_audio = False
    summary_metrics = ("wer", "cer")
    lower_is_better = ("loss", "wer", "cer")  # error rates
    data_config = TranscriptDataConfig

    def prepare(self, splits: Splits, processor: Any, label_names: list[str] | None = None) -> PreparedData:
        check_splits_columns(splits, {"audio_column": self.data.audio_column, "text_column": self.data.text_column})
        result = PreparedData({}, processor)

        def labels(rows: Dataset | dict[str, list], locate: Locate) -> list:  # a split, or a batch of a stream
            return processor.tokenizer(transcripts(rows, self.data, locate)).input_ids

        for role, dataset in splits.datasets.items():
            source = splits.sources[role]
            if streamed(dataset):
                self.audio_stream(result, role, dataset, labels, splits.locate(role), source)
            else:
                self.audio_dataset(
                    result, role, dataset, labels(dataset, splits.locate(role)), splits.locate(role), source
                )
        return result

    @abstractmethod
    def hypotheses(self, tokenizer: Any, predictions: np.ndarray) -> list[str]:
        """The transcripts of the Trainer's predictions (generated ids, or CTC logits), as they are scored."""

    @abstractmethod
    def references(self, tokenizer: Any, label_ids: np.ndarray) -> list[str]:
        """The reference transcripts of a batch of labels (padded with IGNORE), as they are scored."""

    def scored_transcript(self, transcript: str) -> str:
        """A transcript `predict` made, as the metric compares it (`hubtune evaluate` of a clip too long for the
        Trainer's one pass)."""
        return normalise(transcript, self.data)

    def score(self, hypotheses: list[str], references: list[str]) -> dict[str, float]:
        return self.metric("speech_recognition").compute(predictions=hypotheses, references=references)

    def compute_metrics(self, prediction: EvalPrediction, prepared: PreparedData) -> dict[str, float]:
        tokenizer = prepared.processor.tokenizer
        return self.score(
            self.hypotheses(tokenizer, logits_of(prediction.predictions)),
            self.references(tokenizer, np.asarray(prediction.label_ids)),
        )


class AudioServing(TaskServing[AudioTaskT]):
    """Serving half of the speech tasks: `predict` takes audio files, decoded like the training data."""

    input_kind = "path"  # hubtune predict takes audio files and folders
    input_column_key = "audio_column"

    def data_inputs(self, values: list[Any], locate: Locate, column: str) -> list[str]:
        return file_paths(values, locate, column, "audio")

    def probe_inputs(self, folder: Path, count: int) -> list[str]:
        return write_probe_clips(folder, count)

    def waveforms(self, inputs: list[str]) -> list[np.ndarray]:
        """Audio file paths decoded (mono, at the processor's rate) and, where the task crops, cropped from the
        start as evaluation crops."""
        for path in inputs:
            require_path(path, "file", "audio file")
        task, extractor = self.task, feature_extractor_of(self.processor)
        rate, minimum = extractor.sampling_rate, shortest_clip(self.model, extractor)
        waves = [decode(path, rate, f"input '{path}'") for path in inputs]
        for path, wave in zip(inputs, waves):
            if minimum is not None:
                minimum.check(len(wave), rate, f"input '{path}'", "there is too little of it to predict from")
        return [crop(wave, task.max_samples(self.processor)) for wave in waves] if task.crops_long_audio else waves
