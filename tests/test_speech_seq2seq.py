"""Whisper fine-tuning through Seq2SeqTrainer: a tiny Whisper learns one word per tone, generates it at evaluation."""

from __future__ import annotations

import csv
import random

import pytest
import soundfile
import yaml
from helpers.runs import assert_export_checked_on_made_up_inputs
from helpers.speech import TONES, faster_whisper_tokenizer, tiny_whisper, tone, write_ct2_whisper, write_manifest

from pipelines import Recipe
from pipelines.commands.cli import main
from pipelines.errors import HubtuneError
from pipelines.serving.predictor import Predictor

# Trains models for seconds each: `make test-fast` leaves this module out.
pytestmark = pytest.mark.slow


def write_word_split(folder, n, seed):
    """Clips of one tone each, transcribed by the tone's name ("Low." etc.), at 16 and 8 kHz."""
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    rows = []
    for i in range(n):
        word = list(TONES)[i % len(TONES)]
        rate = (16000, 8000)[i % 2]
        soundfile.write(folder / f"w{i}.wav", tone(TONES[word], rng.uniform(0.4, 0.8), rate, rng), rate)
        rows.append({"file_name": f"w{i}.wav", "text": word.capitalize() + "."})
    write_manifest(folder / "metadata.csv", rows)
    return str(folder)


@pytest.fixture(scope="module")
def tiny_whisper_checkpoint(tmp_path_factory):
    """A tiny Whisper checkpoint with processor and generation config, made by `hubtune import-ct2`."""
    root = tmp_path_factory.mktemp("tiny-whisper")
    source = write_ct2_whisper(tiny_whisper(seed=1), root / "ct2", faster_whisper_tokenizer())
    assert main(["import-ct2", str(source), str(root / "hf")]) == 0
    return root / "hf"


@pytest.fixture(scope="module")
def words(tmp_path_factory):
    root = tmp_path_factory.mktemp("words")
    return {split: write_word_split(root / split, n, seed) for split, n, seed in (("train", 24, 0), ("test", 9, 1))}


def whisper_recipe(checkpoint, files, output_dir):
    return {
        "name": "words",
        "task": "speech-recognition-seq2seq",
        "output_dir": str(output_dir),
        "model": {"checkpoint": str(checkpoint)},
        "data": {"files": dict(files), "validation_split": None, "max_duration_s": 2},
        "training": {
            "num_train_epochs": 20,
            "learning_rate": 5e-3,
            "per_device_train_batch_size": 6,
            "per_device_eval_batch_size": 9,
            "logging_steps": 10,
            "save_strategy": "no",
            "disable_tqdm": True,
            "warmup_steps": 0,
            "generation_max_length": 8,
        },
    }


@pytest.fixture(scope="module")
def whisper_run(tiny_whisper_checkpoint, words, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("whisper-run") / "run"
    return run_dir, Recipe.from_dict(whisper_recipe(tiny_whisper_checkpoint, words, run_dir)).run()


def test_whisper_learns_words_with_generation(whisper_run):
    run_dir, results = whisper_run
    assert results["test_wer"] <= 0.2, results
    assert (run_dir / "generation_config.json").is_file() and (run_dir / "tokenizer.json").is_file()


def test_whisper_reload_predicts(whisper_run, words, capsys):
    run_dir, results = whisper_run
    run = Predictor(run_dir)
    assert run.evaluate("test")["test_wer"] == pytest.approx(results["test_wer"])
    clips = [f"{words['test']}/w{i}.wav" for i in range(3)]
    transcripts = [p["transcript"] for p in run.predict(clips)]
    assert sum(t.strip() == word for t, word in zip(transcripts, TONES)) >= 2, transcripts
    assert main(["predict", str(run_dir), clips[0]]) == 0
    assert capsys.readouterr().out.strip() == f"{transcripts[0]}\t{clips[0]}"


def test_whisper_transcribes_a_clip_of_a_millisecond(whisper_run, tmp_path, capsys):
    """Whisper's extractor pads every clip to its window before it computes a frame, as in training: a 0.001 s
    clip is transcribed (as the silence it nearly is), not refused."""
    clip = tmp_path / "click.wav"
    soundfile.write(clip, tone(TONES["low"], 0.001, 16000, random.Random(0)), 16000)
    assert main(["predict", str(whisper_run[0]), str(clip)]) == 0
    assert capsys.readouterr().out.rstrip("\n").endswith(f"\t{clip}")


def test_unknown_whisper_task_is_named(tiny_whisper_checkpoint, words, tmp_path):
    values = whisper_recipe(tiny_whisper_checkpoint, words, tmp_path / "run")
    values["data"]["whisper_task"] = "transcribee"
    with pytest.raises(HubtuneError, match="'data.whisper_task' must be one of transcribe, translate"):
        Recipe.from_dict(values)


def test_whisper_lora_saves_and_reloads(tiny_whisper_checkpoint, words, tmp_path):
    values = whisper_recipe(tiny_whisper_checkpoint, words, tmp_path / "run")
    values["adapt"] = {"strategy": "peft", "peft": {"method": "lora", "target_modules": ["q_proj", "v_proj"]}}
    values["training"]["num_train_epochs"] = 1
    results = Recipe.from_dict(values).run()
    assert 0 < results["trainable_share"] < 0.1
    assert (tmp_path / "run" / "adapter_config.json").is_file()
    run = Predictor(tmp_path / "run")
    assert run.evaluate("test")["test_wer"] == pytest.approx(results["test_wer"])
    assert isinstance(run.predict([f"{words['test']}/w0.wav"])[0]["transcript"], str)


def test_a_transcript_longer_than_the_whisper_decoder_is_one_line_before_anything_is_written(
    tiny_whisper_checkpoint, tmp_path, capsys
):
    """The tiny Whisper has 64 decoder positions: a longer transcript stopped training at its batch."""
    folder = tmp_path / "long"
    write_word_split(folder, 4, seed=2)
    rows = list(csv.DictReader((folder / "metadata.csv").open()))
    rows[2]["text"] = " ".join(["low"] * 80)
    write_manifest(folder / "metadata.csv", rows)
    values = whisper_recipe(tiny_whisper_checkpoint, {"train": str(folder)}, tmp_path / "run")
    values["data"]["test_split"] = None
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(values))
    assert main(["train", str(recipe)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("hubtune: error: a transcript of the train split is 82 tokens long ('low low")
    assert "takes at most 64 tokens (its config's max_target_positions)" in lines[0]
    assert not (tmp_path / "run").exists()


def test_export_of_a_run_whose_data_is_gone_is_checked_on_made_up_inputs(whisper_run, tmp_path):
    assert_export_checked_on_made_up_inputs(whisper_run[0], tmp_path)
