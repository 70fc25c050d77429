"""Raw splits from the Hub or local files (or given in memory: pipelines/data/in_memory.py), checked before anything
is trained or written.

Tasks ask this module for `train` / `validation` / `test` datasets and then check their own columns with
`require_columns`; every error names the file (or Hub split) and the column or value at fault.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import datasets
import numpy as np
import pyarrow.compute as pc
from datasets import Dataset, IterableDataset, Value
from sklearn.model_selection import train_test_split

from pipelines.config import DataConfig
from pipelines.data.json_faults import is_blank, json_fault
from pipelines.errors import HubtuneError, require_path
from pipelines.hub_access import offline_reason
from pipelines.processes import process_state

logger = logging.getLogger(__name__)

FILE_BUILDERS = {
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"sep": "\t"}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".parquet": ("parquet", {}),
}


# The most text one cell of a data file may hold. A cell past it is a broken file (a quote left open in a csv makes
# every line up to the next quote one cell) far more often than a real example, and tokenizing it whole before
# truncation costs about 150 times its size in memory (one 50 MB cell: 7 GB).
MAX_CELL_BYTES = 1 << 20
# "data file 'x.csv', row 12" for a row position in a prepared split: error messages name the file's own row.
Locate = Callable[[int], str]
# Examples a streamed train split is shuffled within (datasets' shuffle buffer): a stream cannot be permuted whole.
STREAM_SHUFFLE_BUFFER = 10_000
# A split as read: in full (Arrow, memory-mapped) or, with `data.streaming`, as a stream.
AnySplit: TypeAlias = Dataset | IterableDataset


@dataclass
class Splits:
    """Datasets by role (`train`, `validation`, `test`), each with a human name of where it came from.

    `rows` maps a split that is a subset of its source (capped by `data.max_*_samples`, or carved out of train
    by `data.validation_fraction`) to the source's row index of each of its rows, so that messages name the
    row a user finds in the file.
    """

    datasets: dict[str, Any] = field(default_factory=dict)  # Dataset, or IterableDataset when streaming
    sources: dict[str, str] = field(default_factory=dict)
    rows: dict[str, np.ndarray] = field(default_factory=dict)
    # The share of the train split carved out as validation (`data.validation_fraction`), where it was.
    carved_validation: float | None = None

    def __contains__(self, role: str) -> bool:
        return role in self.datasets

    def __getitem__(self, role: str) -> Dataset:
        return self.datasets[role]

    @property
    def reference_role(self) -> str:
        """The split whose label coding the others must follow: train, or the one a reloaded run scores."""
        return "train" if "train" in self.datasets else next(iter(self.datasets))

    def locate(self, role: str) -> Locate:
        source, rows = self.sources[role], self.rows.get(role)
        return lambda index: f"{source}, row {(int(rows[index]) if rows is not None else index) + 1}"

    def take(self, role: str, positions: np.ndarray, source_role: str | None = None) -> None:
        """Make `role` the rows at `positions` of split `source_role` (default: itself), keeping file rows."""
        source_role = source_role or role
        rows = self.rows.get(source_role)
        self.rows[role] = rows[positions] if rows is not None else positions
        self.datasets[role] = self.datasets[source_role].select(positions)


def _table_builder(path: Path, streaming: bool = False) -> tuple[str, dict[str, str]]:
    """The datasets builder (and its options) that reads a table file; an error for a missing or other file."""
    require_path(path, "file", "data file")
    if path.suffix.lower() not in FILE_BUILDERS:
        if streaming:
            raise HubtuneError(
                f"data file '{path}': 'data.streaming' reads {', '.join(FILE_BUILDERS)} files or Hub datasets, "
                f"not '{path.suffix}'"
            )
        raise HubtuneError(
            f"data file '{path}': unsupported extension '{path.suffix}' (use {', '.join(FILE_BUILDERS)})"
        )
    return FILE_BUILDERS[path.suffix.lower()]


def _unreadable(path: Path, builder: str, error: BaseException) -> HubtuneError:
    """One line for a table file that datasets could not read; a JSON file's names its line as an editor counts."""
    # datasets reports a file with a header and no rows as a split instruction with no data.
    if "corresponds to no data" in str(error) or is_blank(path):
        return HubtuneError(f"data file '{path}' is empty: it has no rows")
    fault = json_fault(path) if builder == "json" else None
    if fault is not None:
        return HubtuneError(f"data file '{path}', {fault}")
    return HubtuneError(f"data file '{path}' does not parse as {builder}: {error.__cause__ or error}")


def load_table_file(path: Path) -> Dataset:
    """A csv/tsv/json/jsonl/parquet file as one Dataset; the default `Task.load_data_file`. No text cell may hold
    more than `MAX_CELL_BYTES`."""
    builder, options = _table_builder(path)
    try:
        table = datasets.load_dataset(builder, data_files=str(path), split="train", **options)
    except StopIteration as error:  # datasets' word for a file with nothing in it
        raise HubtuneError(f"data file '{path}' is empty: it has no rows") from error
    except (datasets.exceptions.DatasetGenerationError, ValueError, UnicodeDecodeError) as error:
        raise _unreadable(path, builder, error) from error
    _check_cell_sizes(table, path, builder)
    return table


def _check_cell_sizes(table: Dataset, path: Path, builder: str) -> None:
    """The first text cell over `MAX_CELL_BYTES` is one line naming its row and column. Cell sizes are read from
    the Arrow column's offsets: no cell is read, however large."""
    for column, feature in table.features.items():
        if not (isinstance(feature, Value) and feature.dtype in ("string", "large_string")):
            continue
        sizes = pc.binary_length(table.with_format("arrow")[column])
        position = pc.index(pc.greater(sizes, MAX_CELL_BYTES), True).as_py()
        if position >= 0:
            hint = (
                "; a quote left open in a csv makes every line up to the next quote one cell"
                if builder == "csv"
                else ""
            )
            raise HubtuneError(
                f"data file '{path}', row {position + 1}: column '{column}' holds {sizes[position].as_py():,} bytes "
                f"of text, more than the {MAX_CELL_BYTES:,} (1 MiB) a cell may hold{hint}"
            )


def load_table_stream(path: Path) -> IterableDataset:
    """A csv/tsv/json/jsonl/parquet file as a stream, read as training goes (`data.streaming`)."""
    builder, options = _table_builder(path, streaming=True)
    try:
        stream = datasets.load_dataset(builder, data_files=str(path), split="train", streaming=True, **options)
        next(iter(stream))  # the first rows, read now: a file that does not parse fails at load, not mid-run
    except StopIteration as error:
        raise HubtuneError(f"data file '{path}' is empty: it has no rows") from error
    except (datasets.exceptions.DatasetGenerationError, ValueError, UnicodeDecodeError) as error:
        raise _unreadable(path, builder, error) from error
    return stream


def streamed(dataset: Any) -> bool:
    return isinstance(dataset, IterableDataset)


def columns_of(dataset: AnySplit) -> list[str]:
    """A split's column names; a stream whose format does not declare them (csv) shows them in its first row."""
    if dataset.column_names is not None:
        return list(dataset.column_names)
    return list(next(iter(dataset)))


def first_row(dataset: AnySplit) -> dict[str, Any]:
    return dataset[0] if isinstance(dataset, Dataset) else next(iter(dataset))


def _load_hub(config: DataConfig, streaming: bool = False) -> dict[str, Any]:
    try:
        loaded = datasets.load_dataset(
            config.dataset, config.dataset_config, revision=config.revision, streaming=streaming
        )
    except (FileNotFoundError, ConnectionError, datasets.exceptions.DatasetNotFoundError) as error:
        reason = offline_reason()
        if reason:
            raise HubtuneError(
                f"Hub dataset '{config.dataset}' could not be loaded: it is not in the local datasets cache and "
                f"{reason}; load it once where the Hub can be reached, or give local files in 'data.files'"
            ) from error
        raise HubtuneError(
            f"Hub dataset '{config.dataset}' could not be loaded ({type(error).__name__}); offline it must be in the "
            "local datasets cache, or give local files in 'data.files'"
        ) from error
    return dict(loaded)


@dataclass
class SplitSource:
    """Data splits by name as a source holds them, before roles are given: local files, a Hub dataset, or data
    handed to `Recipe.run(data=...)` (pipelines/data/in_memory.py)."""

    datasets: dict[str, AnySplit]
    origins: dict[str, str]  # split name -> how messages name it ("data file 'x.csv'", "split 'train'")
    where: str  # how messages name the source as a whole


def load_splits(
    config: DataConfig,
    seed: int,
    load_file: Callable[[Path], Dataset] = load_table_file,
    roles: Collection[str] = ("train", "validation", "test"),
    path_kind: str | None = None,
    load_stream: Callable[[Path], IterableDataset] | None = None,
) -> Splits:
    """Load the recipe's splits, carve validation from train if asked, cap sizes, refuse empty splits.

    `load_file` reads one local split; tasks with formats of their own (CoNLL, image or audio folders)
    pass theirs, and `path_kind` what it reads (`Task.data_path_kind`: "file", "folder", or None for either).
    With `data.streaming`, `load_stream` reads one local split as a stream from the same paths as `load_file`
    (audio folders); without it, streams are read from table files only (`load_table_stream`).
    `roles` limits the result to the splits a caller scores (`hubtune evaluate --split`); local files of other
    splits are not even read.
    """
    config.check_source()
    needed = {_wanted(config)[role] for role in roles} | ({config.train_split} if _carves(config, roles) else set())
    streaming = config.is_streamed()
    if config.files:
        load: Callable[[Path], AnySplit] = load_file
        kind = path_kind
        if streaming:
            load, kind = (load_stream, path_kind) if load_stream is not None else (load_table_stream, "file")
        for split, path in config.files.items():
            if split in needed:
                require_path(path, kind, "data folder" if kind == "folder" else "data file", f"data.files.{split}")
        source = SplitSource(
            {name: load(Path(path)) for name, path in config.files.items() if name in needed},
            {name: f"data file '{path}'" for name, path in config.files.items()},
            "data.files",
        )
    else:
        available = _load_hub(config, streaming)
        origins = {name: f"split '{name}' of Hub dataset '{config.dataset}'" for name in available}
        source = SplitSource(available, origins, f"Hub dataset '{config.dataset}'")
    return choose_splits(source, config, seed, roles)


def _wanted(config: DataConfig) -> dict[str, str | None]:
    """Each role's split name in the recipe."""
    return {"train": config.train_split, "validation": config.validation_split, "test": config.test_split}


def _carves(config: DataConfig, roles: Collection[str]) -> bool:
    return "validation" in roles and config.validation_fraction is not None


def choose_splits(
    source: SplitSource, config: DataConfig, seed: int, roles: Collection[str] = ("train", "validation", "test")
) -> Splits:
    """The splits of `source` that the recipe's roles name, validation carved from train if asked, sizes capped,
    empty splits refused: the same for every source, so that its data trains and fails alike."""
    available, carved = source.datasets, _carves(config, roles)
    splits = Splits()
    for role, name in _wanted(config).items():
        if name is None or (role not in roles and not (carved and role == "train")):
            continue
        if name in available:
            splits.datasets[role], splits.sources[role] = available[name], source.origins[name]
        elif role == "train":
            raise HubtuneError(f"train split '{name}' not found in {source.where} (have: {', '.join(available)})")
        elif not (role == "validation" and config.validation_fraction):
            raise HubtuneError(
                f"{role} split '{name}' not found in {source.where} (have: {', '.join(available)}); "
                f"set 'data.{role}_split' to one of them or to null"
                + (" or set 'data.validation_fraction'" if role == "validation" else "")
            )
    if config.is_streamed():
        return _cap_streams(splits, config)
    for role, dataset in splits.datasets.items():
        if len(dataset) == 0:
            raise HubtuneError(f"{splits.sources[role]} ({role} split) is empty")
    if config.validation_fraction is not None and carved and "validation" not in splits:
        # The permutation `Dataset.shuffle(seed=seed)` draws, kept so that rows can still be named in the file.
        order = np.random.default_rng(seed).permutation(len(splits["train"]))
        n_validation = max(1, round(len(order) * config.validation_fraction))
        if n_validation >= len(order):
            raise HubtuneError(f"'data.validation_fraction' {config.validation_fraction} leaves no training data")
        parts = _stratified(config, splits["train"], n_validation, seed) or (order[:n_validation], order[n_validation:])
        splits.take("validation", parts[0], source_role="train")
        splits.take("train", parts[1])
        splits.carved_validation = config.validation_fraction
        splits.sources["validation"] = (
            f"{splits.sources['train']} (the {config.validation_fraction:.0%} carved out for validation)"
        )
    for role in [role for role in splits.datasets if role not in roles]:
        del splits.datasets[role], splits.sources[role]
        splits.rows.pop(role, None)
    for role, cap in _sample_caps(config).items():
        if cap is not None and role in splits and len(splits[role]) > cap:
            # A random subset, not the first rows: files are often sorted by label.
            splits.take(role, np.random.default_rng(seed).permutation(len(splits[role]))[:cap])
    return splits


def _stratified(
    config: DataConfig, train: Dataset, n_validation: int, seed: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Row positions of validation and train carved with each class's share kept (single-label classes only), or
    None where the labels cannot be stratified: validation of a rare class would be left to chance."""
    column = config.stratify_column()
    if column is None or column not in train.column_names:
        return None  # nothing to stratify by; a missing column is named by the task's own column check
    labels = np.array([str(value) for value in train[column]])
    classes, counts = np.unique(labels, return_counts=True)
    if counts.min() < 2 or not len(classes) <= n_validation <= len(labels) - len(classes):
        logger.warning(
            "'data.validation_fraction' carves validation at random, not by class: stratifying needs two rows of "
            "every class and at least one row of each in both parts"
        )
        return None
    kept, validation = train_test_split(
        np.arange(len(labels)), test_size=n_validation, stratify=labels, random_state=seed
    )
    return np.asarray(validation), np.asarray(kept)


def _sample_caps(config: DataConfig) -> dict[str, int | None]:
    """Each role's `data.max_*_samples`."""
    return {"train": config.max_train_samples, "validation": config.max_eval_samples, "test": config.max_test_samples}


def _cap_streams(splits: Splits, config: DataConfig) -> Splits:
    """Streams capped by `data.max_*_samples`: their first rows, since a stream has no random subset."""
    for role, cap in _sample_caps(config).items():
        if role in splits and cap is not None:
            splits.datasets[role] = splits[role].take(cap)
    return splits


def shuffle_stream(stream: IterableDataset, seed: int) -> IterableDataset:
    """A prepared training stream, shuffled within a buffer (and by file shard). Done after the task's
    preprocessing, whose errors name rows by their position in the file, not in the shuffled order."""
    return stream.shuffle(seed=seed, buffer_size=STREAM_SHUFFLE_BUFFER)


def map_cached(dataset: Dataset, function: Callable, config: DataConfig, description: str, **options: Any) -> Dataset:
    """`Dataset.map(batched=True)` kept on disk by datasets, keyed by the data's fingerprint and the function's
    hash: a second run on the same data with the same processor reads it back instead of redoing it. Under
    `accelerate launch` the main process writes it first and the other ranks then read it.

    A dataset held in memory (built from Python lists) has no cache folder; it is mapped in memory as before.
    """
    with process_state().main_process_first():
        return dataset.map(
            function, batched=True, num_proc=config.preprocessing_num_workers, desc=description, **options
        )


def first_missing_text(dataset: Dataset, column: str) -> int | None:
    """The position of the first row whose `column` holds no text, or None. A string column is checked by
    Arrow without turning a million rows into Python strings; other columns row by row."""
    feature = dataset.features[column]
    if isinstance(feature, Value) and feature.dtype in ("string", "large_string"):
        missing = pc.is_null(dataset.with_format("arrow")[column])
        position = pc.index(missing, True).as_py()
        return None if position < 0 else position
    for row, value in enumerate(dataset[column]):
        if not isinstance(value, str):
            return row
    return None


def require_columns(dataset: AnySplit, columns: Mapping[str, str | None], source: str) -> None:
    """`columns` maps recipe key -> column name; a missing one is an error naming both."""
    present = columns_of(dataset)
    for key, column in columns.items():
        if column is not None and column not in present:
            raise HubtuneError(
                f"{source} has no column '{column}' (recipe key 'data.{key}'); columns: {', '.join(present)}"
            )
