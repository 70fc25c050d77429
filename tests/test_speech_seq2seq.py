"""Whisper fine-tuning through Seq2SeqTrainer: a tiny Whisper learns one word per tone, generates it at evaluation."""

from __future__ import annotations

import csv
import json
import logging
import random
import shutil

import pytest
import soundfile
import yaml
from helpers.runs import assert_export_checked_on_made_up_inputs
from helpers.speech import (
    TONES,
    faster_whisper_tokenizer,
    tiny_multilingual_whisper,
    tiny_whisper,
    tone,
    write_ct2_whisper,
    write_manifest,
)
from transformers import pipeline

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


DECODING = ("num_beams", "max_new_tokens", "length_penalty", "return_timestamps")


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
    assert (run_dir / "tokenizer.json").is_file()
    # `training.generation_max_length` of the recipe is read as `generation.max_new_tokens`, recorded there.
    saved = json.loads((run_dir / "generation_config.json").read_text())
    assert {key: saved.get(key) for key in DECODING} == {
        "num_beams": 1,
        "max_new_tokens": 8,
        "length_penalty": 1.0,
        "return_timestamps": None,  # unset: a False would make pipeline() refuse a clip over the window
    }
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    assert recipe["generation"]["max_new_tokens"] == 8 and "generation_max_length" not in recipe["training"]


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


# --- language, task and decoding on a multilingual Whisper --------------------------------------------------------


@pytest.fixture(scope="module")
def multilingual_checkpoint(tmp_path_factory):
    """A tiny multilingual Whisper whose generation config knows English, French and German."""
    return tiny_multilingual_whisper(tmp_path_factory.mktemp("multilingual") / "whisper")


def multilingual_recipe(checkpoint, words, output_dir, **data):
    values = whisper_recipe(checkpoint, words, output_dir)
    values["data"].update(data)
    del values["training"]["generation_max_length"]
    values["training"]["num_train_epochs"] = 4
    return values


def speech_of(path):
    wave, rate = soundfile.read(path, dtype="float32")
    assert rate == 16000
    return wave


@pytest.mark.parametrize("language, task", [("french", "transcribe"), ("fr", "translate")])
def test_language_and_task_make_the_prompt_of_labels_generation_and_pipeline(
    multilingual_checkpoint, words, tmp_path, language, task
):
    """`fr` (or `french`) with a task: the training labels and every generation start with the same prompt, the
    run folder's generation_config.json holds it with the decoding keys, and pipeline() on the run folder answers
    as hubtune predict does."""
    values = multilingual_recipe(multilingual_checkpoint, words, tmp_path / "run", language=language, whisper_task=task)
    values["generation"] = {"num_beams": 2, "length_penalty": 0.5, "max_new_tokens": 6}
    result = Recipe.from_dict(values).run()
    prompt = ["<|startoftranscript|>", "<|fr|>", f"<|{task}|>", "<|notimestamps|>"]
    tokenizer = result.data.processor.tokenizer
    assert all(tokenizer.convert_ids_to_tokens(labels[:4]) == prompt for labels in result.data["train"]["labels"])
    saved = json.loads((tmp_path / "run" / "generation_config.json").read_text())
    assert {key: saved.get(key) for key in ("language", "task", *DECODING)} == {
        "language": "fr",
        "task": task,
        "num_beams": 2,
        "max_new_tokens": 6,
        "length_penalty": 0.5,
        "return_timestamps": None,  # unset: a False would make pipeline() refuse a clip over the window
    }
    run = Predictor(tmp_path / "run")
    clips = [f"{words['test']}/w{i}.wav" for i in (0, 2, 4)]  # the 16 kHz ones, given to pipeline() as samples
    features = run.processor.feature_extractor(
        [speech_of(clip) for clip in clips], sampling_rate=16000, return_tensors="pt"
    )
    generated = run.model.generate(**features, return_dict_in_generate=True).sequences
    assert all(tokenizer.convert_ids_to_tokens(ids[:4]) == prompt for ids in generated.tolist())
    predicted = [p["transcript"] for p in run.predict(clips)]
    recognise = pipeline("automatic-speech-recognition", model=str(tmp_path / "run"))
    answers = recognise([{"raw": speech_of(clip), "sampling_rate": 16000} for clip in clips])
    assert [answer["text"].strip() for answer in answers] == predicted
    assert any(predicted), "every transcript is empty: the comparison proves nothing"


def train_error(values, tmp_path, capsys):
    """`hubtune train` on `values`: its one line of error, checked to leave no run folder behind."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(values))
    assert main(["train", str(recipe)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert not (tmp_path / "run").exists()
    return lines[0]


@pytest.mark.parametrize(
    "data, key",
    [({"language": "french"}, "data.language"), ({"whisper_task": "translate"}, "data.whisper_task")],
)
def test_language_or_translation_on_an_english_only_whisper_is_one_line(
    tiny_whisper_checkpoint, words, tmp_path, capsys, data, key
):
    values = whisper_recipe(tiny_whisper_checkpoint, words, tmp_path / "run")
    values["data"].update(data)
    line = train_error(values, tmp_path, capsys)
    assert line.startswith(f"hubtune: error: recipe key '{key}' is '{next(iter(data.values()))}', but checkpoint")
    assert "is English-only" in line


def test_a_language_the_checkpoint_lacks_is_named_with_the_ones_it_has(
    multilingual_checkpoint, words, tmp_path, capsys
):
    values = multilingual_recipe(multilingual_checkpoint, words, tmp_path / "run", language="spanish")
    line = train_error(values, tmp_path, capsys)
    assert line.startswith("hubtune: error: recipe key 'data.language' is 'spanish', which checkpoint")
    assert line.endswith(
        "give the code or name of one of its 3 languages, such as en (english), de (german), fr (french)"
    )


def test_a_multilingual_whisper_needs_the_language(multilingual_checkpoint, words, tmp_path, capsys):
    line = train_error(multilingual_recipe(multilingual_checkpoint, words, tmp_path / "run"), tmp_path, capsys)
    assert "is a multilingual Whisper: set recipe key 'data.language'" in line


def test_max_new_tokens_beyond_the_decoder_is_one_line(tiny_whisper_checkpoint, words, tmp_path, capsys):
    """The tiny Whisper has 64 decoder positions; an English-only prompt takes 2 (start, no-timestamps)."""
    values = whisper_recipe(tiny_whisper_checkpoint, words, tmp_path / "run")
    values["training"]["generation_max_length"] = 63
    line = train_error(values, tmp_path, capsys)
    assert line.endswith(
        "takes at most 64 tokens (its config's max_target_positions), 2 of them its prompt: set 62 or less"
    )
    assert "recipe key 'generation.max_new_tokens' (or 'training.generation_max_length', read as it) is 63" in line


def test_return_timestamps_decodes_with_timestamp_tokens_and_scores_the_text(multilingual_checkpoint, words, tmp_path):
    """The labels keep <|notimestamps|> (the transcripts have no times); generation drops it from the prompt and
    predicts timestamp tokens, which neither the scores nor the transcripts contain."""
    values = multilingual_recipe(multilingual_checkpoint, words, tmp_path / "run", language="de")
    values["generation"] = {"return_timestamps": True, "max_new_tokens": 8}
    result = Recipe.from_dict(values).run()
    assert {"test_wer", "test_cer"} <= set(result)
    tokenizer = result.data.processor.tokenizer
    assert tokenizer.convert_ids_to_tokens(result.data["train"]["labels"][0][:4])[-1] == "<|notimestamps|>"
    assert json.loads((tmp_path / "run" / "generation_config.json").read_text())["return_timestamps"] is True
    run = Predictor(tmp_path / "run")
    clip = f"{words['test']}/w0.wav"
    features = run.processor.feature_extractor(speech_of(clip), sampling_rate=16000, return_tensors="pt")
    generated = run.model.generate(**features, return_dict_in_generate=True).sequences[0].tolist()
    assert tokenizer.convert_ids_to_tokens(generated[:3]) == ["<|startoftranscript|>", "<|de|>", "<|transcribe|>"]
    assert generated[3] > tokenizer.convert_tokens_to_ids("<|notimestamps|>"), "the first token is not a timestamp"
    record = run.predict([clip])[0]
    assert "<|" not in record["transcript"]
    # The recipe's return_timestamps gives predict's records their segments, as --timestamps does.
    assert "segments" in record and all(
        0 <= segment["start"] <= segment["end"] and "<|" not in segment["text"] for segment in record["segments"]
    )


def test_a_streamed_clip_over_the_window_is_left_out_of_training(multilingual_checkpoint, words, tmp_path, caplog):
    """Streamed as read whole: a clip longer than Whisper's window would be cut to its first 2 s and trained on
    against the whole transcript, so it is left out, with a count naming it, though data.max_duration_s is unset."""
    train = tmp_path / "train"
    shutil.copytree(words["train"], train)
    soundfile.write(train / "long.wav", tone(TONES["low"], 3.0, 16000, random.Random(2)), 16000)
    with (train / "metadata.csv").open("a") as metadata:
        metadata.write("long.wav,Low.\n")
    values = multilingual_recipe(
        multilingual_checkpoint, {**words, "train": str(train)}, tmp_path / "run", language="fr", streaming=True
    )
    values["data"]["max_duration_s"] = None
    del values["training"]["num_train_epochs"]
    values["training"]["max_steps"] = 2
    with caplog.at_level(logging.WARNING, logger="pipelines.tasks.audio_task"):
        Recipe.from_dict(values).run()
    assert [r.getMessage() for r in caplog.records if "left out" in r.getMessage()] == [
        f"data file '{train}': 1 clips longer than Whisper's 2 s window left out so far (the latest: "
        f"data file '{train}', row 25)"
    ]
