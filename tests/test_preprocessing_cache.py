"""Preprocessing that scales: tokenised splits cached on disk by datasets and reused by the next run, several
processes (`data.preprocessing_num_workers`) giving the same result as one, and errors found in a worker
process still naming the file and row."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from helpers.ner import build_tiny_ner_bert, make_sentence, ner_recipe_values, write_jsonl

from pipelines import HubtuneError, load_recipe_config
from pipelines.data.splits import load_splits
from pipelines.tasks.text_classification import TextClassification
from pipelines.tasks.token_classification import TokenClassification


def _prepare(task_class, values: dict, overrides: list[str] = ()):
    config = load_recipe_config(values=values, overrides=list(overrides))
    task = task_class(config)
    return task.prepare(load_splits(config.data, config.seed, task.load_data_file), task.load_processor())


def test_tokenised_text_is_cached_on_disk_and_reused(recipe_values):
    first = _prepare(TextClassification, recipe_values)
    files = [entry["filename"] for entry in first["train"].cache_files]
    assert files and all(Path(name).is_file() for name in files)
    written = {name: Path(name).stat().st_mtime_ns for name in files}
    # A second run (new task, processor loaded again) reads the same cache file, rewriting nothing.
    second = _prepare(TextClassification, recipe_values)
    assert [entry["filename"] for entry in second["train"].cache_files] == files
    assert {name: Path(name).stat().st_mtime_ns for name in files} == written
    assert second["train"]["input_ids"] == first["train"]["input_ids"]
    # Another max_length is another preprocessing: a new cache file, not a stale hit.
    shorter = _prepare(TextClassification, recipe_values, ["data.max_length=8"])
    assert [entry["filename"] for entry in shorter["train"].cache_files] != files
    assert max(len(ids) for ids in shorter["train"]["input_ids"]) == 8


def test_text_in_several_processes_equals_one(recipe_values):
    one = _prepare(TextClassification, recipe_values, ["data.max_length=16"])
    two = _prepare(TextClassification, recipe_values, ["data.max_length=16", "data.preprocessing_num_workers=2"])
    for role in ("train", "validation", "test"):
        assert two[role]["input_ids"] == one[role]["input_ids"]
        assert two[role]["labels"] == one[role]["labels"]


def test_missing_text_is_found_by_arrow_and_named_by_row(recipe_values, tmp_path):
    lines = Path(recipe_values["data"]["files"]["train"]).read_text().splitlines()
    header, rows = lines[0], lines[1:]
    rows[150] = "," + rows[150].split(",")[-1]  # an empty text cell: read as null
    broken = tmp_path / "train.csv"
    broken.write_text("\n".join([header, *rows]) + "\n")
    recipe_values["data"]["files"]["train"] = str(broken)
    with pytest.raises(HubtuneError, match=rf"data file '{broken}', row 151: column 'text' holds None, not text"):
        _prepare(TextClassification, recipe_values)


@pytest.fixture(scope="module")
def ner_checkpoint(tmp_path_factory) -> Path:
    return build_tiny_ner_bert(tmp_path_factory.mktemp("tiny-ner-bert"))


def _ner_values(checkpoint: Path, folder: Path, broken_row: int | None = None) -> dict:
    rng = random.Random(0)
    files = {}
    for split, n in (("train", 300), ("validation", 40), ("test", 40)):
        rows = [dict(zip(("tokens", "ner_tags"), make_sentence(rng))) for _ in range(n)]
        if split == "train" and broken_row is not None:
            rows[broken_row]["ner_tags"] = rows[broken_row]["ner_tags"][:-1]
        files[split] = str(write_jsonl(folder / f"{split}.jsonl", rows))
    return ner_recipe_values(checkpoint, files, folder / "run")


def test_ner_in_several_processes_equals_one_and_is_cached(ner_checkpoint, tmp_path):
    values = _ner_values(ner_checkpoint, tmp_path)
    one = _prepare(TokenClassification, values)
    two = _prepare(TokenClassification, values, ["data.preprocessing_num_workers=2"])
    for role in ("train", "validation", "test"):
        assert two[role]["labels"] == one[role]["labels"]
        assert two[role]["input_ids"] == one[role]["input_ids"]
    assert one["train"].column_names == ["input_ids", "token_type_ids", "attention_mask", "labels"]
    assert one["train"].cache_files, "JSON lines data is tokenised into datasets' cache"


def test_a_bad_sentence_in_a_worker_process_names_its_row(ner_checkpoint, tmp_path):
    # Row 251 lies in the second of the two processes' shards.
    values = _ner_values(ner_checkpoint, tmp_path, broken_row=250)
    with pytest.raises(HubtuneError, match=r"train\.jsonl', row 251: \d+ words in 'tokens' but \d+ tags"):
        _prepare(TokenClassification, values, ["data.preprocessing_num_workers=2"])
