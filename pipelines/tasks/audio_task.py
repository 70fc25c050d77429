"""What the three speech tasks share: audio files as data, waveforms decoded once, features made per batch."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from datasets import Dataset
from transformers import BatchFeature

from pipelines.audio import AudioInputConfig, crop, decode, decode_column, load_audio_data_file
from pipelines.data import Locate, Splits, require_columns
from pipelines.tasks.base import PreparedData, Task, file_paths
from pipelines.transcripts import TranscriptDataConfig, transcripts

logger = logging.getLogger(__name__)

WAVEFORM = "waveform"


def feature_extractor_of(processor: Any) -> Any:
    return getattr(processor, "feature_extractor", processor)


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


class AudioTask(Task[AudioDataT]):
    """Base of the speech tasks: reading audio splits and turning them into waveform datasets."""

    input_kind = "path"  # hubtune predict takes audio files and folders
    input_column_key = "audio_column"

    # Batches are built from the raw waveform column by the task's collator, so the Trainer must not drop it.
    training_defaults = {"remove_unused_columns": False}
    # Speech tasks that pair audio with a transcript must not crop it: they drop over-long clips instead.
    crops_long_audio = True

    def load_data_file(self, path: Path) -> Dataset:
        # Transcript data has no class column of its own: class sub-folders, if a folder has them, go to `label`.
        label_column = getattr(self.data, "label_column", "label")
        return load_audio_data_file(path, self.data.audio_column, label_column)

    def max_samples(self, processor: Any) -> int | None:
        """`data.max_duration_s` in samples at the processor's rate."""
        seconds = self.data.max_duration_s
        return None if seconds is None else int(seconds * feature_extractor_of(processor).sampling_rate)

    def waveforms(self, dataset: Dataset, locate: Locate, processor: Any) -> list[np.ndarray]:
        return decode_column(dataset, self.data.audio_column, feature_extractor_of(processor).sampling_rate, locate)

    def waveform_dataset(
        self, role: str, waveforms: list[np.ndarray], columns: dict[str, list], source: str, processor: Any
    ) -> Dataset:
        """A dataset of `waveform` plus `columns`; long clips cropped (randomly per epoch in training) or dropped."""
        limit = self.max_samples(processor)
        if limit is not None and not self.crops_long_audio:
            keep = [i for i, wave in enumerate(waveforms) if len(wave) <= limit]
            if len(keep) < len(waveforms):
                logger.warning(
                    "%s: dropped %d of %d clips longer than data.max_duration_s=%s",
                    source,
                    len(waveforms) - len(keep),
                    len(waveforms),
                    self.data.max_duration_s,
                )
            waveforms = [waveforms[i] for i in keep]
            columns = {name: [values[i] for i in keep] for name, values in columns.items()}
        elif role != "train":
            waveforms = [crop(wave, limit, None) for wave in waveforms]
        dataset = Dataset.from_dict({WAVEFORM: waveforms, **columns})
        if role == "train" and limit is not None and self.crops_long_audio:
            rng = np.random.default_rng(self.config.seed)

            def random_crop(batch: dict[str, list]) -> dict[str, list]:
                return {**batch, WAVEFORM: [crop(np.asarray(w, dtype=np.float32), limit, rng) for w in batch[WAVEFORM]]}

            dataset.set_transform(random_crop)
        return dataset

    def data_inputs(self, values: list[Any], locate: Locate, column: str) -> list[str]:
        return file_paths(values, locate, column, "audio")

    def read_inputs(self, processor: Any, inputs: list[str]) -> list[np.ndarray]:
        """`hubtune predict` inputs: audio file paths, decoded like the training data (crop from the start)."""
        rate = feature_extractor_of(processor).sampling_rate
        waves = [decode(path, rate, f"input '{path}'") for path in inputs]
        return [crop(wave, self.max_samples(processor), None) for wave in waves] if self.crops_long_audio else waves


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
        for role, dataset in splits.datasets.items():
            source = splits.sources[role]
            labels = processor.tokenizer(transcripts(dataset, self.data, splits.locate(role))).input_ids
            result.datasets[role] = self.waveform_dataset(
                role, self.waveforms(dataset, splits.locate(role), processor), {"labels": labels}, source, processor
            )
        return result
