"""scripts/bench_longform.py at a tiny scale: its recordings, their pieces and transcripts, its training clips, and
its WER. The benchmark itself (`make bench-longform`) trains and transcribes for minutes; not run here."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile
from helpers.scripts import SCRIPTS, load_script

audio = load_script("longform_audio")
bench = load_script("bench_longform")
texts = load_script("longform_texts")

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="Debian espeak-ng is not installed")


def check_recording(recording, min_s: float, piece_s: float) -> None:
    """The long file lasts at least `min_s`, and is exactly its pieces end to end, transcripts included."""
    long_wave, rate = soundfile.read(recording.path, dtype="float32")
    assert rate == audio.RATE
    assert len(long_wave) / rate == pytest.approx(recording.seconds) and recording.seconds >= min_s
    pieces = [soundfile.read(path, dtype="float32")[0] for path, _ in recording.pieces]
    assert len(pieces) >= 2 and all(len(piece) / rate <= piece_s for piece in pieces)
    np.testing.assert_array_equal(np.concatenate(pieces), long_wave)
    assert " ".join(text for _, text in recording.pieces) == recording.transcript


@pytest.mark.skipif(not audio.LIBRIVOX.is_dir(), reason="Debian pocketsphinx-testdata is not installed")
def test_librivox_clips_cycle_into_a_long_recording(tmp_path):
    utterances = audio.librivox_utterances()
    assert len(utterances) == 5 and utterances[1].text == "he was not an ill disposed young man"
    recording = audio.write_recording(tmp_path, "librivox", audio.cycle_to(utterances, 30.0), piece_s=10.0)
    check_recording(recording, 30.0, 10.0)
    # The five clips and their gaps last 26.2 s: 30 s needs the first one again.
    assert recording.transcript.count(utterances[0].text) == 2 and recording.transcript.count(utterances[1].text) == 1


@needs_espeak
def test_espeak_recordings_and_their_pieces(tmp_path, monkeypatch):
    monkeypatch.setattr(audio, "LIBRIVOX", tmp_path / "absent")
    text = "The cat sat on the mat. It was warm! Was the dog there? No, it was not."
    (recording,) = audio.make_test_recordings(tmp_path / "test", {"cats": ("en-us", text)}, min_s=8.0, piece_s=3.0)
    check_recording(recording, 8.0, 3.0)
    assert recording.transcript.startswith(text)
    files = audio.make_memory_files(tmp_path / "memory", [recording], minutes=(1,))
    assert soundfile.info(files[1]).frames == 60 * audio.RATE


def test_a_sentence_longer_than_a_piece_is_refused():
    long = audio.Utterance("too long", np.zeros(5 * audio.RATE, np.float32))
    with pytest.raises(ValueError, match="does not fit a 3.0 s piece"):
        audio.group_pieces([long], 3.0)


@needs_espeak
def test_training_clips_read_the_training_texts(tmp_path):
    folder = audio.make_train_data(tmp_path / "train", clips=3, texts=texts.TRAIN_TEXTS[:1])
    with (folder / "metadata.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3
    for row in rows:
        assert row["text"] in texts.TRAIN_TEXTS[0]
        assert soundfile.info(folder / row["file_name"]).samplerate == audio.RATE


def test_training_texts_share_no_five_words_with_the_test_texts():
    def five_grams(text: str) -> set[tuple[str, ...]]:
        words = [word.strip(",.;:?!").lower() for word in text.split()]
        return {tuple(words[i : i + 5]) for i in range(len(words) - 4)}

    test = set().union(*(five_grams(text) for _, text in texts.TEST_TEXTS.values()))
    train = set().union(*(five_grams(text) for text in texts.TRAIN_TEXTS))
    assert test and train and not test & train


def test_wer_normalises_as_the_speech_tasks_do():
    assert bench.error_rates(["Hello, World."], ["hello world"]) == {"wer": 0.0, "cer": 0.0}
    # Corpus rates: 1 insertion + 1 substitution over 4 reference words.
    assert bench.error_rates(["hello big world", "good day"], ["hello world", "good night"])["wer"] == 0.5


def test_high_water_mark_sees_a_new_peak():
    """In a fresh, small process: a 200 MB block, every page written, lifts the peak by about its size."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import numpy as np; from bench_longform import high_water_mb; "
        "before = high_water_mb(); block = np.ones(200 * 2**20 // 8); print(high_water_mb() - before)"
    )
    output = subprocess.run([sys.executable, "-c", code, str(SCRIPTS)], check=True, capture_output=True, text=True)
    assert 190 <= float(output.stdout) <= 260
