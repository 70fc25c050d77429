"""Classifier labels: how a label column is coded (names or ids), the label set, and the per-example targets of
single-label, multi-label and regression data. Used by the classifier tasks; every error names the file, row and
column at fault."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
from datasets import ClassLabel, IterableDataset

from pipelines.data.splits import Locate, Splits, first_row, streamed
from pipelines.errors import HubtuneError
from pipelines.tasks.data_sections import LabelledDataConfig

logger = logging.getLogger(__name__)


def label_name(value: Any) -> Any:
    """A label as the run names it: text without its surrounding spaces ("positive " is "positive": a stray space
    in a CSV must not make a class of its own), a boolean as its text ("True", as a CSV column of True/False
    reads); ids, and anything else, as they are."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        return value.strip()
    return value


def _coding_of(value: Any) -> str | None:
    if isinstance(value, str):
        return "names"
    if isinstance(value, int) and not isinstance(value, bool):
        return "ids"
    return None


def _kind_of(value: Any) -> str | None:
    """'names', 'ids', or 'digit names' for strings that are numbers ("0", "1"): those read as ids."""
    coding = _coding_of(value)
    return "digit names" if coding == "names" and value.strip().isdigit() else coding


def label_coding(config: LabelledDataConfig, splits: Splits) -> str:
    """How this run writes its labels, read from the train split: 'names', or 'ids' (positions in `data.labels`).

    One coding per run: a split that mixes them, or names that are numbers next to names that are words ("0"
    beside "negative"), is an error naming the file and row, never a silent guess.
    """
    train = splits[splits.reference_role]
    if isinstance((train.features or {}).get(config.label_column), ClassLabel):
        return "names"
    locate, first = splits.locate(splits.reference_role), None
    # A stream is not read ahead: its first row sets the coding, and `label_ids` holds every later row to it.
    values = [first_row(train)[config.label_column]] if streamed(train) else train[config.label_column]
    for row, written in enumerate(values):
        if written is None:
            continue
        value = label_name(written)
        if value == "":
            raise HubtuneError(f"{locate(row)}: label {written!r} in column '{config.label_column}' is blank")
        kind = _kind_of(value)
        if kind is None:
            raise HubtuneError(
                f"{locate(row)}: label {value!r} in column '{config.label_column}' is neither a name nor an integer id"
            )
        if first is None:
            first = (row, value, kind)
        elif kind != first[2] and not (config.labels and "names" in kind and "names" in first[2]):
            raise HubtuneError(
                f"{locate(row)}: label {value!r} in column '{config.label_column}' is written as {kind}, but "
                f"{locate(first[0])} holds {first[1]!r} ({first[2]}); write every label as a name, or every label "
                "as an integer id with the names in 'data.labels'"
            )
    return "ids" if first is not None and first[2] == "ids" else "names"


def resolve_labels(config: LabelledDataConfig, splits: Splits, known: list[str] | None = None) -> tuple[list[str], str]:
    """The label names in id order and the run's label coding (`label_coding`). The names are `known` (a reloaded
    run's), else the recipe's list, else the dataset's ClassLabel names, else read from train."""
    coding = label_coding(config, splits)
    if known:
        return list(known), coding
    if config.labels:
        return list(config.labels), coding
    feature = (splits["train"].features or {}).get(config.label_column)
    if isinstance(feature, ClassLabel):
        return list(feature.names), coding
    if streamed(splits["train"]):
        raise HubtuneError(
            f"{splits.sources['train']}: with 'data.streaming' the label names must be listed in 'data.labels' "
            "(in id order): a stream is not read ahead to find them"
        )
    if coding == "names":
        return sorted({label_name(v) for v in splits["train"].unique(config.label_column) if v is not None}), coding
    raise HubtuneError(
        f"{splits.sources['train']}: column '{config.label_column}' holds label ids without names; "
        "list the names in 'data.labels' (in id order)"
    )


def encode_stream_labels(
    stream: IterableDataset, column: str, names: list[str], locate: Locate, coding: str = "names"
) -> IterableDataset:
    """The stream's labels as ids in a `labels` column (`label_ids`), applied as it is read: a bad label stops
    training when it reaches the row."""
    feature = (stream.features or {}).get(column)

    def encode(batch: dict[str, list], positions: list[int]) -> dict[str, list]:
        return {"labels": label_ids(batch[column], feature, column, names, lambda i: locate(positions[i]), coding)}

    return stream.map(encode, batched=True, with_indices=True, remove_columns=[column] if column == "labels" else None)


def label_ids(values: list[Any], feature: Any, column: str, names: list[str], locate: Locate, coding: str) -> list[int]:
    """The label id of each value. Labels must be written in the run's `coding` (a ClassLabel column is names by
    construction); an unknown label or another coding is an error naming the row (`locate(i)` names the i-th)."""
    if isinstance(feature, ClassLabel):
        values, coding = [feature.names[v] for v in values], "names"
    index = {name: i for i, name in enumerate(names)}
    ids = []
    for row, written in enumerate(values):
        value = label_name(written)
        if _coding_of(value) not in (coding, None):
            kind = "an integer id" if coding == "names" else "a name"
            raise HubtuneError(
                f"{locate(row)}: label {value!r} in column '{column}' is {kind}, but this run's labels are "
                f"{coding} (as in its train split); write every split's labels the same way"
            )
        if coding == "names" and isinstance(value, str) and value in index:
            ids.append(index[value])
        elif coding == "ids" and _coding_of(value) == "ids" and 0 <= value < len(names):
            ids.append(value)
        else:
            raise HubtuneError(f"{locate(row)}: label {value!r} in column '{column}' is not in the label list {names}")
    return ids


def missing_classes(names: list[str], train_ids: Iterable[int], source: str) -> list[str]:
    """A warning (logged, and returned for the run's report) for classes no training example has."""
    seen = set(train_ids)
    missing = [name for i, name in enumerate(names) if i not in seen]
    if not missing:
        return []
    warning = (
        f"{len(missing)} of {len(names)} classes have no training example in {source}: "
        f"{', '.join(missing[:20])}{' ...' if len(missing) > 20 else ''}; the model can hardly predict them"
    )
    logger.warning(warning)
    return [warning]


def label_sets(values: list[Any], column: str, separator: str | None, locate: Locate) -> list[list[Any]]:
    """Each row's labels (multi_label): a list as it stands, or a string split at `separator`."""
    sets = []
    for row, value in enumerate(values):
        if isinstance(value, list):
            sets.append([label_name(label) for label in value])
        elif isinstance(value, str) and separator is not None:
            sets.append([part.strip() for part in value.split(separator) if part.strip()])
        else:
            written = "a list of labels" + (f" or a string of labels separated by {separator!r}" if separator else "")
            raise HubtuneError(
                f"{locate(row)}: column '{column}' holds {value!r}, not {written} (data.problem_type: multi_label"
                + ("" if separator else "; set 'data.label_separator' for labels joined in one string")
                + ")"
            )
    return sets


def resolve_label_set(config: LabelledDataConfig, splits: Splits, known: list[str] | None = None) -> list[str]:
    """The class names of multi-label data in id order: `known` (a reloaded run's), the recipe's list, or the
    names the train split uses, sorted."""
    if known:
        return list(known)
    if config.labels:
        return list(config.labels)
    train = splits["train"]
    sets = label_sets(train[config.label_column], config.label_column, config.label_separator, splits.locate("train"))
    names = {label for labels in sets for label in labels}
    if any(not isinstance(name, str) for name in names):
        raise HubtuneError(
            f"{splits.sources['train']}: column '{config.label_column}' holds label ids without names; "
            "list the names in 'data.labels' (in id order)"
        )
    return sorted(names)


def multi_hot(
    values: list[Any], column: str, names: list[str], separator: str | None, locate: Locate
) -> list[list[float]]:
    """Each row's labels as a multi-hot vector of floats (binary cross-entropy's targets); a label that is neither a
    name in `names` nor an id below their number is an error naming the row."""
    index = {name: i for i, name in enumerate(names)}
    vectors = []
    for row, labels in enumerate(label_sets(values, column, separator, locate)):
        vector = [0.0] * len(names)
        for label in labels:
            if isinstance(label, str) and label in index:
                vector[index[label]] = 1.0
            elif isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(names):
                vector[label] = 1.0
            else:
                raise HubtuneError(
                    f"{locate(row)}: label {label!r} in column '{column}' is not in the label list {names}"
                )
        vectors.append(vector)
    return vectors


def float_targets(values: list[Any], column: str, locate: Locate) -> list[float]:
    """Regression targets: numbers, or strings that read as one (a csv column with one bad value is all strings);
    anything else, or a value that is not finite, is an error naming the row."""
    targets = []
    for row, value in enumerate(values):
        try:
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise ValueError
            target = float(value)
        except ValueError:
            target = float("nan")
        if not np.isfinite(target):
            raise HubtuneError(
                f"{locate(row)}: column '{column}' holds {value!r}, not a number (data.problem_type: regression)"
            )
        targets.append(target)
    return targets
