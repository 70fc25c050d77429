"""`data.streaming` for the speech tasks: audio folders, tables of paths and Hub audio read as streams, decoded per
batch; the three tasks train, score and reload, and bad rows are named when the stream reaches them."""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pytest
import soundfile
from helpers.speech import (
    TONES,
    faster_whisper_tokenizer,
    spell,
    tiny_wav2vec2_folder,
    tiny_whisper,
    tone,
    write_ct2_whisper,
    write_manifest,
    write_spelled_split,
    write_tone_folder,
)

from pipelines import HubtuneError, Recipe, load_recipe_config
from pipelines.commands.cli import main
from pipelines.data.audio import decode
from pipelines.serving.predictor import Predictor
from pipelines.serving.probe import probe_batches
from pipelines.tasks.audio_classification import AudioClassification

# Trains models for seconds each: `make test-fast` leaves this module out.
pytestmark = pytest.mark.slow

LABELS = sorted(TONES)


@pytest.fixture(scope="module")
def tones(tmp_path_factory):
    """The three local sources: class sub-folders (train), an audiofolder with metadata.jsonl (validation) and a csv
    of paths relative to it (test)."""
    root = tmp_path_factory.mktemp("tones")
    train = write_tone_folder(root / "train", 24, 0)
    validation = write_tone_folder(root / "validation", 4, 1)
    rows = [{"file_name": f"{label}/{label}_{i}.wav", "label": label} for label in TONES for i in range(4)]
    (validation / "metadata.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    test = write_tone_folder(root / "test", 6, 2)
    rows = [{"audio": f"{label}/{label}_{i}.wav", "label": label} for label in TONES for i in range(6)]
    return {"train": str(train), "validation": str(validation), "test": str(write_manifest(test / "test.csv", rows))}


@pytest.fixture(scope="module")
def tiny_wav2vec2(tmp_path_factory):
    return tiny_wav2vec2_folder(tmp_path_factory.mktemp("tiny-wav2vec2"))


def classification_recipe(checkpoint, files, output_dir, steps=60, **data):
    return {
        "name": "streamed-tones",
        "task": "audio-classification",
        "output_dir": str(output_dir),
        "model": {"checkpoint": str(checkpoint)},
        "data": {"files": dict(files), "max_duration_s": 0.5, "streaming": True, "labels": LABELS, **data},
        "training": {
            "max_steps": steps,
            "learning_rate": 3e-3,
            "per_device_train_batch_size": 8,
            "logging_steps": 10,
            "save_strategy": "no",
            "eval_strategy": "no",
            "disable_tqdm": True,
            "warmup_steps": 0,
        },
    }


def test_streamed_audio_classification_trains_scores_and_reloads(tiny_wav2vec2, tones, tmp_path, capsys):
    run = tmp_path / "run"
    results = Recipe.from_dict(classification_recipe(tiny_wav2vec2, tones, run)).run()
    assert results["train_samples"] == 60 * 8
    assert results["eval_samples"] == 12 and results["test_samples"] == 18
    assert results["test_accuracy"] >= 0.9, results
    # The run folder is an ordinary one: evaluate reads the streamed test split again, predict takes files.
    reloaded = Predictor(run)
    assert reloaded.evaluate("test")["test_accuracy"] == pytest.approx(results["test_accuracy"], abs=1e-6)
    clip = f"{Path(tones['test']).parent}/high/high_0.wav"
    capsys.readouterr()
    assert main(["predict", str(run), clip]) == 0
    assert capsys.readouterr().out.split("\t")[0] == "high"


def test_a_streamed_training_clip_gets_a_new_window_on_every_pass(tiny_wav2vec2, tones, tmp_path):
    values = classification_recipe(tiny_wav2vec2, tones, tmp_path / "run", validation_split=None, test_split=None)
    task = AudioClassification(load_recipe_config(values=values))
    processor = task.load_processor()
    train = task.prepare(task.read_splits(), processor)["train"]
    passes = [list(train), list(train)]
    assert [row["source_row"] for row in passes[0]][:2] == [f"data file '{tones['train']}', row {i}" for i in (1, 2)]
    # Clips of 0.4-0.7 s under max_duration_s 0.5: the longer ones are cropped, from a start drawn on each read.
    long = [i for i, row in enumerate(passes[0]) if row["input_length"] > 8000]
    assert long and any(passes[0][i]["crop_start"] != passes[1][i]["crop_start"] for i in long)
    waves = task.waveforms(processor, passes[0][:8])
    assert all(len(wave) <= 8000 for wave in waves)


def write_hub_stand_in(folder: Path) -> dict[str, str]:
    """Arrow files as a Hub audio dataset holds them: an `Audio` column with the clips' bytes inside (at 8 and
    44.1 kHz) and a `ClassLabel` column. Arrow rather than parquet: datasets pauses 5 s at the end of every pass over
    a streamed parquet file (its workaround for an Arrow threading issue), which this test's short passes add up."""
    rng = random.Random(3)
    features = datasets.Features({"audio": datasets.Audio(), "label": datasets.ClassLabel(names=LABELS)})
    files = {}
    for split, n in (("train", 30), ("test", 9)):
        rows: dict[str, list] = {"audio": [], "label": []}
        for i in range(n):
            label, rate = LABELS[i % 3], (8000, 44100)[i % 2]
            clip = folder / f"{split}{i}.wav"
            soundfile.write(clip, tone(TONES[label], 0.5, rate, rng), rate)
            rows["audio"].append({"bytes": clip.read_bytes(), "path": clip.name})
            clip.unlink()  # the bytes are the only copy, as in a downloaded Hub dataset
            rows["label"].append(LABELS.index(label))
        # Built as Arrow: encoding through the Audio feature would need torchcodec, which decoding here avoids.
        table = pa.table({"audio": pa.array(rows["audio"], features["audio"].pa_type), "label": rows["label"]})
        datasets.Dataset(table, info=datasets.DatasetInfo(features=features)).save_to_disk(folder / split)
        files[split] = str(folder / split / "data-00000-of-00001.arrow")
    return files


def test_a_streamed_hub_audio_column_is_decoded_per_batch(tiny_wav2vec2, tmp_path, monkeypatch):
    """A Hub dataset goes through the Hub loading path (`load_dataset(id, streaming=True)`), answered here by
    datasets' parquet reader over files shaped like a Hub audio dataset."""
    (tmp_path / "hub").mkdir()
    files = write_hub_stand_in(tmp_path / "hub")
    load_dataset = datasets.load_dataset
    asked = []

    def hub(name, config=None, revision=None, streaming=False, **options):
        asked.append((name, streaming))
        return load_dataset("arrow", data_files=files, streaming=streaming)

    monkeypatch.setattr(datasets, "load_dataset", hub)
    values = classification_recipe(tiny_wav2vec2, {}, tmp_path / "run", steps=30, validation_split=None)
    del values["data"]["files"], values["data"]["labels"]  # the ClassLabel names the classes
    values["data"]["dataset"] = "org/tones"
    task = AudioClassification(load_recipe_config(values=values))
    processor = task.load_processor()
    test = task.prepare(task.read_splits(), processor)["test"]
    rows = list(test.take(2))
    assert rows[0]["source_row"] == "split 'test' of Hub dataset 'org/tones', row 1"
    stored = datasets.Dataset.from_file(files["test"]).cast_column("audio", datasets.Audio(decode=False))
    for row, wave, value, label in zip(rows, task.waveforms(processor, rows), stored["audio"], stored["label"]):
        # Decoded from the embedded bytes and resampled to the extractor's 16 kHz, as the map path does.
        assert row["labels"] == label
        np.testing.assert_array_equal(wave, decode(value, 16000, "stored"))
        assert len(wave) == 8000
    results = Recipe.from_dict(values).run()
    assert asked and all(streaming for _, streaming in asked)
    assert results["test_samples"] == 9 and results["test_accuracy"] >= 0.6, results
    # The export check reads a few rows of the streamed test split whole, without re-encoding the audio column.
    probe = probe_batches(Predictor(tmp_path / "run"), [4])
    assert probe.source == "test split" and probe.batches[0]["labels"].tolist() == [0, 1, 2, 0]


def test_bad_streamed_rows_are_named_when_the_stream_reaches_them(tiny_wav2vec2, tones, tmp_path):
    folder = Path(tones["train"])
    rows = [{"audio": f"{folder}/{label}/{label}_{i}.wav", "label": label} for i in range(10) for label in TONES]
    broken, nan, short = tmp_path / "broken.wav", tmp_path / "nan.wav", tmp_path / "short.wav"
    broken.write_bytes(b"RIFF not really audio")
    wave = np.sin(np.arange(8000) / 10).astype(np.float32)
    wave[10:13] = np.nan
    soundfile.write(nan, wave, 16000, subtype="FLOAT")
    soundfile.write(short, wave[:100] * 0, 16000)  # 100 samples: the tiny encoder's one frame needs 160
    cases = [
        (broken, r"audio file '.*broken\.wav' \(data file '{train}', row 25\) cannot be decoded"),
        (nan, r"audio file '.*nan\.wav' \(data file '{train}', row 25\) holds 3 samples that are not finite"),
        (short, r"audio file '.*short\.wav' \(data file '{train}', row 25\) lasts 0.00625 s .* shorter than"),
    ]
    for bad, message in cases:
        bad_rows = [*rows[:24], {"audio": bad.name, "label": "low"}, *rows[24:]]
        train = write_manifest(tmp_path / f"{bad.stem}.csv", bad_rows)
        values = classification_recipe(
            tiny_wav2vec2, {"train": str(train)}, tmp_path / bad.stem, steps=8, validation_split=None, test_split=None
        )
        with pytest.raises(HubtuneError, match=message.format(train=train)):
            Recipe.from_dict(values).run()

    unlabelled = classification_recipe(tiny_wav2vec2, tones, tmp_path / "x", steps=8)
    del unlabelled["data"]["labels"]
    with pytest.raises(HubtuneError, match="with 'data.streaming' the label names must be listed in 'data.labels'"):
        Recipe.from_dict(unlabelled).run()
    paths = write_manifest(tmp_path / "paths.csv", [{"path": row["audio"], "label": row["label"]} for row in rows])
    with pytest.raises(HubtuneError, match=rf"data file '{paths}' has no column 'audio' \(recipe key"):
        Recipe.from_dict(classification_recipe(tiny_wav2vec2, {**tones, "test": str(paths)}, tmp_path / "y")).run()
    with pytest.raises(HubtuneError, match="'data.streaming' reads single_label data"):
        load_recipe_config(
            values=classification_recipe(tiny_wav2vec2, tones, tmp_path / "z", problem_type="multi_label")
        )


@pytest.fixture(scope="module")
def spelled(tmp_path_factory):
    """Spelled-tone audiofolders; the training one ends with a clip over max_duration_s whose transcript holds the
    only '-' of the data."""
    root = tmp_path_factory.mktemp("spelled")
    files = {split: write_spelled_split(root / split, n, seed) for split, n, seed in (("train", 48, 0), ("test", 8, 2))}
    train = files["train"]
    soundfile.write(train / "long.wav", spell("abc abc abc abc abc abc abc abc", 16000, random.Random(0)), 16000)
    with (train / "metadata.csv").open("a") as metadata:
        metadata.write("long.wav,ABC-ABC.\n")
    return {split: str(folder) for split, folder in files.items()}


def test_streamed_ctc_builds_its_vocabulary_in_one_pass_and_skips_long_clips(tmp_path, spelled, caplog):
    checkpoint = tiny_wav2vec2_folder(tmp_path / "encoder", "Wav2Vec2Model")
    run = tmp_path / "run"
    values = {
        "name": "streamed-spelled",
        "task": "speech-recognition-ctc",
        "output_dir": str(run),
        "model": {"checkpoint": str(checkpoint)},
        "data": {"files": spelled, "validation_split": None, "max_duration_s": 2, "streaming": True},
        "adapt": {"freeze_feature_encoder": False},
        "training": {
            "max_steps": 30,
            "learning_rate": 2e-2,
            "per_device_train_batch_size": 8,
            "save_strategy": "no",
            "disable_tqdm": True,
            "warmup_steps": 0,
        },
    }
    with caplog.at_level(logging.WARNING, logger="pipelines.tasks.audio_task"):
        results = Recipe.from_dict(values).run()
    # The vocabulary holds the characters of every training transcript, the skipped clip's included (as the map
    # path builds it from the whole split).
    vocabulary = json.loads((run / "vocab.json").read_text())
    assert set(vocabulary) == {"<pad>", "<unk>", "|", "a", "b", "c", "-"}
    skipped = [r.getMessage() for r in caplog.records if "longer than data.max_duration_s" in r.getMessage()]
    # Read on every pass over the 49 rows, the long clip is counted once.
    assert skipped == [
        f"data file '{spelled['train']}': 1 clips longer than data.max_duration_s=2.0 left out so far (the latest: "
        f"data file '{spelled['train']}', row 49)"
    ]
    assert results["test_samples"] == 8 and np.isfinite(results["test_wer"])
    assert Predictor(run).evaluate("test")["test_wer"] == pytest.approx(results["test_wer"])

    # The vocabulary pass reads every transcript: an empty one stops the run before training, naming its row.
    blank = tmp_path / "blank"
    shutil.copytree(spelled["train"], blank)
    with (blank / "metadata.csv").open("a") as metadata:
        metadata.write("clip0.wav,?!\n")
    values["data"]["files"]["train"] = str(blank)
    with pytest.raises(
        HubtuneError, match=rf"data file '{blank}', row 50: column 'text' holds '\?!', not a transcript"
    ):
        Recipe.from_dict(values, ["output_dir=" + str(tmp_path / "blank-run")]).run()
    assert not (tmp_path / "blank-run").exists()


def test_streamed_whisper_trains_from_a_table_of_paths_and_reloads(tmp_path):
    root = tmp_path / "words"
    root.mkdir()
    rng = random.Random(0)
    rows = []
    for i in range(18):
        word, rate = list(TONES)[i % 3], (16000, 8000)[i % 2]
        soundfile.write(root / f"w{i}.wav", tone(TONES[word], rng.uniform(0.4, 0.8), rate, rng), rate)
        rows.append({"clip": f"w{i}.wav", "sentence": word.capitalize() + "."})
    files = {}
    for split, part in (("train", rows[:12]), ("test", rows[12:])):
        files[split] = root / f"{split}.jsonl"
        files[split].write_text("".join(json.dumps(row) + "\n" for row in part))
    checkpoint = tmp_path / "whisper"
    source = write_ct2_whisper(tiny_whisper(seed=1), tmp_path / "ct2", faster_whisper_tokenizer())
    assert main(["import-ct2", str(source), str(checkpoint)]) == 0
    run = tmp_path / "run"
    values = {
        "name": "streamed-words",
        "task": "speech-recognition-seq2seq",
        "output_dir": str(run),
        "model": {"checkpoint": str(checkpoint)},
        "data": {
            "files": {split: str(path) for split, path in files.items()},
            "validation_split": None,
            "audio_column": "clip",
            "text_column": "sentence",
            "max_duration_s": 2,
            "streaming": True,
        },
        "training": {
            "max_steps": 6,
            "learning_rate": 5e-3,
            "per_device_train_batch_size": 6,
            "per_device_eval_batch_size": 6,
            "save_strategy": "no",
            "disable_tqdm": True,
            "warmup_steps": 0,
            "generation_max_length": 8,
        },
    }
    results = Recipe.from_dict(values).run()
    assert results["train_samples"] == 36 and results["test_samples"] == 6
    assert Predictor(run).evaluate("test")["test_wer"] == pytest.approx(results["test_wer"])

    # A transcript longer than the decoder's 64 positions stops the run when the stream reaches its row.
    long = root / "long.jsonl"
    long.write_text(files["train"].read_text() + json.dumps({"clip": "w0.wav", "sentence": "low " * 80}) + "\n")
    values["data"]["files"]["train"] = str(long)
    with pytest.raises(HubtuneError, match=rf"the transcript of data file '{long}', row 13 is 8\d tokens long"):
        Recipe.from_dict(values, ["overwrite=true"]).run()
