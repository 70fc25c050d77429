"""Audio classification: tone folders at 8/16/44.1 kHz and stereo, train, reload, predict, bad audio."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
from helpers.runs import assert_export_checked_on_made_up_inputs
from helpers.speech import TONES, tiny_wav2vec2_folder, write_manifest, write_tone_folder

from pipelines import Recipe
from pipelines.commands.cli import main
from pipelines.data.audio import decode, load_audio_data_file
from pipelines.errors import HubtuneError
from pipelines.serving.predictor import Predictor

# Trains models for seconds each: `make test-fast` leaves this module out.
pytestmark = pytest.mark.slow


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


def test_a_clip_with_non_finite_samples_is_an_error_naming_it(tmp_path):
    """A float WAV can hold NaN; one such clip used to train to NaN weights with exit 0."""
    wave = np.sin(np.arange(16000) / 10).astype(np.float32)
    wave[100:103] = [np.nan, np.inf, np.nan]
    soundfile.write(tmp_path / "bad.wav", wave, 16000, subtype="FLOAT")
    with pytest.raises(
        HubtuneError, match=r"audio file '.*bad.wav' \(train row 4\) holds 3 samples that are not finite"
    ):
        decode(str(tmp_path / "bad.wav"), 16000, "train row 4")


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


def test_predict_data_over_an_audio_folder(tone_run, tones, tmp_path):
    run_dir, _ = tone_run
    run = Predictor(run_dir)
    output = tmp_path / "predictions.jsonl"
    assert run.predict_data(tones["test"], output, batch_size=4) == 27
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    files = load_audio_data_file(Path(tones["test"]), "audio", "label")["audio"]
    assert [row["row"] for row in rows] == list(range(1, 28)) and [row["input"] for row in rows] == files
    assert [row["label"] for row in rows] == [p["label"] for p in run.predict(files)]


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
    values["adapt"] = {"strategy": "peft", "peft": {"method": "lora", "target_modules": ["q_proj", "v_proj"]}}
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

    from pipelines.data.audio import audio_lengths, undecoded_audio

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


def prepare_tones(checkpoint, files, output_dir, monkeypatch=None, **data):
    """The task and its prepared data for a tone recipe; with `monkeypatch`, any decode during prepare fails."""
    from pipelines.config import load_recipe_config
    from pipelines.data.splits import load_splits
    from pipelines.tasks.audio_classification import AudioClassification

    config = load_recipe_config(values=recipe(checkpoint, files, output_dir, **data))
    task = AudioClassification(config)
    splits = load_splits(config.data, config.seed, task.load_data_file)
    if monkeypatch is None:
        return task, task.prepare(splits, task.load_processor())

    def no_decoding(*args, **kwargs):
        raise AssertionError("prepare decoded audio instead of reading headers")

    with monkeypatch.context() as patched:
        patched.setattr(soundfile, "read", no_decoding)
        return task, task.prepare(splits, task.load_processor())


def test_prepared_audio_stays_undecoded_and_batches_like_direct_decoding(tiny_wav2vec2, tones, tmp_path, monkeypatch):
    from pipelines.data.audio import crop
    from pipelines.tasks.audio_task import CROP_START, LENGTH, extract_features

    task, prepared = prepare_tones(tiny_wav2vec2, tones, tmp_path / "run", monkeypatch)
    processor, collate = prepared.processor, task.data_collator(prepared.processor)
    limit = 8000  # max_duration_s 0.5 at 16 kHz
    for role in ("train", "validation", "test"):
        dataset = prepared[role]
        assert dataset.features["audio"].dtype == "string" and dataset.features[LENGTH].dtype == "int64"
        decoded_bytes = 4 * sum(dataset[LENGTH])  # float32 samples, had the clips been decoded in prepare
        assert dataset.data.nbytes < decoded_bytes / 100, (dataset.data.nbytes, decoded_bytes)
    # Evaluation: every clip from its start, cropped to max_duration_s; the clips are 0.4-0.7 s, so some are.
    validation = prepared["validation"]
    rows = [validation[i] for i in range(len(validation))]
    waves = [decode(row["audio"], 16000, "test") for row in rows]
    assert any(len(w) > limit for w in waves) and any(len(w) < limit for w in waves)
    batch, direct = collate(rows), extract_features(processor, [crop(w, limit) for w in waves])
    assert batch["labels"].tolist() == [row["labels"] for row in rows]
    for name in ("input_values", "attention_mask"):
        assert torch_equal(batch[name], direct[name])
    # Training: each read draws a new window inside the clip, and the batch holds exactly that window.
    train = prepared["train"]
    long_rows = [i for i, length in enumerate(train[LENGTH]) if length > limit][:8]
    first, second = [train[i] for i in long_rows], [train[i] for i in long_rows]
    assert [r[CROP_START] for r in first] != [r[CROP_START] for r in second]
    windows = []
    for row in first:
        wave = decode(row["audio"], 16000, "test")
        assert 0 <= row[CROP_START] <= len(wave) - limit
        windows.append(wave[row[CROP_START] : row[CROP_START] + limit])
    assert torch_equal(collate(first)["input_values"], extract_features(processor, windows)["input_values"])


def torch_equal(a, b) -> bool:
    return a.shape == b.shape and bool((a == b).all())


def test_header_lengths_equal_decoded_lengths(tones, tmp_path):
    from datasets import Dataset

    from pipelines.data.audio import audio_length, audio_lengths

    rng = np.random.default_rng(0)
    soundfile.write(tmp_path / "narrow.wav", rng.normal(0, 0.1, 8001), 8000)  # 8 kHz, odd length: upsampled
    soundfile.write(tmp_path / "stereo.wav", rng.normal(0, 0.1, (4417, 2)), 44100)  # stereo, downsampled
    soundfile.write(tmp_path / "odd.flac", rng.normal(0, 0.1, 12345), 22050)
    soundfile.write(tmp_path / "same.wav", rng.normal(0, 0.1, (1000, 2)), 16000)
    sources = [str(tmp_path / name) for name in ("narrow.wav", "stereo.wav", "odd.flac", "same.wav")]
    sources += [
        {"bytes": (tmp_path / "odd.flac").read_bytes(), "path": "odd.flac"},
        {"array": rng.normal(0, 0.1, 4410).astype(np.float32), "sampling_rate": 44100},
    ]
    for rate in (16000, 8000):
        for source in sources:
            assert audio_length(source, rate, "test") == len(decode(source, rate, "test")), (source, rate)
    assert audio_length(sources[0], 16000, "test") == 16002 and audio_length(sources[1], 16000, "test") == 1603
    # The tone folders mix 8, 16 and 44.1 kHz clips, every third one stereo.
    folder = load_audio_data_file(Path(tones["train"]), "audio", "label")
    paths = folder["audio"]
    lengths = audio_lengths(Dataset.from_dict({"audio": paths}), "audio", 16000, str)
    assert lengths == [len(decode(path, 16000, "test")) for path in paths]


def test_truncated_wav_is_named_at_prepare(tiny_wav2vec2, tones, tmp_path):
    from pipelines.config import load_recipe_config
    from pipelines.data.splits import load_splits
    from pipelines.tasks.audio_classification import AudioClassification

    rows = [{"path": f"{label}/{label}_{i}.wav", "label": label} for label in TONES for i in range(2)]
    clip = Path(tones["train"]) / "mid" / "mid_0.wav"
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(clip.read_bytes()[:30])  # cut inside the header: no data chunk left
    rows[3]["path"] = str(truncated)
    manifest = write_manifest(Path(tones["train"]) / "truncated.csv", rows)
    values = recipe(tiny_wav2vec2, {"train": str(manifest)}, tmp_path / "run", audio_column="path")
    values["data"].update(validation_split=None, test_split=None)
    config = load_recipe_config(values=values)
    task = AudioClassification(config)
    splits = load_splits(config.data, config.seed, task.load_data_file)
    with pytest.raises(HubtuneError) as error:
        task.prepare(splits, task.load_processor())
    message = str(error.value)
    assert "\n" not in message
    assert f"audio file '{truncated}'" in message and f"'{manifest}', row 4" in message
    assert "cannot be decoded" in message


def test_group_by_length_batches_by_header_lengths(tiny_wav2vec2, tones, tmp_path, monkeypatch):
    """`train_sampling_strategy: group_by_length` sorts by the stored header lengths; no clip is decoded for it."""
    import pipelines.training.length_order
    from pipelines.tasks import audio_task
    from pipelines.tasks.audio_task import LENGTH
    from pipelines.training.length_order import ShuffledLengthGroupedSampler

    seen: list[list[int]] = []

    class Recording(ShuffledLengthGroupedSampler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen.append(list(self.lengths))

    decoded: list[str] = []

    def counting_decode(source, *args):
        decoded.append(source)
        return decode(source, *args)

    monkeypatch.setattr(pipelines.training.length_order, "ShuffledLengthGroupedSampler", Recording)
    monkeypatch.setattr(audio_task, "decode", counting_decode)
    files = {"train": tones["train"], "test": tones["test"]}
    values = recipe(tiny_wav2vec2, files, tmp_path / "run", validation_split=None)
    values["training"].update(num_train_epochs=4, train_sampling_strategy="group_by_length")
    results = Recipe.from_dict(values).run()
    _, prepared = prepare_tones(tiny_wav2vec2, files, tmp_path / "again", validation_split=None)
    train, test = prepared["train"], prepared["test"]
    assert seen[0] == train[LENGTH]
    # Each clip is decoded once per pass that batches it (4 epochs of training, one test pass), none for grouping.
    assert len(decoded) == 4 * len(train) + len(test)
    assert results["test_accuracy"] >= 0.6, results


def tiny_ast_folder(folder: Path) -> Path:
    """A 2-layer Audio Spectrogram Transformer (hidden 32) over 64 frames of 32 mel bins: its head reads only
    the pooled output, so its backbone's features can be cached."""
    import torch
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    config = ASTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_mel_bins=32,
        max_length=64,
        frequency_stride=10,
        time_stride=10,
    )
    torch.manual_seed(0)
    ASTForAudioClassification(config).save_pretrained(folder)
    ASTFeatureExtractor(num_mel_bins=32, max_length=64).save_pretrained(folder)
    return folder


def test_feature_cache_on_audio_matches_the_uncached_route(tones, tmp_path, caplog):
    import logging

    checkpoint = tiny_ast_folder(tmp_path / "ast")
    cache_dir = tmp_path / "features"

    def run(name, **adapt):
        values = recipe(checkpoint, tones, tmp_path / name)
        values["adapt"] = {"strategy": "freeze_backbone", **adapt}
        values["training"].update(num_train_epochs=2, learning_rate=1e-2)
        return Recipe.from_dict(values).run()

    cached_adapt = {"feature_cache": True, "feature_cache_dir": str(cache_dir)}
    plain, cached = run("plain"), run("cached", **cached_adapt)
    assert cached["test_accuracy"] == plain["test_accuracy"]
    assert cached["test_loss"] == pytest.approx(plain["test_loss"], abs=1e-3)
    assert len([p for p in cache_dir.iterdir() if p.is_dir()]) == 3
    with caplog.at_level(logging.INFO, logger="pipelines.training.feature_cache"):
        again = run("again", **cached_adapt)
    assert "feature cache hit" in caplog.text and "computing backbone features" not in caplog.text
    assert again["test_accuracy"] == cached["test_accuracy"]


def test_a_clip_shorter_than_one_encoder_frame_is_one_line_naming_it(tone_run, tiny_wav2vec2, tones, tmp_path, capsys):
    """The tiny wav2vec2's convolutions (kernels 10 and 16, strides 10 and 16) make one frame of 160 samples: a
    clip of 159 is refused by name, in predict, evaluate --data and training data; one of 160 is predicted."""
    run_dir, _ = tone_run
    for samples in (16, 159, 160):
        soundfile.write(tmp_path / f"clip{samples}.wav", np.full(samples, 0.1, np.float32), 16000)
    assert main(["predict", str(run_dir), str(tmp_path / "clip160.wav")]) == 0
    capsys.readouterr()
    for samples, seconds in ((16, "0.001"), (159, "0.00994")):
        assert main(["predict", str(run_dir), str(tmp_path / f"clip{samples}.wav")]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line == (
            f"hubtune: error: input '{tmp_path / f'clip{samples}.wav'}' lasts {seconds} s ({samples} samples at "
            "16000 Hz), shorter than the 0.01 s (160 samples) this model takes: one frame of its convolutional "
            "feature encoder; there is too little of it to predict from"
        )

    scored = tmp_path / "scored"
    write_tone_folder(scored, 2, 7, rates=(16000,))
    short = scored / "mid" / "short.wav"
    soundfile.write(short, np.full(16, 0.1, np.float32), 16000)
    before = sorted(p.name for p in run_dir.iterdir())
    assert main(["evaluate", str(run_dir), "--data", str(scored)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"audio file '{short}' (data file '{scored}', row " in line and "lasts 0.001 s" in line
    assert sorted(p.name for p in run_dir.iterdir()) == before

    values = recipe(tiny_wav2vec2, {**tones, "train": str(scored)}, tmp_path / "run")
    config = tmp_path / "recipe.yaml"
    config.write_text(json.dumps(values))
    assert main(["train", str(config)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"hubtune: error: audio file '{short}' (data file '{scored}', row ")
    assert "shorter than the 0.01 s (160 samples) this model takes" in last and "remove its row" in last
    assert not (tmp_path / "run").exists()


def test_the_shortest_clip_of_a_spectrogram_model_is_one_analysis_window():
    """AST's extractor cuts 25 ms Kaldi windows before it pads: a shorter clip has no frame (or, at 16 samples,
    fails in numpy). Whisper's pads every clip to its window first: any length will do."""
    import torch
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification, WhisperConfig

    from pipelines.tasks.audio_task import extract_features, shortest_clip

    config = ASTConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, max_length=64, num_labels=2
    )
    extractor = ASTFeatureExtractor(max_length=64)
    model = ASTForAudioClassification(config).eval()
    minimum = shortest_clip(model, extractor)
    assert minimum is not None and minimum.samples == 400
    features = extract_features(extractor, [np.full(minimum.samples, 0.1, np.float32)])
    with torch.no_grad():
        assert model(**features).logits.shape == (1, 2)
    with pytest.raises(HubtuneError, match=r"'x.wav' lasts 0.001 s \(16 samples at 16000 Hz\), shorter than the 0.025"):
        minimum.check(16, 16000, "'x.wav'", "give a longer clip")
    assert shortest_clip(torch.nn.Module(), extractor) is None
    whisper = type("Whisper", (), {"config": WhisperConfig()})()
    assert shortest_clip(whisper, extractor) is None


def test_export_of_a_run_whose_data_is_gone_is_checked_on_made_up_inputs(tone_run, tmp_path):
    assert_export_checked_on_made_up_inputs(tone_run[0], tmp_path)
