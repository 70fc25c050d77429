"""Audio input for the speech tasks: local folders and tables of paths, decoding, resampling, cropping.

Decoding goes through soundfile, never `datasets.Audio(decode=True)`: datasets 5 decodes through torchcodec,
which needs FFmpeg libraries that are often missing (docs/platform-notes.md). Hub audio columns are cast to
`Audio(decode=False)` and their bytes or paths are decoded here, a batch at a time: prepared datasets hold
only the undecoded values and each clip's length, read from its file header.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
from datasets import Audio, Dataset, Features, IterableDataset, Value
from scipy.signal import resample_poly

from pipelines.config import option
from pipelines.data.splits import columns_of, load_table_file, load_table_stream
from pipelines.data.streams import StreamingDataConfig
from pipelines.errors import HubtuneError

AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au", ".opus"}
METADATA_FILES = ("metadata.csv", "metadata.jsonl")
LENGTH_BATCH = 256  # rows per read when measuring clips from their headers


@dataclass
class AudioInputConfig(StreamingDataConfig):
    """The data keys every speech task shares; every speech task reads streams (`data.streaming`)."""

    audio_column: str = option("audio", "a path (relative to its csv/jsonl file), or a Hub Audio column")
    max_duration_s: float | None = option(
        30.0, "longer clips are cropped (classification: at random in training) or left out (speech recognition)"
    )

    def validate(self) -> None:
        super().validate()
        if self.max_duration_s is not None and self.max_duration_s <= 0:
            raise HubtuneError(f"recipe key 'data.max_duration_s' must be positive, got {self.max_duration_s}")


def write_probe_clips(folder: Path, count: int, rate: int = 16_000) -> list[str]:
    """`count` one-second noise clips written as WAV files into `folder`: inputs made up to check an export on where
    the run's own audio is gone. They share one length, so that their features form one batch."""
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        path = folder / f"probe-{index}.wav"
        soundfile.write(path, (0.1 * rng.standard_normal(rate)).astype(np.float32), rate)
        paths.append(str(path))
    return paths


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)


def load_audio_folder(folder: Path, audio_column: str, label_column: str) -> Dataset:
    """An audiofolder: `metadata.csv`/`.jsonl` with a `file_name` column (plus label or transcript columns),
    or one sub-folder of audio files per class.

    Read here rather than with `load_dataset("audiofolder")`, which encodes every file through torchcodec.
    """
    for name in METADATA_FILES:
        metadata = folder / name
        if metadata.is_file():
            table = load_table_file(metadata)
            if "file_name" not in table.column_names:
                raise HubtuneError(f"data file '{metadata}' has no column 'file_name' (the audiofolder convention)")
            paths = [str(folder / file_name) for file_name in table["file_name"]]
            return table.remove_columns("file_name").add_column(audio_column, paths)
    rows: dict[str, list[str]] = {audio_column: [], label_column: []}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        for path in _audio_files(sub):
            rows[audio_column].append(str(path))
            rows[label_column].append(sub.name)
    if not rows[audio_column]:
        raise HubtuneError(
            f"audio folder '{folder}' has neither {' nor '.join(METADATA_FILES)} nor class sub-folders with audio files"
        )
    return Dataset.from_dict(rows)


def _with_paths(stream: IterableDataset, column: str, folder: Path, source: str | None = None) -> IterableDataset:
    """`stream` with the paths in `source` (default: `column`) made relative to `folder`, in `column`."""
    source = source or column

    def resolve(batch: dict[str, list]) -> dict[str, list]:
        return {column: [str(folder / value) if isinstance(value, str) else value for value in batch[source]]}

    return stream.map(resolve, batched=True, remove_columns=[source] if source != column else None)


def load_audio_stream(path: Path, audio_column: str, label_column: str) -> IterableDataset:
    """A split given in `data.files` as a stream (`data.streaming`), from the same folders and tables as
    `load_audio_data_file`. Only the table is read as training goes; a folder of class sub-folders is listed (its
    file names, not their audio) up front."""
    if path.is_dir():
        metadata = next((path / name for name in METADATA_FILES if (path / name).is_file()), None)
        if metadata is None:
            return load_audio_folder(path, audio_column, label_column).to_iterable_dataset()
        stream, table, column = load_table_stream(metadata), metadata, "file_name"
    else:
        stream, table, column = load_table_stream(path), path, audio_column
    present = columns_of(stream)
    if column not in present:
        key = "the audiofolder convention" if column == "file_name" else "recipe key 'data.audio_column'"
        raise HubtuneError(f"data file '{table}' has no column '{column}' ({key}); columns: {', '.join(present)}")
    return _with_paths(stream, audio_column, table.parent, column)


def load_audio_data_file(path: Path, audio_column: str, label_column: str) -> Dataset:
    """A split given in `data.files`: an audio folder, or a csv/jsonl table whose audio paths are relative to it."""
    if path.is_dir():
        return load_audio_folder(path, audio_column, label_column)
    table = load_table_file(path)
    if audio_column not in table.column_names:
        raise HubtuneError(
            f"data file '{path}' has no column '{audio_column}' (recipe key 'data.audio_column'); "
            f"columns: {', '.join(table.column_names)}"
        )
    resolved = [str(path.parent / value) if isinstance(value, str) else value for value in table[audio_column]]
    return table.remove_columns(audio_column).add_column(audio_column, resolved)


def _open(source: Any, where: str) -> tuple[Any, str]:
    """What soundfile opens for a path, or a `{bytes, path}` dict, and the name messages give it."""
    if isinstance(source, dict) and source.get("bytes"):
        return io.BytesIO(source["bytes"]), source.get("path") or where
    if isinstance(source, dict) and source.get("path"):
        return source["path"], source["path"]
    if isinstance(source, str):
        return source, source
    raise HubtuneError(f"{where}: audio value {source!r} is neither a path nor audio bytes")


def _in_memory(source: Any) -> bool:
    return isinstance(source, dict) and source.get("array") is not None


def audio_name(source: Any, where: str) -> str:
    """How messages name an audio value: its file, or `where` for samples held in memory."""
    return where if _in_memory(source) else _open(source, where)[1]


def decode(source: Any, sampling_rate: int, where: str) -> np.ndarray:
    """A mono float32 waveform at `sampling_rate` from a path, a `{bytes, path}` dict or a `{array, sampling_rate}` dict."""
    if _in_memory(source):
        data = np.asarray(source["array"], dtype=np.float32)
        data = data.reshape(len(data), -1) if data.ndim == 2 else data.reshape(-1, 1)
        rate, name = int(source["sampling_rate"]), where
    else:
        handle, name = _open(source, where)
        try:
            data, rate = soundfile.read(handle, dtype="float32", always_2d=True)
        except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
            raise HubtuneError(f"audio file '{name}' ({where}) cannot be decoded: {error}") from error
    if data.shape[0] == 0:
        raise HubtuneError(f"audio file '{name}' ({where}) is empty: it holds no samples")
    if not np.isfinite(data).all():
        # A float WAV can hold NaN or infinity; one such clip turns every weight it reaches into NaN.
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise HubtuneError(
            f"audio file '{name}' ({where}) holds {bad} samples that are not finite numbers (NaN or inf)"
        )
    waveform = data.mean(axis=1)  # mono-mix: the models take one channel
    if rate != sampling_rate:
        divisor = math.gcd(rate, sampling_rate)
        waveform = resample_poly(waveform, sampling_rate // divisor, rate // divisor)
    return waveform.astype(np.float32)


def resampled_length(frames: int, rate: int, sampling_rate: int) -> int:
    """The number of samples `decode` makes of `frames` at `rate`: resample_poly rounds its output length up."""
    return -(-frames * sampling_rate // rate)


def audio_length(source: Any, sampling_rate: int, where: str) -> int:
    """The length `decode` gives `source`, in samples at `sampling_rate`, read from the file's header alone.

    A file whose header does not parse, or that holds no samples, is an error naming it, as in `decode`.
    """
    if _in_memory(source):
        frames, rate, name = len(source["array"]), int(source["sampling_rate"]), where
    else:
        handle, name = _open(source, where)
        try:
            header = soundfile.info(handle)
        except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
            raise HubtuneError(f"audio file '{name}' ({where}) cannot be decoded: {error}") from error
        frames, rate = header.frames, header.samplerate
    if frames == 0:
        raise HubtuneError(f"audio file '{name}' ({where}) is empty: it holds no samples")
    return resampled_length(frames, rate, sampling_rate)


def undecoded_audio(dataset: Dataset, column: str) -> Dataset:
    """The dataset with a Hub `Audio` column as `Audio(decode=False)`: its paths or bytes, for `decode`."""
    if isinstance(dataset.features.get(column), Audio):
        return dataset.cast_column(column, Audio(decode=False))
    return dataset


def undecoded_stream(stream: IterableDataset, column: str) -> IterableDataset:
    """A stream with a Hub `Audio` column as the `{bytes, path}` struct that Audio stores, which `decode` reads.
    A plain struct rather than `Audio(decode=False)`: a few rows of a stream are turned into a Dataset where they
    are needed whole (the export check's probe), and an Audio column would be re-encoded through torchcodec there."""
    if not isinstance((stream.features or {}).get(column), Audio):
        return stream
    return stream.cast_column(column, Features({"bytes": Value("binary"), "path": Value("string")}))


def audio_lengths(dataset: Dataset, column: str, sampling_rate: int, locate: Callable[[int], str]) -> list[int]:
    """Every row's `audio_length`; a bad file is an error naming the file and row.

    Read in batches: a column of embedded audio bytes (a Hub split) is never all in memory at once.
    """
    lengths: list[int] = []
    for batch in undecoded_audio(dataset, column).select_columns([column]).iter(batch_size=LENGTH_BATCH):
        lengths += [
            audio_length(value, sampling_rate, locate(len(lengths) + i)) for i, value in enumerate(batch[column])
        ]
    return lengths


def crop(waveform: np.ndarray, max_samples: int | None, start: int = 0) -> np.ndarray:
    """At most `max_samples`, from `start` (a random one in training, drawn by the task)."""
    if max_samples is None or len(waveform) <= max_samples:
        return waveform
    # A start drawn from a header length that overstates the decoded clip still gives a full window.
    start = min(start, len(waveform) - max_samples)
    return waveform[start : start + max_samples]
