"""Data handed to `Recipe.run(data=...)` in memory: the same rows train to the same scores as from files (text, images,
audio), bad data is one line naming the split and row with nothing written, and the run folder says where its data
was."""

from __future__ import annotations

import copy
import csv
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile
import yaml
from conftest import make_recipe_values
from datasets import Audio, Dataset, DatasetDict
from datasets import Image as ImageFeature
from helpers.speech import tiny_wav2vec2_folder, write_tone_folder
from helpers.vision import save_tiny_vit
from PIL import Image

from pipelines import HubtuneError, Recipe
from pipelines.commands.cli import main
from pipelines.data.audio import load_audio_data_file
from pipelines.serving.export import export_run
from pipelines.serving.predictor import Predictor

MEMORY = "Recipe.run\\(data=\\.\\.\\.\\)"


def scores(results: dict) -> dict[str, float]:
    """A run's validation and test numbers, without the timing ones."""
    return {
        key: value
        for key, value in results.items()
        if key.startswith(("eval_", "test_")) and not key.endswith(("runtime", "per_second"))
    }


def assert_same_scores(got: dict, expected: dict) -> None:
    assert scores(got).keys() == scores(expected).keys()
    for key, value in scores(expected).items():
        assert math.isclose(got[key], value, rel_tol=0, abs_tol=1e-6), (key, got[key], value)
    assert got["train_samples"] == expected["train_samples"]


def without_files(values: dict, **data) -> dict:
    """The recipe with no data files: its data comes to run()."""
    values = copy.deepcopy(values)
    values["data"].pop("files", None)
    values["data"].update(data)
    return values


# --- text: files, DataFrames and a DatasetDict ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def text_runs(tiny_bert, sentiment_files, tmp_path_factory):
    """The same rows trained from csv files, as DataFrames and as a DatasetDict; validation is carved out of train and
    train capped, so both apply to in-memory data as to files."""
    root = tmp_path_factory.mktemp("text-runs")
    files = {split: sentiment_files[split] for split in ("train", "test")}

    def values(name: str) -> dict:
        recipe = make_recipe_values(tiny_bert, files, root / name)
        recipe["data"].update(validation_fraction=0.25, max_train_samples=120)
        recipe["training"]["num_train_epochs"] = 2
        return recipe

    frames = {split: pd.read_csv(path) for split, path in files.items()}
    given = DatasetDict({split: Dataset.from_pandas(frame) for split, frame in frames.items()})
    runs = {
        "files": Recipe.from_dict(values("files")).run(),
        "frames": Recipe.from_dict(without_files(values("frames"))).run(data=frames),
        # A recipe that names files is run on data in memory with the override of docs/recipes.md.
        "dataset": Recipe.from_dict(values("dataset"), overrides=["data.files={}"]).run(data=given),
    }
    return root, runs, given


def test_the_same_rows_as_files_dataframes_or_a_dataset_reach_the_same_scores(text_runs):
    _, runs, _ = text_runs
    assert runs["files"]["test_accuracy"] >= 0.8  # it learned: equal scores are not equal failures
    assert runs["files"]["train_samples"] == 120 and runs["files"]["eval_samples"] == 60
    assert_same_scores(runs["frames"], runs["files"])
    assert_same_scores(runs["dataset"], runs["files"])


def test_the_run_folder_records_what_was_given(text_runs):
    root, _, given = text_runs
    frames = yaml.safe_load((root / "frames" / "recipe.yaml").read_text())["data"]
    assert frames["in_memory"] == {"train": "in-memory DataFrame, 240 rows", "test": "in-memory DataFrame, 60 rows"}
    assert not frames["files"] and not frames["dataset"]
    dataset = yaml.safe_load((root / "dataset" / "recipe.yaml").read_text())["data"]
    assert dataset["in_memory"]["train"] == f"datasets.Dataset, 240 rows, fingerprint {given['train']._fingerprint}"
    assert not yaml.safe_load((root / "files" / "recipe.yaml").read_text())["data"]["in_memory"]


def test_its_run_folder_predicts_exports_pushes_and_scores_files_but_not_its_own_splits(
    text_runs, sentiment_files, tmp_path, capsys
):
    root, runs, _ = text_runs
    run_dir = root / "frames"
    assert main(["evaluate", str(run_dir)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (
        f"hubtune: error: run folder '{run_dir}' was trained on data given to Recipe.run(data=...) in memory, which "
        "no file holds, so its test split cannot be read again; score it on a file with --data FILE"
    )

    run = Predictor(run_dir)
    scored = run.evaluate(data_file=sentiment_files["test"])  # the test rows it was scored on, from their file
    assert scored["data_accuracy"] == pytest.approx(runs["frames"]["test_accuracy"], abs=1e-6)
    assert run.predict(["a wonderful film"])[0]["label"] == "positive"
    assert export_run(run_dir, tmp_path / "export", merge=False)["probe"] == "made-up inputs"

    assert main(["push", str(run_dir), "--repo-id", "me/x", "--dry-run", str(tmp_path / "upload")]) == 0
    card = (tmp_path / "upload" / "README.md").read_text()
    assert "Data: data held in memory, given to `Recipe.run(data=...)` (`train`: in-memory DataFrame, 240 rows;" in card
    assert "neither this repository nor the run folder holds it" in card and "hubtune train recipe.yaml" not in card

    # Its recipe, trained again, has nothing to read.
    again = Recipe.from_yaml(run_dir / "recipe.yaml", overrides=[f"output_dir={tmp_path / 'again'}"])
    with pytest.raises(HubtuneError, match=f"its run was trained on data given to {MEMORY} \\(train: in-memory"):
        again.run()
    assert not (tmp_path / "again").exists()


# --- bad in-memory data: one line, nothing written -----------------------------------------------------------------

GOOD = [{"text": "a good film", "label": "positive"}, {"text": "a dull plot", "label": "negative"}] * 3


def write_rows(path: Path, rows: list[dict]) -> str:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def train_only(values: dict) -> dict:
    return without_files(values, validation_split=None, test_split=None)


def refused(values: dict, data) -> str:
    """The one-line error of a run on `data`, after checking that it left no run folder."""
    with pytest.raises(HubtuneError) as caught:
        Recipe.from_dict(values).run(data=data)
    assert not Path(values["output_dir"]).exists()
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    "rows, labels",
    [
        pytest.param([*GOOD, {"text": "a fine cast", "label": "x"}], ["negative", "positive"], id="unknown label"),
        pytest.param([*GOOD, {"text": "a fine cast", "label": "1"}], None, id="mixed label coding"),
        pytest.param([*GOOD, {"text": None, "label": "positive"}], None, id="no text"),
        pytest.param([{"text": row["text"]} for row in GOOD], None, id="missing column"),
    ],
)
def test_bad_rows_get_the_message_they_get_in_a_file_with_the_split_named(recipe_values, tmp_path, rows, labels):
    values = train_only(recipe_values)
    values["data"]["labels"] = labels
    from_file = copy.deepcopy(values)
    from_file["data"]["files"] = {"train": write_rows(tmp_path / "train.csv", rows)}
    with pytest.raises(HubtuneError) as caught:
        Recipe.from_dict(from_file).run()
    expected = re.sub(r"data file '[^']*'", "split 'train'", str(caught.value))
    assert expected.startswith("split 'train'") and "data file" not in expected
    for data in (pd.DataFrame(rows), rows, Dataset.from_pandas(pd.DataFrame(rows))):
        assert refused(values, {"train": data}) == expected


@pytest.mark.parametrize(
    "data, message",
    [
        ({"train": pd.DataFrame(columns=["text", "label"])}, "^split 'train' \\(train split\\) is empty$"),
        ({"train": []}, "^split 'train' \\(train split\\) is empty$"),
        (
            {"train": [*GOOD, {"text": "a fine cast", "label": 1}]},
            "^split 'train', row 7: column 'label' holds 1 \\(a number\\), but row 1 holds 'positive' \\(text\\); "
            "a column holds one kind of value$",
        ),
        (
            {"train": pd.DataFrame([*GOOD, {"text": 5, "label": "positive"}])},
            "^split 'train', row 7: column 'text' holds 5 \\(a number\\), but row 1 holds 'a good film' \\(text\\)",
        ),
        ({"train": pd.DataFrame({"text": [1, 2], "label": ["positive", "negative"]})}, "row 1: column 'text' holds 1"),
        (
            {"train": GOOD, "dev": GOOD},
            f"^{MEMORY}: split 'dev' is none of the recipe's splits \\('train' \\('data.train_split'\\)\\); rename",
        ),
        (
            {"train": "train.csv"},
            f"^split 'train' of {MEMORY} is a str; give a datasets.Dataset, a pandas DataFrame or a list of dicts",
        ),
        (
            {"train": ["a good film"]},
            "^split 'train', row 1: holds 'a good film' \\(text\\); each row is a dict \\(column -> value\\)$",
        ),
        (pd.DataFrame(GOOD), f"^{MEMORY} takes a datasets.DatasetDict or a dict of split name -> .*, got DataFrame$"),
        ({}, f"^{MEMORY} was given no split"),
    ],
    ids=[
        "empty frame",
        "empty list",
        "mixed kinds in a list",
        "mixed kinds in a frame",
        "numbers for text",
        "unknown split",
        "a path",
        "rows not dicts",
        "not a dict of splits",
        "no split",
    ],
)
def test_bad_in_memory_data_is_one_line_naming_the_split_and_nothing_is_written(recipe_values, data, message):
    assert re.search(message, refused(train_only(recipe_values), data))


def test_a_missing_split_is_named_as_for_files(recipe_values):
    message = refused(without_files(recipe_values), {"train": GOOD, "test": GOOD})
    assert message.startswith(
        "validation split 'validation' not found in the data given to Recipe.run(data=...) (have: train, test); "
        "set 'data.validation_split' to one of them or to null or set 'data.validation_fraction'"
    )


def test_data_goes_with_neither_files_nor_streaming(recipe_values):
    assert "the recipe names 'data.files' as well: keep one" in refused(recipe_values, {"train": GOOD})
    streamed = train_only(recipe_values)
    streamed["data"]["streaming"] = True
    streamed["training"]["max_steps"] = 4
    assert "set 'data.streaming' to false" in refused(streamed, {"train": GOOD})


def test_a_recipe_without_data_loads_but_does_not_run_without_it(recipe_values, tmp_path, capsys):
    values = without_files(recipe_values)
    recipe = Recipe.from_dict(values)
    with pytest.raises(HubtuneError, match="needs 'dataset' \\(a Hub id\\) or 'files' .*, or data given to Recipe"):
        recipe.run()
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(values))
    assert main(["train", str(path)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("hubtune: error: recipe section 'data' needs 'dataset' (a Hub id) or 'files'")
    assert not Path(values["output_dir"]).exists()
    with pytest.raises(HubtuneError, match="'data.in_memory' records data .* instead of 'data.files'; remove one"):
        Recipe.from_dict(dict(recipe_values, data={**recipe_values["data"], "in_memory": {"train": "a list"}}))


# --- images: a csv of image files, PIL images in a DataFrame, an Image column --------------------------------------

COLOURS = {"blue": (30, 30, 220), "green": (30, 200, 30), "red": (220, 30, 30)}


def colour_rows(per_class: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            "image": Image.fromarray(
                np.clip(np.array(colour) + rng.integers(-25, 26, (32, 32, 3)), 0, 255).astype("uint8")
            ),
            "label": name,
        }
        for name, colour in COLOURS.items()
        for _ in range(per_class)
    ]


def write_image_table(rows: list[dict], folder: Path) -> tuple[str, list[str]]:
    """The rows' images as PNG files (lossless: the same pixels) and a csv of their paths; returns both."""
    folder.mkdir()
    paths = []
    for index, row in enumerate(rows):
        row["image"].save(folder / f"{index}.png")
        paths.append(str(folder / f"{index}.png"))
    table = [{"image": f"{index}.png", "label": row["label"]} for index, row in enumerate(rows)]
    return write_rows(folder / "images.csv", table), paths


@pytest.mark.slow
def test_images_in_memory_reach_the_scores_of_their_files(tmp_path):
    checkpoint = save_tiny_vit(tmp_path / "vit")
    rows = {"train": colour_rows(8, 0), "test": colour_rows(4, 1)}
    tables = {split: write_image_table(split_rows, tmp_path / split) for split, split_rows in rows.items()}

    def run(name: str, files: dict | None = None, data=None) -> dict:
        values = {
            "name": name,
            "task": "image-classification",
            "output_dir": str(tmp_path / name),
            "model": {"checkpoint": str(checkpoint)},
            "data": {"files": files or {}, "validation_split": None},
            "training": {
                "num_train_epochs": 3,
                "learning_rate": 3e-3,
                "per_device_train_batch_size": 8,
                "save_strategy": "no",
                "disable_tqdm": True,
            },
        }
        return Recipe.from_dict(values).run(data=data)

    files = run("files", files={split: table for split, (table, _) in tables.items()})
    pil = run("pil", data={split: pd.DataFrame(split_rows) for split, split_rows in rows.items()})
    column = {
        split: Dataset.from_dict({"image": paths, "label": [row["label"] for row in rows[split]]}).cast_column(
            "image", ImageFeature()
        )
        for split, (_, paths) in tables.items()
    }
    feature = run("feature", data=column)
    assert files["test_samples"] == 12 and files["test_accuracy"] >= 0.9
    assert_same_scores(pil, files)
    assert_same_scores(feature, files)
    recipe = yaml.safe_load((tmp_path / "pil" / "recipe.yaml").read_text())
    assert recipe["data"]["in_memory"]["train"] == "in-memory DataFrame, 24 rows"


# --- audio: a tone folder, {array, sampling_rate} rows, an Audio column ----------------------------------------------


@pytest.mark.slow
def test_audio_in_memory_reaches_the_scores_of_its_files(tmp_path):
    checkpoint = tiny_wav2vec2_folder(tmp_path / "wav2vec2")
    # Tone clips at 8, 16 and 44.1 kHz, every third stereo: resampling and the mono mix run on both routes.
    folders = {
        split: str(write_tone_folder(tmp_path / split, n, seed)) for split, n, seed in (("train", 6, 0), ("test", 3, 2))
    }
    tables = {split: load_audio_data_file(Path(folder), "audio", "label") for split, folder in folders.items()}

    def run(name: str, files: dict | None = None, data=None) -> dict:
        values = {
            "name": name,
            "task": "audio-classification",
            "output_dir": str(tmp_path / name),
            "model": {"checkpoint": str(checkpoint)},
            "data": {"files": files or {}, "validation_split": None, "max_duration_s": 0.5},
            "training": {
                "num_train_epochs": 3,
                "learning_rate": 3e-3,
                "per_device_train_batch_size": 8,
                "warmup_steps": 0,
                "save_strategy": "no",
                "disable_tqdm": True,
            },
        }
        return Recipe.from_dict(values).run(data=data)

    def clip(path: str) -> dict:
        samples, rate = soundfile.read(path, dtype="float32", always_2d=True)  # (samples, channels)
        return {"array": samples, "sampling_rate": rate}

    files = run("files", files=folders)
    arrays = run(
        "arrays",
        data={
            split: [{"audio": clip(path), "label": label} for path, label in zip(table["audio"], table["label"])]
            for split, table in tables.items()
        },
    )
    encoded = {
        split: Dataset.from_dict(
            {"audio": [Path(path).read_bytes() for path in table["audio"]], "label": table["label"]}
        ).cast_column("audio", Audio())
        for split, table in tables.items()
    }
    feature = run("feature", data=encoded)
    assert files["test_samples"] == 9
    assert_same_scores(arrays, files)
    assert_same_scores(feature, files)
    recipe = yaml.safe_load((tmp_path / "arrays" / "recipe.yaml").read_text())
    assert recipe["data"]["in_memory"] == {"train": "in-memory list, 18 rows", "test": "in-memory list, 9 rows"}
