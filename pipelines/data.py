"""Raw splits from the Hub or local files, checked before anything is trained or written.

Tasks ask this module for `train` / `validation` / `test` datasets and then check their own columns with
`require_columns`; every error names the file (or Hub split) and the column or value at fault.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import datasets
from datasets import ClassLabel, Dataset

from pipelines.config import DataConfig
from pipelines.errors import HubtuneError

logger = logging.getLogger(__name__)

FILE_BUILDERS = {".csv": ("csv", {}), ".tsv": ("csv", {"sep": "\t"}), ".json": ("json", {}),
                 ".jsonl": ("json", {}), ".parquet": ("parquet", {})}


@dataclass
class Splits:
    """Datasets by role (`train`, `validation`, `test`), each with a human name of where it came from."""

    datasets: dict[str, Dataset] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def __contains__(self, role: str) -> bool:
        return role in self.datasets

    def __getitem__(self, role: str) -> Dataset:
        return self.datasets[role]


def load_table_file(path: Path) -> Dataset:
    """A csv/tsv/json/jsonl/parquet file as one Dataset; the default `Task.load_data_file`."""
    if not path.is_file():
        raise HubtuneError(f"data file '{path}' does not exist")
    if path.suffix.lower() not in FILE_BUILDERS:
        raise HubtuneError(f"data file '{path}': unsupported extension '{path.suffix}' (use {', '.join(FILE_BUILDERS)})")
    builder, options = FILE_BUILDERS[path.suffix.lower()]
    try:
        return datasets.load_dataset(builder, data_files=str(path), split="train", **options)
    except (datasets.exceptions.DatasetGenerationError, ValueError, UnicodeDecodeError) as error:
        cause = error.__cause__ or error
        # datasets reports a file with a header and no rows as a split instruction with no data.
        if "corresponds to no data" in str(error):
            raise HubtuneError(f"data file '{path}' is empty: it has no rows") from error
        raise HubtuneError(f"data file '{path}' does not parse as {builder}: {cause}") from error


def _load_hub(config: DataConfig) -> dict[str, Dataset]:
    try:
        loaded = datasets.load_dataset(config.dataset, config.dataset_config, revision=config.revision)
    except (FileNotFoundError, ConnectionError, datasets.exceptions.DatasetNotFoundError) as error:
        raise HubtuneError(
            f"Hub dataset '{config.dataset}' could not be loaded ({type(error).__name__}); offline it must be in the "
            "local datasets cache, or give local files in 'data.files'") from error
    return dict(loaded)


def load_splits(config: DataConfig, seed: int,
                load_file: Callable[[Path], Dataset] = load_table_file) -> Splits:
    """Load the recipe's splits, carve validation from train if asked, cap sizes, refuse empty splits.

    `load_file` reads one local split; tasks with formats of their own (CoNLL, image or audio folders)
    pass theirs.
    """
    if config.files:
        available = {name: load_file(Path(path)) for name, path in config.files.items()}
        origin = {name: f"data file '{path}'" for name, path in config.files.items()}
        where = "data.files"
    else:
        available = _load_hub(config)
        origin = {name: f"split '{name}' of Hub dataset '{config.dataset}'" for name in available}
        where = f"Hub dataset '{config.dataset}'"
    splits = Splits()
    wanted = {"train": config.train_split, "validation": config.validation_split, "test": config.test_split}
    for role, name in wanted.items():
        if name is None:
            continue
        if name in available:
            splits.datasets[role], splits.sources[role] = available[name], origin[name]
        elif role == "train":
            raise HubtuneError(f"train split '{name}' not found in {where} (have: {', '.join(available)})")
        elif not (role == "validation" and config.validation_fraction):
            raise HubtuneError(
                f"{role} split '{name}' not found in {where} (have: {', '.join(available)}); "
                f"set 'data.{role}_split' to one of them or to null"
                + (" or set 'data.validation_fraction'" if role == "validation" else ""))
    for role, dataset in splits.datasets.items():
        if len(dataset) == 0:
            raise HubtuneError(f"{splits.sources[role]} ({role} split) is empty")
    if "validation" not in splits and config.validation_fraction:
        train = splits["train"].shuffle(seed=seed)
        n_validation = max(1, round(len(train) * config.validation_fraction))
        if n_validation >= len(train):
            raise HubtuneError(f"'data.validation_fraction' {config.validation_fraction} leaves no training data")
        splits.datasets["validation"] = train.select(range(n_validation))
        splits.datasets["train"] = train.select(range(n_validation, len(train)))
        splits.sources["validation"] = f"{config.validation_fraction:.0%} of {splits.sources['train']}"
    caps = {"train": config.max_train_samples, "validation": config.max_eval_samples, "test": config.max_test_samples}
    for role, cap in caps.items():
        if cap is not None and role in splits and len(splits[role]) > cap:
            # A random subset, not the first rows: files are often sorted by label.
            splits.datasets[role] = splits[role].shuffle(seed=seed).select(range(cap))
    return splits


def require_columns(dataset: Dataset, columns: dict[str, str | None], source: str) -> None:
    """`columns` maps recipe key -> column name; a missing one is an error naming both."""
    for key, column in columns.items():
        if column is not None and column not in dataset.column_names:
            raise HubtuneError(
                f"{source} has no column '{column}' (recipe key 'data.{key}'); columns: {', '.join(dataset.column_names)}")


def resolve_label_names(config: DataConfig, splits: Splits) -> list[str]:
    """Label names in id order: the recipe's list, else the dataset's ClassLabel names, else read from train."""
    if config.labels:
        return list(config.labels)
    feature = splits["train"].features.get(config.label_column)
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    values = [v for v in splits["train"].unique(config.label_column) if v is not None]
    if all(isinstance(v, str) for v in values):
        return sorted(values)
    raise HubtuneError(
        f"{splits.sources['train']}: column '{config.label_column}' holds label ids without names; "
        "list the names in 'data.labels' (in id order)")


def encode_labels(dataset: Dataset, column: str, names: list[str], source: str) -> Dataset:
    """Map the label column (names or ids) to integer ids in a `labels` column; unknown labels are errors."""
    feature = dataset.features[column]
    values = dataset[column]
    if isinstance(feature, ClassLabel):
        values = [feature.names[v] for v in values]
    index = {name: i for i, name in enumerate(names)}
    ids = []
    for row, value in enumerate(values):
        if isinstance(value, str) and value in index:
            ids.append(index[value])
        elif isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
            ids.append(value)
        else:
            raise HubtuneError(
                f"{source}, row {row + 1}: label {value!r} in column '{column}' is not in the label list {names}")
    if column == "labels":
        dataset = dataset.remove_columns("labels")
    return dataset.add_column("labels", ids)
