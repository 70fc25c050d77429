"""The audio of scripts/bench_longform.py: long recordings with known transcripts, their <= 30 s pieces, the 1- and
10-minute files of the memory comparison, and the espeak-ng clips the CTC model trains on. All 16 kHz mono WAV.

Long recordings join utterances (LibriVox clips, or espeak-ng sentences) end to end with 0.3 s of silence after
each, cycling through them until the recording lasts long enough. Pieces group consecutive utterances, so each
piece is exactly a stretch of the long file and its transcript the matching stretch of the long transcript.
"""

from __future__ import annotations

import csv
import random
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from longform_texts import TRAIN_TEXTS  # noqa: E402

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
RATE = 16_000
PIECE_S = 30.0
MIN_LONG_S = 90.0
GAP_S = 0.3  # silence after each joined clip or sentence
# The test recordings' voices are among these; the texts differ (longform_texts.py).
TRAIN_VOICES = ["en-us", "en-gb", "en-gb-x-rp", "en-us+f2"]


@dataclass
class Utterance:
    text: str
    wave: np.ndarray


@dataclass
class Recording:
    name: str
    path: Path
    transcript: str
    seconds: float
    pieces: list[tuple[Path, str]] = field(default_factory=list)


def sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.?!])\s+", text.strip()) if s]


def speak(text: str, voice: str, speed: int = 160, pitch: int = 50) -> np.ndarray:
    """`text` read by espeak-ng, as float32 at 16 kHz (espeak-ng writes 22.05 kHz)."""
    from scipy.signal import resample_poly

    with tempfile.NamedTemporaryFile(suffix=".wav") as handle:
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", handle.name, text], check=True
        )
        wave, rate = soundfile.read(handle.name, dtype="float32")
    return resample_poly(wave, RATE, rate).astype(np.float32) if rate != RATE else wave


def librivox_utterances() -> list[Utterance]:
    """The LibriVox clips with their transcripts, in file order."""
    utterances = []
    for line in (LIBRIVOX / "transcription").read_text().splitlines():
        name = line.split("(")[-1].rstrip(")")
        text = line.split("</s>")[0].replace("<s>", "").strip()
        wave, rate = soundfile.read(LIBRIVOX / f"{name}.wav", dtype="float32")
        assert rate == RATE, (name, rate)
        utterances.append(Utterance(text, wave))
    return utterances


def cycle_to(utterances: list[Utterance], seconds: float) -> list[Utterance]:
    """`utterances` repeated in order until, joined with gaps, they last at least `seconds`."""
    chosen: list[Utterance] = []
    total = 0.0
    while total < seconds:
        utterance = utterances[len(chosen) % len(utterances)]
        chosen.append(utterance)
        total += len(utterance.wave) / RATE + GAP_S
    return chosen


def join(utterances: list[Utterance]) -> np.ndarray:
    gap = np.zeros(int(GAP_S * RATE), np.float32)
    return np.concatenate([part for u in utterances for part in (u.wave, gap)])


def group_pieces(utterances: list[Utterance], limit_s: float) -> list[list[Utterance]]:
    """Consecutive utterances grouped greedily into pieces of at most `limit_s` seconds (gaps included)."""
    pieces: list[list[Utterance]] = []
    length = 0.0
    for utterance in utterances:
        seconds = len(utterance.wave) / RATE + GAP_S
        if seconds > limit_s:
            raise ValueError(f"an utterance of {seconds:.1f} s does not fit a {limit_s} s piece: {utterance.text!r}")
        if pieces and length + seconds <= limit_s:
            pieces[-1].append(utterance)
            length += seconds
        else:
            pieces.append([utterance])
            length = seconds
    return pieces


def write_recording(folder: Path, name: str, utterances: list[Utterance], piece_s: float = PIECE_S) -> Recording:
    """`name.wav` (all utterances joined) and `name-pieceNN.wav` (at most `piece_s` seconds each) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    wave = join(utterances)
    path = folder / f"{name}.wav"
    soundfile.write(path, wave, RATE)
    recording = Recording(name, path, " ".join(u.text for u in utterances), len(wave) / RATE)
    for index, piece in enumerate(group_pieces(utterances, piece_s)):
        piece_path = folder / f"{name}-piece{index:02d}.wav"
        soundfile.write(piece_path, join(piece), RATE)
        recording.pieces.append((piece_path, " ".join(u.text for u in piece)))
    return recording


def make_test_recordings(
    folder: Path, texts: dict[str, tuple[str, str]], min_s: float = MIN_LONG_S, piece_s: float = PIECE_S
) -> list[Recording]:
    """The LibriVox recording (when pocketsphinx-testdata is there) and one espeak-ng recording per text, each
    cycled to at least `min_s` seconds."""
    recordings = []
    if LIBRIVOX.is_dir():
        recordings.append(write_recording(folder, "librivox", cycle_to(librivox_utterances(), min_s), piece_s))
    for name, (voice, text) in texts.items():
        spoken = [Utterance(sentence, speak(sentence, voice)) for sentence in sentences(text)]
        recordings.append(write_recording(folder, name, cycle_to(spoken, min_s), piece_s))
    return recordings


def make_memory_files(folder: Path, recordings: list[Recording], minutes: tuple[int, ...] = (1, 10)) -> dict[int, Path]:
    """1- and 10-minute files: the test recordings joined and cycled, cut to the exact length."""
    audio = np.concatenate([soundfile.read(r.path, dtype="float32")[0] for r in recordings])
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for count in minutes:
        samples = count * 60 * RATE
        path = folder / f"memory-{count}min.wav"
        soundfile.write(path, np.resize(audio, samples), RATE)
        files[count] = path
    return files


def phrases(texts: list[str]) -> list[str]:
    """The training texts cut at punctuation into phrases of at least three words."""
    pieces = []
    for text in texts:
        current: list[str] = []
        for word in text.split():
            current.append(word)
            if word[-1] in ",.;:?!" and len(current) >= 3:
                pieces.append(" ".join(current))
                current = []
        if current:
            pieces.append(" ".join(current))
    return pieces


def make_train_data(folder: Path, clips: int, seed: int = 0, texts: list[str] = TRAIN_TEXTS) -> Path:
    """An audiofolder (metadata.csv: file_name, text) of `clips` espeak-ng clips, each one to three phrases of
    the training texts in a random voice, speed and pitch."""
    folder.mkdir(parents=True, exist_ok=True)
    pool, rng, rows = phrases(texts), random.Random(seed), []
    for index in range(clips):
        start = rng.randrange(len(pool))
        text = " ".join(pool[start : start + rng.randint(1, 2)])
        wave = speak(text, rng.choice(TRAIN_VOICES), rng.choice((150, 160, 170)), rng.choice((40, 50, 60)))
        name = f"clip{index:04d}.wav"
        soundfile.write(folder / name, wave, RATE)
        rows.append({"file_name": name, "text": text})
    with (folder / "metadata.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file_name", "text"])
        writer.writeheader()
        writer.writerows(rows)
    return folder
