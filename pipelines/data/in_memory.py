"""Splits handed to `Recipe.run(data=...)` in memory instead of the recipe's files: a `datasets.DatasetDict`, or a
dict of split name -> `datasets.Dataset`, pandas `DataFrame` or list of dicts (one per row).

Each split becomes a Dataset named "split 'train'" in messages and then goes where a file's split goes
(`pipelines.data.splits.choose_splits`, then the task's own checks and preprocessing), so it is capped, carved and
refused exactly as the same rows in a file would be. What each split was is recorded in the recipe's
`data.in_memory` (and so in the run folder): no file holds it, and a run folder cannot read it back.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa
from datasets import Dataset

from pipelines.config import DataConfig
from pipelines.data.splits import AnySplit, Splits, SplitSource, choose_splits
from pipelines.errors import HubtuneError

GIVEN = "Recipe.run(data=...)"
KINDS = "a datasets.Dataset, a pandas DataFrame or a list of dicts (column -> value)"
# A value shown in a message is cut to this many characters: a row may hold an image or a waveform.
SHOWN = 60
# What one split may be given as, and what the whole argument may be (a DatasetDict is a dict of Datasets).
GivenSplit: TypeAlias = Dataset | pd.DataFrame | list[dict[str, Any]]
GivenData: TypeAlias = Mapping[str, GivenSplit]


@dataclass
class InMemoryData:
    """The given splits as Datasets, and what each was (`data.in_memory`)."""

    source: SplitSource
    record: dict[str, str]

    def splits(self, config: DataConfig, seed: int) -> Splits:
        """The run's splits, chosen, carved and capped by the recipe as files are (`choose_splits`)."""
        return choose_splits(self.source, config, seed)


def read_in_memory(data: Any, config: DataConfig) -> InMemoryData:
    """`data` as Datasets, each split checked for what it is; a split the recipe does not name, or a value of
    another kind, is one line naming the split (and row)."""
    if config.files or config.dataset:
        key = "data.files" if config.files else "data.dataset"
        raise HubtuneError(
            f"{GIVEN} was given data, and the recipe names '{key}' as well: keep one (remove '{key}' from the "
            "recipe, or run it without data)"
        )
    if config.is_streamed():
        raise HubtuneError(
            f"'data.streaming' reads files or a Hub dataset as a stream; data given to {GIVEN} is in memory "
            "already: set 'data.streaming' to false"
        )
    if not isinstance(data, Mapping):
        raise HubtuneError(
            f"{GIVEN} takes a datasets.DatasetDict or a dict of split name -> {KINDS}, got {type(data).__name__}"
        )
    if not data:
        raise HubtuneError(f"{GIVEN} was given no split: give at least the '{config.train_split}' split")
    roles = {"train": config.train_split, "validation": config.validation_split, "test": config.test_split}
    known = {name: role for role, name in roles.items() if name is not None}
    datasets: dict[str, AnySplit] = {}
    origins: dict[str, str] = {}
    record: dict[str, str] = {}
    for key, value in data.items():
        name = str(key)
        if name not in known:
            named = ", ".join(f"'{split}' ('data.{role}_split')" for split, role in known.items())
            raise HubtuneError(
                f"{GIVEN}: split '{name}' is none of the recipe's splits ({named}); rename it, or set that key"
            )
        origins[name] = f"split '{name}'"
        datasets[name], record[name] = _as_dataset(value, origins[name])
    return InMemoryData(SplitSource(datasets, origins, f"the data given to {GIVEN}"), record)


def _as_dataset(value: Any, source: str) -> tuple[Dataset, str]:
    """One split as a Dataset with no format set (rows as Python values, as a file's), and what it was."""
    if isinstance(value, Dataset):
        return value.with_format(None), f"datasets.Dataset, {len(value)} rows, fingerprint {value._fingerprint}"
    if isinstance(value, pd.DataFrame):
        return _from_frame(value, source), f"in-memory DataFrame, {len(value)} rows"
    if isinstance(value, list):
        return _from_rows(value, source), f"in-memory list, {len(value)} rows"
    raise HubtuneError(f"{source} of {GIVEN} is a {type(value).__name__}; give {KINDS}")


def _from_frame(frame: pd.DataFrame, source: str) -> Dataset:
    try:
        return Dataset.from_pandas(frame, preserve_index=False)
    except (TypeError, ValueError, pa.ArrowException):
        # Arrow converts a DataFrame column by its dtype; an object column of values it has no type for (PIL
        # images) or of mixed kinds goes through datasets' own inference from Python values, as a list's rows do
        # (PIL images become an Image column), and mixed kinds are named there by row. NaN is pandas' missing value
        # there too, as Arrow reads it in typed columns.
        return _from_rows(frame.astype(object).where(frame.notna(), None).to_dict("records"), source)


def _from_rows(rows: list[Any], source: str) -> Dataset:
    for row, value in enumerate(rows):
        if not isinstance(value, Mapping):
            raise HubtuneError(
                f"{source}, row {row + 1}: holds {_shown(value)} ({_kind(value)}); each row is a dict (column -> value)"
            )
    try:
        return Dataset.from_list([dict(row) for row in rows])
    except (TypeError, ValueError, pa.ArrowException) as error:
        raise _mixed_kinds(rows, source) or HubtuneError(
            f"{source}: its rows do not make one table ({error})"
        ) from error


def _kind(value: Any) -> str:
    """What a message calls the kind of a value; Arrow holds one kind per column (ints and floats are one)."""
    if isinstance(value, (bool, np.bool_)):
        return "a boolean"
    if isinstance(value, numbers.Number):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, Mapping):
        return "a dict"
    if isinstance(value, (list, tuple, np.ndarray)):
        return "a list"
    return f"a {type(value).__name__}"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN else f"{text[:SHOWN]}..."


def _mixed_kinds(rows: list[Mapping[str, Any]], source: str) -> HubtuneError | None:
    """The first value whose kind differs from its column's first value, as one line naming both rows."""
    for column in rows[0] if rows else ():
        first: tuple[int, Any] | None = None
        for row, value in enumerate(item.get(column) for item in rows):
            if value is None:
                continue
            if first is None:
                first = (row, value)
            elif _kind(value) != _kind(first[1]):
                return HubtuneError(
                    f"{source}, row {row + 1}: column '{column}' holds {_shown(value)} ({_kind(value)}), but row "
                    f"{first[0] + 1} holds {_shown(first[1])} ({_kind(first[1])}); a column holds one kind of value"
                )
    return None
