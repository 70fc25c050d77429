"""Memory and time of hubtune's data paths as the data grows: does peak memory stay flat?

- text classification (all-MiniLM-L6-v2) on the Rotten Tomatoes reviews repeated to 10k, 100k and 1M rows (each
  with a row id): data preparation (reading the csv, checking, labelling, tokenising), then 20 training steps;
  cold (an empty datasets cache) and warm (the cache of the cold run reused);
- audio classification on the spoken digits repeated to 1k and 10k clips: the same. The model is a 2-layer
  wav2vec2 classifier built from its config: the measurement is about the data path, not the encoder;
- `hubtune predict --data` on 100k texts with a text run trained here: peak memory and rows per second.

Every measurement runs in a fresh process, so its peak RSS (`ru_maxrss`) is its own. Results go to
benchmarks/bench_scale.json and .md.

Usage: HF_HUB_OFFLINE=1 python scripts/bench_scale.py [--text 10000,100000,1000000] [--audio 1000,10000]
       [--predict 100000]   (`make bench-scale` places the offline assets first.) An empty list skips a
       section and keeps its earlier results in the JSON file.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "benchmarks"
REVIEWS = ROOT / "data" / "rotten_tomatoes" / "train.csv"
DIGITS = ROOT / "data" / "spoken_digits" / "train"
TEXT_CHECKPOINT = "sentence-transformers/all-MiniLM-L6-v2"
STEPS = 20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def write_rows(path: Path, header: list[str], rows: list[list[Any]], total: int) -> Path:
    """`rows` repeated to `total` rows, each with its row id first."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", *header])
        for i in range(total):
            writer.writerow([i, *rows[i % len(rows)]])
    return path


def text_rows() -> list[list[Any]]:
    with REVIEWS.open(newline="", encoding="utf-8") as handle:
        return [[row["text"], row["label"]] for row in csv.DictReader(handle)]


def audio_rows() -> list[list[Any]]:
    return [[str(path), path.parent.name] for path in sorted(DIGITS.rglob("*.wav"))]


def build_audio_checkpoint(folder: Path) -> Path:
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification

    config = Wav2Vec2Config(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        conv_dim=(32, 32, 32),
        conv_stride=(5, 4, 4),
        conv_kernel=(10, 8, 8),
        num_feat_extract_layers=3,
    )
    Wav2Vec2ForSequenceClassification(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, return_attention_mask=True).save_pretrained(folder)
    return folder


def recipe(task: str, checkpoint: str, train: Path, output_dir: Path, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": f"bench-scale-{task}",
        "task": task,
        "output_dir": str(output_dir),
        "model": {"checkpoint": checkpoint},
        "data": {"files": {"train": str(train)}, "validation_split": None, "test_split": None, **data},
        "training": {
            "max_steps": STEPS,
            "per_device_train_batch_size": 16,
            "learning_rate": 5e-5,
            "save_strategy": "no",
            "logging_steps": STEPS,
            "disable_tqdm": True,
            "report_to": "none",
        },
    }


def child(values: dict[str, Any], out: Path) -> None:
    """One measurement, in this (fresh) process: prepare the data as a run does, then train a run on it."""
    from pipelines import Recipe, load_recipe_config
    from pipelines.data.splits import load_splits
    from pipelines.tasks import get_task

    config = load_recipe_config(values=values)
    task = get_task(config.task)(config)
    started = time.perf_counter()
    processor = task.load_processor()
    splits = load_splits(config.data, config.seed, task.load_data_file)
    task.prepare(splits, task.fit_processor(splits, processor))
    prepare_s = time.perf_counter() - started
    started = time.perf_counter()
    results = Recipe(load_recipe_config(values=values)).run()
    run_s = time.perf_counter() - started
    out.write_text(
        json.dumps(
            {
                "prepare_s": prepare_s,
                "run_s": run_s,
                "train_runtime_s": results["train_runtime"],
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    )


def child_predict(run_dir: Path, data: Path, output: Path, out: Path) -> None:
    from pipelines.serving.predictor import Predictor

    predictor = Predictor(run_dir)
    started = time.perf_counter()
    rows = predictor.predict_data(data, output, batch_size=64)
    seconds = time.perf_counter() - started
    out.write_text(
        json.dumps({"rows": rows, "predict_s": seconds, "rows_per_s": rows / seconds, "peak_rss_mb": peak_rss_mb()})
    )


def spawn(mode: str, arguments: list[str], cache: Path) -> dict[str, Any]:
    """Run this script's `mode` in a new process with its own datasets cache; returns what it measured."""
    out = cache.parent / f"{cache.name}-{mode}-{time.monotonic_ns()}.json"
    env = dict(os.environ, HF_DATASETS_CACHE=str(cache), TOKENIZERS_PARALLELISM="false")
    command = [sys.executable, __file__, f"--child-{mode}", *arguments, str(out)]
    completed = subprocess.run(command, env=env, capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(f"{mode} {arguments} failed:\n{completed.stderr[-4000:]}")
    return json.loads(out.read_text())


def cold_and_warm(values: dict[str, Any], scratch: Path, tag: str) -> dict[str, Any]:
    cache = scratch / f"cache-{tag}"
    recipe_file = scratch / f"{tag}.json"
    recipe_file.write_text(json.dumps(values))
    cold = spawn("run", [str(recipe_file)], cache)
    values["overwrite"] = True
    recipe_file.write_text(json.dumps(values))
    warm = spawn("run", [str(recipe_file)], cache)
    return {
        "peak_rss_mb": cold["peak_rss_mb"],
        "peak_rss_mb_warm": warm["peak_rss_mb"],
        "prepare_s_cold": cold["prepare_s"],
        "prepare_s_warm": warm["prepare_s"],
        "train_runtime_s": cold["train_runtime_s"],
        "run_s_cold": cold["run_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--text", default="10000,100000,1000000", help="text row counts ('' to skip)")
    parser.add_argument("--audio", default="1000,10000", help="audio clip counts ('' to skip)")
    parser.add_argument("--predict", default="100000", help="rows for predict --data ('' to skip)")
    parser.add_argument("--out-dir", default=str(OUT_DIR))
    args = parser.parse_args()
    sizes = {name: [int(n) for n in getattr(args, name).split(",") if n] for name in ("text", "audio", "predict")}
    report: dict[str, Any] = {"text": {}, "audio": {}, "predict": {}}
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        reviews = text_rows() if sizes["text"] or sizes["predict"] else []
        text_data = {"text_column": "text", "label_column": "label", "labels": ["negative", "positive"]}
        for rows in sizes["text"]:
            train = write_rows(scratch / f"text-{rows}.csv", ["text", "label"], reviews, rows)
            values = recipe("text-classification", TEXT_CHECKPOINT, train, scratch / f"run-text-{rows}", text_data)
            report["text"][str(rows)] = cold_and_warm(values, scratch, f"text-{rows}")
            print(f"text {rows}: {report['text'][str(rows)]}", flush=True)
        if sizes["audio"]:
            checkpoint = build_audio_checkpoint(scratch / "tiny-wav2vec2")
            clips = audio_rows()
            for rows in sizes["audio"]:
                train = write_rows(scratch / f"audio-{rows}.csv", ["audio", "label"], clips, rows)
                values = recipe(
                    "audio-classification",
                    str(checkpoint),
                    train,
                    scratch / f"run-audio-{rows}",
                    {"max_duration_s": 2.0},
                )
                report["audio"][str(rows)] = cold_and_warm(values, scratch, f"audio-{rows}")
                print(f"audio {rows}: {report['audio'][str(rows)]}", flush=True)
        for rows in sizes["predict"]:
            train = write_rows(scratch / "predict-train.csv", ["text", "label"], reviews, 2000)
            run_dir = scratch / "run-predict"
            values = recipe("text-classification", TEXT_CHECKPOINT, train, run_dir, text_data)
            (scratch / "predict.json").write_text(json.dumps(values))
            spawn("run", [str(scratch / "predict.json")], scratch / "cache-predict")
            data = write_rows(scratch / f"predict-{rows}.csv", ["text", "label"], reviews, rows)
            report["predict"][str(rows)] = spawn(
                "predict", [str(run_dir), str(data), str(scratch / "predictions.jsonl")], scratch / "cache-predict"
            )
            print(f"predict {rows}: {report['predict'][str(rows)]}", flush=True)
    report["setup"] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "training_steps": STEPS,
        "batch_size": 16,
        "text_model": TEXT_CHECKPOINT,
        "audio_model": "2-layer wav2vec2 classifier built from its config",
    }
    out_dir = Path(args.out_dir)
    earlier = out_dir / "bench_scale.json"
    if earlier.is_file():
        # A partial run (e.g. `--text '' --audio ''`) replaces only the sections it measured.
        kept = json.loads(earlier.read_text())
        report = {**kept, **{name: values for name, values in report.items() if values}}
    write(report, out_dir)


def write(report: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench_scale.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Scale benchmark (scripts/bench_scale.py)",
        "",
        f"{report['setup']['machine']}; each row a fresh process; {STEPS} training steps of batch 16 after "
        "preparation. Cold: an empty datasets cache; warm: the cold run's cache reused.",
        "",
        "| task | rows | peak RSS cold (MB) | peak RSS warm (MB) | prepare cold (s) | prepare warm (s) | 20 steps (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for task in ("text", "audio"):
        for rows, row in report[task].items():
            lines.append(
                f"| {task} | {int(rows):,} | {row['peak_rss_mb']:.0f} | {row['peak_rss_mb_warm']:.0f} | "
                f"{row['prepare_s_cold']:.1f} | {row['prepare_s_warm']:.1f} | {row['train_runtime_s']:.1f} |"
            )
    for rows, row in report["predict"].items():
        lines += [
            "",
            f"`hubtune predict --data` on {int(rows):,} texts: {row['rows_per_s']:.0f} rows/s, "
            f"peak RSS {row['peak_rss_mb']:.0f} MB.",
        ]
    (out_dir / "bench_scale.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child-run":
        child(json.loads(Path(sys.argv[2]).read_text()), Path(sys.argv[3]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--child-predict":
        child_predict(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5]))
    else:
        main()
