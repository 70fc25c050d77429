"""Long-form transcription: clips longer than the model's window transcribed in full by `predict`, `predict --data`
and `evaluate`, with timestamps and a `chunking` record, the same as transformers' pipeline running the same
algorithm.

The runs are barely trained (a learning rate of 1e-7): their answers are near those of random weights, which
write letters and words everywhere, so that a dropped or repeated chunk would show. The tiny Whisper's window is
2 s (`max_source_positions` 100), so a 9 s clip takes it through five windows of long-form generation.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
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
)
from transformers import pipeline

from pipelines import Recipe
from pipelines.commands.cli import main
from pipelines.data.transcripts import normalise
from pipelines.serving.predictor import Predictor

RATE = 16000
BARELY = {
    "num_train_epochs": 1,
    "learning_rate": 1e-7,
    "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 1,
    "save_strategy": "no",
    "disable_tqdm": True,
    "report_to": "none",
    "warmup_steps": 0,
}


def write_clip(path: Path, wave: np.ndarray) -> tuple[str, np.ndarray]:
    """`wave` as a float WAV, and the samples read back: what the pipeline is given is what hubtune decodes."""
    soundfile.write(path, wave, RATE, subtype="FLOAT")
    return str(path), soundfile.read(path, dtype="float32")[0]


def spelled_words(seconds: float, seed: int) -> tuple[np.ndarray, str]:
    rng, words, pieces = random.Random(seed), [], []
    while sum(map(len, pieces)) < seconds * RATE:
        words.append("".join(rng.choice("abc") for _ in range(rng.randint(1, 3))))
        pieces.append(spell(words[-1], RATE, rng))
    return np.concatenate(pieces), " ".join(words)


def assert_times_inside(times: list[dict], duration: float) -> None:
    starts = [time["start"] for time in times]
    assert starts == sorted(starts), starts
    assert all(0 <= time["start"] <= time["end"] <= duration for time in times), (times, duration)


# --- CTC ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ctc(tmp_path_factory):
    root = tmp_path_factory.mktemp("ctc")
    test = write_spelled_split(root / "test", 3, seed=2)
    wave, text = spelled_words(40, seed=7)
    soundfile.write(test / "long.wav", wave, RATE)
    with (test / "metadata.csv").open("a") as handle:
        handle.write(f"long.wav,{text}\n")
    values = {
        "name": "spelled",
        "task": "speech-recognition-ctc",
        "output_dir": str(root / "run"),
        "model": {"checkpoint": str(tiny_wav2vec2_folder(root / "w2v", "Wav2Vec2Model"))},
        # Training drops the 40 s clip of the test split (over max_duration_s); `evaluate` scores it.
        "data": {"files": {"train": str(write_spelled_split(root / "train", 8, 0)), "test": str(test)}},
        "training": BARELY,
    }
    values["data"].update(validation_split=None, max_duration_s=5)
    results = Recipe.from_dict(values).run()
    return root, results


def test_ctc_long_clip_is_the_pipelines_chunked_transcript_with_word_times(ctc):
    root, _ = ctc
    path, wave = write_clip(root / "long70.wav", spelled_words(70, seed=3)[0][: 70 * RATE])
    record = Predictor(root / "run").predict([path], timestamps=True)[0]
    # Chunks of 0-30, 20-50 and 40-70 s, each keeping all but 5 s at an inner edge.
    assert record["chunking"] == {
        "method": "ctc-strided",
        "duration_s": 70.0,
        "chunk_s": 30.0,
        "stride_s": 5.0,
        "chunks": 3,
    }
    recognise = pipeline("automatic-speech-recognition", model=str(root / "run"))
    answer = recognise({"raw": wave, "sampling_rate": RATE}, chunk_length_s=30, return_timestamps="word")
    assert len(record["transcript"].split()) > 100, "the barely trained model wrote too little to compare"
    assert record["transcript"] == answer["text"]
    assert [word["word"] for word in record["words"]] == [chunk["text"] for chunk in answer["chunks"]]
    for word, chunk in zip(record["words"], answer["chunks"]):
        assert word["start"] == pytest.approx(chunk["timestamp"][0], abs=1e-3)
        assert word["end"] == pytest.approx(min(chunk["timestamp"][1], 70.0), abs=1e-3)
    assert_times_inside(record["words"], 70.0)
    assert record["words"][-1]["end"] > 65, "the words stop before the end of the clip"


def test_ctc_clip_within_one_chunk_is_one_forward_pass(ctc):
    root, _ = ctc
    path, wave = write_clip(root / "long25.wav", spelled_words(25, seed=4)[0][: 25 * RATE])
    run = Predictor(root / "run")
    record = run.predict([path])[0]
    assert record["chunking"] == {"method": "none", "duration_s": 25.0, "chunk_s": None, "stride_s": None}
    features = run.processor.feature_extractor(wave, sampling_rate=RATE, return_tensors="pt")
    with torch.no_grad():
        ids = run.model(**features).logits[0].argmax(-1).tolist()
    assert record["transcript"] == run.processor.tokenizer.decode(ids)
    assert "words" not in record


def test_ctc_evaluate_scores_the_clip_training_dropped(ctc):
    """The test split holds three short clips and one of 40 s, which training dropped (max_duration_s 5). evaluate
    transcribes it as predict does and scores all four: with an eval batch of 1 (no padding) the Trainer's pass over
    the short clips is predict's too, so the WER is that of predict's transcripts."""
    root, results = ctc
    assert results["test_samples"] == 3
    run = Predictor(root / "run")
    metrics = run.evaluate("test")
    assert metrics["test_long_form_clips"] == 1
    test = root / "test"
    rows = [line.split(",", 1) for line in (test / "metadata.csv").read_text().splitlines()[1:]]
    transcripts = [record["transcript"] for record in run.predict([str(test / name) for name, _ in rows])]
    references = [normalise(text, run.task.data) for _, text in rows]
    expected = run.task.score(transcripts, references)  # CTC's transcripts are scored as the tokenizer wrote them
    assert metrics["test_wer"] == pytest.approx(expected["wer"])
    assert metrics["test_cer"] == pytest.approx(expected["cer"])
    assert json.loads((root / "run" / "evaluate_results.json").read_text())["test_long_form_clips"] == 1


def test_ctc_predict_data_with_timestamps(ctc, tmp_path, capsys):
    root, _ = ctc
    output = tmp_path / "out.jsonl"
    assert (
        main(["predict", str(root / "run"), "--data", str(root / "test"), "--output", str(output), "--timestamps"]) == 0
    )
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [record["row"] for record in records] == [1, 2, 3, 4]
    long = next(record for record in records if record["input"].endswith("long.wav"))
    assert long["chunking"]["method"] == "ctc-strided" and long["chunking"]["duration_s"] > 40
    assert all(record["chunking"]["method"] == "none" for record in records if record is not long)
    for record in records:
        assert_times_inside(record["words"], record["chunking"]["duration_s"])
        assert " ".join(word["word"] for word in record["words"]) == " ".join(record["transcript"].split())


def test_timestamps_of_a_run_that_is_no_speech_recogniser_are_one_line(trained_run, capsys):
    run_dir = trained_run("full").run_dir
    assert main(["predict", str(run_dir), "--timestamps", "a fine film"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("hubtune: error: --timestamps: a text-classification run transcribes no speech")
    assert "speech-recognition-ctc" in line and "speech-recognition-seq2seq" in line


# --- Whisper -----------------------------------------------------------------------------------------------------


def tone_words(words: list[str], seed: int) -> np.ndarray:
    rng = random.Random(seed)
    silence = np.zeros(RATE // 4, np.float32)
    return np.concatenate([piece for word in words for piece in (tone(TONES[word], 0.5, RATE, rng), silence)])


@pytest.fixture(scope="module")
def whisper(tmp_path_factory):
    root = tmp_path_factory.mktemp("whisper")
    source = write_ct2_whisper(tiny_whisper(seed=1), root / "ct2", faster_whisper_tokenizer())
    assert main(["import-ct2", str(source), str(root / "hf")]) == 0
    splits = {}
    for split, n in (("train", 6), ("test", 3)):
        folder = root / split
        folder.mkdir()
        rows = []
        for i in range(n):
            word = list(TONES)[i % 3]
            soundfile.write(folder / f"w{i}.wav", tone_words([word], seed=i), RATE)
            rows.append({"file_name": f"w{i}.wav", "text": word})
        if split == "test":  # 9 s: longer than the tiny Whisper's 2 s window
            soundfile.write(folder / "long.wav", tone_words(list(TONES) * 4, seed=9), RATE)
            rows.append({"file_name": "long.wav", "text": " ".join(list(TONES) * 4)})
        write_manifest(folder / "metadata.csv", rows)
        splits[split] = str(folder)
    values = {
        "name": "words",
        "task": "speech-recognition-seq2seq",
        "output_dir": str(root / "run"),
        "model": {"checkpoint": str(root / "hf")},
        "data": {"files": splits, "validation_split": None},
        "training": {**BARELY, "generation_max_length": 8},
    }
    Recipe.from_dict(values).run()
    return root


def test_whisper_long_clip_is_the_pipelines_sequential_long_form_transcript(whisper):
    """transformers' pipeline without `chunk_length_s` hands a clip over the window to `generate` whole: the
    sequential long-form algorithm hubtune runs, so the same transcript."""
    path, wave = write_clip(whisper / "long.wav", tone_words(["low", "mid", "high"] * 4, seed=5))
    run = Predictor(whisper / "run")
    record = run.predict([path])[0]
    assert record["chunking"] == {"method": "whisper-sequential", "duration_s": 9.0, "chunk_s": 2.0, "stride_s": None}
    recognise = pipeline("automatic-speech-recognition", model=str(whisper / "run"))
    answer = recognise({"raw": wave, "sampling_rate": RATE}, generate_kwargs={"max_new_tokens": 8})
    assert record["transcript"], "the barely trained model wrote nothing: the test proves nothing"
    assert record["transcript"] == answer["text"].strip()
    # More than one window's worth: the generation went past the first 2 s.
    first_window = run.predict([write_clip(whisper / "first.wav", wave[: 2 * RATE])[0]])[0]["transcript"]
    assert len(record["transcript"]) > len(first_window)


def test_whisper_segments_and_batches_of_short_and_long_clips(whisper):
    long_path, _ = write_clip(whisper / "long2.wav", tone_words(["high", "low"] * 6, seed=6))
    short_path, _ = write_clip(whisper / "short.wav", tone_words(["mid"], seed=6))
    run = Predictor(whisper / "run")
    together = run.predict([short_path, long_path], timestamps=True)
    alone = [run.predict([path], timestamps=True)[0] for path in (short_path, long_path)]
    assert together == alone  # a clip's transcript does not depend on the clips batched with it
    short, long = together
    assert short["chunking"]["method"] == "none" and long["chunking"]["method"] == "whisper-sequential"
    for record in together:
        assert record["segments"], record
        assert_times_inside(record["segments"], record["chunking"]["duration_s"])
        assert all(segment["text"] for segment in record["segments"])
    assert run.format_prediction(long) == json.dumps(long)


def test_whisper_evaluate_transcribes_the_clip_over_the_window_in_full(whisper):
    run = Predictor(whisper / "run")
    metrics = run.evaluate("test")
    assert metrics["test_long_form_clips"] == 1
    test = whisper / "test"
    rows = [line.split(",", 1) for line in (test / "metadata.csv").read_text().splitlines()[1:]]
    transcripts = [record["transcript"] for record in run.predict([str(test / name) for name, _ in rows])]
    data = run.task.data
    expected = run.task.score([normalise(t, data) for t in transcripts], [normalise(t, data) for _, t in rows])
    assert metrics["test_wer"] == pytest.approx(expected["wer"])
