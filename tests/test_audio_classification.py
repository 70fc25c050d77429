"""Audio classification: tone folders at 8/16/44.1 kHz and stereo, train, reload, predict, bad audio."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
from speech_helpers import TONES, tiny_wav2vec2_folder, write_manifest, write_tone_folder

from pipelines import Recipe
from pipelines.audio import decode, load_audio_data_file
from pipelines.cli import main
from pipelines.errors import HubtuneError
from pipelines.inference import Predictor


@pytest.fixture(scope="module")
def tones(tmp_path_factory):
    root = tmp_path_factory.mktemp("tones")
    return {
        split: str(write_tone_folder(root / split, n, seed))
        for split, n, seed in (("train", 24, 0), ("validation", 6, 1), ("test", 9, 2))
    }


@pytest.fixture(scope="module")
def tiny_wav2vec2(tmp_path_factory):
    return tiny_wav2vec2_folder(tmp_path_factory.mktemp("tiny-wav2vec2"))


def recipe(checkpoint, files, output_dir, **data):
    return {
        "name": "tones",
        "task": "audio-classification",
        "output_dir": str(output_dir),
        "model": {"checkpoint": str(checkpoint)},
        "data": {"files": dict(files), "max_duration_s": 0.5, **data},
        "training": {
            "num_train_epochs": 8,
            "learning_rate": 3e-3,
            "per_device_train_batch_size": 8,
            "logging_steps": 5,
            "save_strategy": "no",
            "disable_tqdm": True,
            "warmup_steps": 0,
        },
    }


@pytest.fixture(scope="module")
def tone_run(tiny_wav2vec2, tones, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("tone-run") / "run"
    results = Recipe.from_dict(recipe(tiny_wav2vec2, tones, run_dir)).run()
    return run_dir, results


def test_decode_resamples_and_mixes_to_mono(tmp_path):
    t44 = np.arange(44100) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 440 * t44), np.zeros_like(t44)], axis=1)
    soundfile.write(tmp_path / "s.wav", stereo, 44100)
    t8 = np.arange(8000) / 8000
    soundfile.write(tmp_path / "n.wav", np.sin(2 * np.pi * 440 * t8), 8000)
    for name in ("s.wav", "n.wav"):
        wave = decode(str(tmp_path / name), 16000, "test")
        assert wave.dtype == np.float32 and wave.ndim == 1 and len(wave) == 16000
        spectrum = np.abs(np.fft.rfft(wave))
        assert abs(int(spectrum.argmax()) - 440) <= 1  # 1 s at 16 kHz: bin i is i Hz
    assert np.abs(decode(str(tmp_path / "s.wav"), 16000, "test")).max() == pytest.approx(0.5, abs=0.02)


def test_audio_folder_labels_from_subfolders(tones):
    dataset = load_audio_data_file(Path(tones["train"]), "audio", "label")
    assert sorted(set(dataset["label"])) == sorted(TONES)
    assert len(dataset) == 3 * 24 and all(p.endswith(".wav") for p in dataset["audio"])


def test_train_freezes_feature_encoder_and_learns(tone_run):
    run_dir, results = tone_run
    assert results["test_accuracy"] >= 0.9, results
    table = {row["group"]: row for row in json.loads((run_dir / "parameters.json").read_text())}
    assert table["head"]["trainable"] == table["head"]["total"] > 0
    # The conv feature encoder sits in `embeddings`: frozen by default for wav2vec2.
    assert table["embeddings"]["trainable"] < table["embeddings"]["total"]


def test_reload_predicts_like_the_run(tone_run, tones, capsys):
    run_dir, results = tone_run
    run = Predictor(run_dir)
    files = [f"{tones['test']}/{label}/{label}_{i}.wav" for label in TONES for i in (0, 1, 2)]
    predictions = run.predict(files)
    accuracy = np.mean([p["label"] == f.split("/")[-2] for p, f in zip(predictions, files)])
    assert accuracy >= 0.8
    assert run.evaluate("test")["test_accuracy"] == pytest.approx(results["test_accuracy"])
    assert main(["predict", str(run_dir), files[0]]) == 0
    label, score, path = capsys.readouterr().out.strip().split("\t")
    assert label == predictions[0]["label"] and path == files[0]


def test_csv_of_paths_with_lora(tiny_wav2vec2, tones, tmp_path):
    rows = [{"path": f"{label}/{label}_{i}.wav", "label": label} for label in TONES for i in range(6)]
    train = write_manifest(Path(tones["train"]) / "manifest.csv", rows)
    values = recipe(
        tiny_wav2vec2,
        {"train": str(train)},
        tmp_path / "run",
        audio_column="path",
        validation_split=None,
        test_split=None,
    )
    values["adapt"] = {"strategy": "lora", "lora": {"target_modules": ["q_proj", "v_proj"]}}
    values["training"]["num_train_epochs"] = 1
    Recipe.from_dict(values).run()
    model = Predictor(tmp_path / "run").model
    trainable = {n for n, p in model.named_parameters() if "lora_" in n}
    assert trainable and any("classifier" in n for n, _ in model.named_parameters())


def test_corrupt_and_empty_files_are_named(tiny_wav2vec2, tones, tmp_path):
    bad = tmp_path / "bad"
    write_tone_folder(bad, 2, 5, rates=(16000,))
    (bad / "low" / "broken.wav").write_bytes(b"RIFF not really audio")
    values = recipe(tiny_wav2vec2, {"train": str(bad)}, tmp_path / "run", validation_split=None, test_split=None)
    with pytest.raises(HubtuneError, match=r"broken\.wav.*cannot be decoded"):
        Recipe.from_dict(values).run()
    (bad / "low" / "broken.wav").unlink()
    soundfile.write(bad / "mid" / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(HubtuneError, match=r"empty\.wav.*is empty"):
        Recipe.from_dict(values).run()
    assert not (tmp_path / "run").exists()
    assert main(["predict", str(tmp_path / "nope"), "x.wav"]) == 2


def test_hub_audio_column_is_decoded_by_soundfile(tmp_path):
    """A Hub-style `Audio` column (paths or bytes) is read without torchcodec, resampled and mono-mixed."""
    from datasets import Audio, Dataset, Features

    from pipelines.audio import audio_lengths, undecoded_audio

    t = np.arange(4410) / 44100
    soundfile.write(tmp_path / "a.wav", np.stack([np.sin(2 * np.pi * 300 * t)] * 2, axis=1), 44100)
    soundfile.write(tmp_path / "b.flac", np.sin(2 * np.pi * 300 * np.arange(800) / 8000), 8000)
    # Arrow structs cast to `Audio`, as a Hub parquet split arrives (encoding through `Audio` needs torchcodec).
    audio = Features({"audio": Audio()})
    by_path = Dataset.from_dict({"audio": [{"bytes": None, "path": str(tmp_path / "a.wav")}]}).cast(audio)
    by_bytes = Dataset.from_dict({"audio": [{"bytes": (tmp_path / "b.flac").read_bytes(), "path": "b.flac"}]}).cast(
        audio
    )
    for dataset in (by_path, by_bytes):
        assert audio_lengths(dataset, "audio", 16000, lambda row: f"hub split, row {row + 1}") == [1600]
        wave = decode(undecoded_audio(dataset, "audio")[0]["audio"], 16000, "hub split, row 1")
        assert len(wave) == 1600 and wave.ndim == 1
