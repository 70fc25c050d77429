"""Reading classifier labels: surrounding spaces, booleans and blanks."""

from __future__ import annotations

import pytest

from pipelines import HubtuneError, load_recipe_config


def test_labels_with_surrounding_spaces_are_one_class(recipe_values):
    """A stray space after a label in a CSV ("positive ") used to make a class of its own (4 classes from 2)."""
    from datasets import Dataset

    from pipelines.data.splits import Splits
    from pipelines.tasks.labels import label_ids, resolve_labels

    config = load_recipe_config(values={**recipe_values, "data": {**recipe_values["data"], "labels": None}}).data
    values = ["positive", "positive ", " negative", "negative\t"]
    splits = Splits(
        {"train": Dataset.from_dict({"text": ["a", "b", "c", "d"], "label": values})},
        {"train": "data file 'train.csv'"},
    )
    names, coding = resolve_labels(config, splits)
    assert names == ["negative", "positive"] and coding == "names"
    assert label_ids(values, None, "label", names, str, coding) == [1, 1, 0, 0]


def test_boolean_labels_train_as_the_names_true_and_false(recipe_values):
    """A CSV column of True/False reads as booleans; they are the classes "False" and "True"."""
    from datasets import Dataset

    from pipelines.data.splits import Splits
    from pipelines.tasks.labels import label_ids, resolve_labels

    config = load_recipe_config(values={**recipe_values, "data": {**recipe_values["data"], "labels": None}}).data
    splits = Splits(
        {"train": Dataset.from_dict({"text": ["a", "b", "c"], "label": [True, False, True]})},
        {"train": "data file 'train.csv'"},
    )
    names, coding = resolve_labels(config, splits)
    assert names == ["False", "True"] and label_ids([True, False], None, "label", names, str, coding) == [1, 0]
    with pytest.raises(HubtuneError, match=r"'data.labels\[0\]' must be text, got False: quote it \('False'\)"):
        load_recipe_config(values=recipe_values, overrides=["data.labels=[false, true]"])
    quoted = load_recipe_config(values=recipe_values, overrides=["data.labels=['False', 'True']"])
    assert quoted.data.labels == ["False", "True"]


def test_a_blank_label_is_an_error_naming_the_row(recipe_values):
    from datasets import Dataset

    from pipelines.data.splits import Splits
    from pipelines.tasks.labels import resolve_labels

    config = load_recipe_config(values={**recipe_values, "data": {**recipe_values["data"], "labels": None}}).data
    splits = Splits(
        {"train": Dataset.from_dict({"text": ["a", "b"], "label": ["positive", "  "]})},
        {"train": "data file 'train.csv'"},
    )
    with pytest.raises(HubtuneError, match="train.csv', row 2: label ' *' in column 'label' is blank"):
        resolve_labels(config, splits)
