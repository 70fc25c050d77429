"""CTC recognition: vocabulary from transcripts, training on spelled tones, reload, predict, bad transcripts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.runs import assert_export_checked_on_made_up_inputs
from helpers.speech import tiny_wav2vec2_folder, write_spelled_split

from pipelines import Recipe
from pipelines.commands.cli import main
from pipelines.compat import feature_frames
from pipelines.data.splits import load_splits
from pipelines.data.transcripts import TranscriptDataConfig, build_ctc_tokenizer, normalise
from pipelines.errors import HubtuneError
from pipelines.serving.predictor import Predictor
from pipelines.tasks.audio_task import LENGTH
from pipelines.tasks.collate import IGNORE
from pipelines.training.trainer import build_trainer, training_arguments

# Trains models for seconds each: `make test-fast` leaves this module out.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def spelled(tmp_path_factory):
    root = tmp_path_factory.mktemp("spelled")
    return {
        split: str(write_spelled_split(root / split, n, seed))
        for split, n, seed in (("train", 48, 0), ("validation", 8, 1), ("test", 12, 2))
    }


@pytest.fixture(scope="module")
def tiny_ctc_encoder(tmp_path_factory):
    return tiny_wav2vec2_folder(tmp_path_factory.mktemp("tiny-w2v-ctc"), "Wav2Vec2Model")


def ctc_recipe(checkpoint, files, output_dir, epochs=40):
    return {
        "name": "spelled",
        "task": "speech-recognition-ctc",
        "output_dir": str(output_dir),
        "model": {"checkpoint": str(checkpoint)},
        "data": {"files": dict(files), "max_duration_s": 5},
        # The tiny encoder is random: its conv features must train too for CTC to converge in seconds.
        "adapt": {"freeze_feature_encoder": False},
        "training": {
            "num_train_epochs": epochs,
            "learning_rate": 2e-2,
            "per_device_train_batch_size": 8,
            "per_device_eval_batch_size": 8,
            "logging_steps": 10,
            "save_strategy": "no",
            "eval_strategy": "no",
            "disable_tqdm": True,
            "warmup_steps": 0,
        },
    }


@pytest.fixture(scope="module")
def ctc_run(tiny_ctc_encoder, spelled, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ctc-run") / "run"
    return run_dir, Recipe.from_dict(ctc_recipe(tiny_ctc_encoder, spelled, run_dir)).run()


def test_vocabulary_round_trip(tmp_path):
    config = TranscriptDataConfig()
    texts = [normalise(t, config) for t in ["Hello, World!", "it's  a   hall."]]
    assert texts == ["hello world", "it's a hall"]
    tokenizer = build_ctc_tokenizer(texts)
    assert tokenizer.convert_ids_to_tokens([0, 1, 2]) == ["<pad>", "<unk>", "|"]
    assert len(tokenizer) == 3 + len(set("helowrdit'sa"))
    for text in texts:
        ids = tokenizer(text).input_ids
        assert tokenizer.decode(ids, group_tokens=False) == text
    tokenizer.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded.get_vocab() == tokenizer.get_vocab()
    assert reloaded.decode(tokenizer("hello world").input_ids, group_tokens=False) == "hello world"
    assert tokenizer.decode(tokenizer("zebra").input_ids, group_tokens=False).startswith("<unk>")


def test_ctc_learns_spelled_tones(ctc_run):
    run_dir, results = ctc_run
    assert (run_dir / "vocab.json").is_file()
    assert results["test_cer"] < 0.35, results
    assert results["test_wer"] <= 1.0


def test_ctc_reload_predicts(ctc_run, spelled, capsys):
    run_dir, results = ctc_run
    run = Predictor(run_dir)
    assert run.evaluate("test")["test_cer"] == pytest.approx(results["test_cer"])
    clip = f"{spelled['test']}/clip0.wav"
    transcript = run.predict([clip])[0]["transcript"]
    assert set(transcript) <= set("abc ")
    assert main(["predict", str(run_dir), clip]) == 0
    assert capsys.readouterr().out.strip() == f"{transcript}\t{clip}"


def test_a_clip_shorter_than_one_encoder_frame_is_refused_by_name(ctc_run, tmp_path, capsys):
    import soundfile

    clip = tmp_path / "click.wav"
    soundfile.write(clip, np.full(16, 0.1, np.float32), 16000)  # 0.001 s; one frame of the encoder is 160 samples
    assert main(["predict", str(ctc_run[0]), str(clip)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"hubtune: error: input '{clip}' lasts 0.001 s (16 samples at 16000 Hz), shorter than")
    assert "0.01 s (160 samples) this model takes: one frame of its convolutional feature encoder" in line


def test_evaluation_blanks_the_padding_frames_of_each_clip(ctc_run, tmp_path):
    # Padded into a batch, a short clip gets logits past its end too (the head's bias), which greedy decoding
    # would read as letters: the task's prediction step fills them with IGNORE, whose argmax is the blank.
    run = Predictor(ctc_run[0])
    splits = load_splits(run.config.data, run.config.seed, run.task.load_data_file, roles=("test",))
    prepared = run.task.prepare(splits, run.processor)
    defaults = run.task.training_defaults
    args = training_arguments(run.config, tmp_path, False, defaults=defaults, per_device_eval_batch_size=4)
    output = build_trainer(run.task, run.model, prepared, args).predict(prepared["test"])
    frames = feature_frames(run.model, torch.tensor(prepared["test"][LENGTH])).tolist()
    assert len(set(frames)) > 1, frames  # clips of different lengths: padding frames in the batches
    for logits, count in zip(output.predictions, frames):
        assert (logits[count:] == IGNORE).all() and (logits[:count] != IGNORE).all()


def test_empty_transcript_is_named(tiny_ctc_encoder, spelled, tmp_path):
    import shutil

    train = tmp_path / "train"
    shutil.copytree(spelled["train"], train)
    lines = (train / "metadata.csv").read_text().splitlines()
    lines[3] = lines[3].split(",")[0] + ",?!"
    (train / "metadata.csv").write_text("\n".join(lines) + "\n")
    values = ctc_recipe(tiny_ctc_encoder, {"train": str(train)}, tmp_path / "run")
    values["data"].update(validation_split=None, test_split=None)
    with pytest.raises(HubtuneError, match=r"row 3: column 'text' holds '\?!'"):
        Recipe.from_dict(values).run()


def test_over_long_clip_is_dropped_by_its_header_length(tiny_ctc_encoder, spelled, tmp_path, monkeypatch, caplog):
    import logging
    import random
    import shutil

    import soundfile
    from helpers.speech import spell

    from pipelines.config import load_recipe_config
    from pipelines.data.splits import load_splits
    from pipelines.tasks.audio_task import LENGTH
    from pipelines.tasks.speech_ctc import SpeechRecognitionCTC

    train = tmp_path / "train"
    shutil.copytree(spelled["train"], train)
    # 1.2 s at 8 kHz: 9,600 frames in its header, 19,200 samples at the model's 16 kHz, over the 1 s limit.
    wave = spell("abc cab", 8000, random.Random(0))
    soundfile.write(train / "long.wav", np.pad(wave, (0, 9600 - len(wave))), 8000)
    with (train / "metadata.csv").open("a") as handle:
        handle.write("long.wav,ABC CAB.\n")
    values = ctc_recipe(tiny_ctc_encoder, {"train": str(train)}, tmp_path / "run")
    values["data"].update(validation_split=None, test_split=None, max_duration_s=1)
    config = load_recipe_config(values=values)
    task = SpeechRecognitionCTC(config)
    splits = load_splits(config.data, config.seed, task.load_data_file)
    processor = task.fit_processor(splits, task.load_processor())

    def no_decoding(*args, **kwargs):
        raise AssertionError("prepare decoded audio instead of reading headers")

    monkeypatch.setattr(soundfile, "read", no_decoding)
    with caplog.at_level(logging.WARNING, logger="pipelines.tasks.audio_task"):
        prepared = task.prepare(splits, processor)["train"]
    assert "dropped 1 of 49 clips longer than data.max_duration_s=1" in caplog.text
    assert len(prepared) == 48 and not any(path.endswith("long.wav") for path in prepared["audio"])
    assert max(prepared[LENGTH]) <= 16000


def test_export_of_a_run_whose_data_is_gone_is_checked_on_made_up_inputs(ctc_run, tmp_path):
    assert_export_checked_on_made_up_inputs(ctc_run[0], tmp_path)
