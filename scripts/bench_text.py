"""Text classification speed on the offline sentiment recipe, two comparisons.

Default: dynamic padding vs padding every example to 128 tokens, in one process. Same model
(all-MiniLM-L6-v2), data, seed and max_length 128 for both; the only difference is `data.pad_to_max_length`, as
in the transformers text-classification example (`--pad_to_max_length`, on by default there).

`--vs-run-glue`: whole processes. `hubtune train` with its defaults against `scripts/run_glue_baseline.py` (the
transformers example's defaults: plain Trainer, pad to 128, default_data_collator), on the same 2,000 training
reviews, test file, model, learning rate (5e-5, no warm-up, no weight decay), batch sizes and seeds, one
epoch, no evaluation or saving during training. Each seed runs each side in its own process; the script records
whole-process wall time, train and eval samples/s, peak RSS and test accuracy (mean and std over the seeds)
under the `vs_run_glue` key.

Both write benchmarks/bench_text.json (each its own keys) and benchmarks/bench_text.md.

Usage: HF_HUB_OFFLINE=1 python scripts/bench_text.py [--train-samples 1200] [--epochs 2]
       HF_HUB_OFFLINE=1 python scripts/bench_text.py --vs-run-glue [--seeds 42,43,44]
(`make bench` prepares the offline assets and runs both.)
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from pipelines import Recipe
from pipelines.compat import cpu_has_amx_bf16

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "sentiment-minilm-offline.yaml"
OUT_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
BASELINE = Path(__file__).resolve().parent / "run_glue_baseline.py"
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# The P1 setting: both sides train on these, with the recipe's batch sizes (32 train, 128 eval).
VS_RUN_GLUE = {"train_rows": 2000, "max_length": 128, "learning_rate": 5e-5, "epochs": 1}
# hubtune's sides: its defaults, then each with one default changed, so that each gain is measured on its own.
HUBTUNE_SIDES: dict[str, tuple[str, ...]] = {
    "hubtune": (),
    "hubtune_fp32": ("training.bf16=false",),  # the same as the defaults on a CPU without AMX
    "hubtune_group_by_length": ("training.train_sampling_strategy=group_by_length",),
}
SIDE_NAMES = {
    "baseline": "run_glue defaults (pad to 128)",
    "hubtune": "hubtune train",
    "hubtune_fp32": "hubtune train, bf16=false",
    "hubtune_group_by_length": "hubtune train, train_sampling_strategy=group_by_length",
}


def run(pad_to_max_length: bool, args: argparse.Namespace, scratch: Path) -> dict:
    overrides = [
        f"data.pad_to_max_length={str(pad_to_max_length).lower()}",
        "data.max_length=128",
        f"data.max_train_samples={args.train_samples}",
        f"data.max_test_samples={args.test_samples}",
        f"training.num_train_epochs={args.epochs}",
        "training.eval_strategy=no",
        "training.save_strategy=no",
        "training.disable_tqdm=true",
        f"output_dir={scratch / ('padded' if pad_to_max_length else 'dynamic')}",
    ]
    results = Recipe.from_yaml(RECIPE, overrides).run()
    return {
        key: results[key]
        for key in (
            "train_samples_per_second",
            "train_runtime",
            "test_samples_per_second",
            "test_accuracy",
            "test_f1_macro",
            "train_loss",
        )
    }


def timed_process(command: list[str]) -> dict[str, float]:
    """Run `command` to its end: its wall time and peak resident memory (that process's own, from wait4)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.stderr is not None
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{command[:3]} failed ({process.returncode}):\n{stderr.decode()[-3000:]}")
    return {"whole_process_s": time.perf_counter() - started, "peak_rss_mb": usage.ru_maxrss / 1024}


def first_rows(source: Path, target: Path, rows: int) -> Path:
    with source.open(newline="") as handle, target.open("w", newline="") as out:
        reader, writer = csv.reader(handle), csv.writer(out)
        writer.writerow(next(reader))
        for _, row in zip(range(rows), reader):
            writer.writerow(row)
    return target


def hubtune_side(train: Path, seed: int, scratch: Path, side: str) -> dict[str, Any]:
    run_dir = scratch / f"{side}-{seed}"
    command = [
        str(Path(sys.executable).with_name("hubtune")),
        "train",
        str(RECIPE),
        f"data.files.train={train}",
        "data.max_train_samples=null",
        "data.validation_split=null",
        f"data.max_length={VS_RUN_GLUE['max_length']}",
        f"training.num_train_epochs={VS_RUN_GLUE['epochs']}",
        f"training.learning_rate={VS_RUN_GLUE['learning_rate']}",
        "training.warmup_steps=0",
        "training.weight_decay=0",
        "training.eval_strategy=no",
        "training.save_strategy=no",
        f"seed={seed}",
        f"output_dir={run_dir}",
        *HUBTUNE_SIDES[side],
    ]
    measured = timed_process(command)
    results = json.loads((run_dir / "all_results.json").read_text())
    return (
        {key: results[key] for key in ("train_samples_per_second", "test_samples_per_second", "test_accuracy")}
        | {"bf16": results["speed_settings"]["bf16"]}
        | measured
    )


def baseline_side(train: Path, test: Path, seed: int, scratch: Path) -> dict[str, Any]:
    result = scratch / f"baseline-{seed}.json"
    command = [
        sys.executable,
        str(BASELINE),
        f"--model={MODEL}",
        f"--train={train}",
        f"--test={test}",
        f"--seed={seed}",
        f"--max-seq-length={VS_RUN_GLUE['max_length']}",
        f"--learning-rate={VS_RUN_GLUE['learning_rate']}",
        f"--epochs={VS_RUN_GLUE['epochs']}",
        f"--result={result}",
    ]
    measured = timed_process(command)
    return json.loads(result.read_text()) | measured


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("whole_process_s", "train_samples_per_second", "test_samples_per_second", "peak_rss_mb", "test_accuracy")
    return {
        key: {"mean": statistics.mean(r[key] for r in runs), "std": statistics.pstdev(r[key] for r in runs)}
        for key in keys
    } | {"runs": runs}


def vs_run_glue(seeds: list[int]) -> dict[str, Any]:
    data = RECIPE.parents[1] / "data" / "rotten_tomatoes"
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        train = first_rows(data / "train.csv", scratch / "train.csv", VS_RUN_GLUE["train_rows"])
        runs: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDE_NAMES}
        for seed in seeds:  # alternating, so that a slower spell of the machine hits every side
            runs["baseline"].append(baseline_side(train, data / "test.csv", seed, scratch))
            for side in HUBTUNE_SIDES:
                runs[side].append(hubtune_side(train, seed, scratch, side))
            print(f"seed {seed}: " + json.dumps({side: found[-1] for side, found in runs.items()}), flush=True)
    return comparison(seeds, runs)


def comparison(seeds: list[int], runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    sides = {side: summary(found) for side, found in runs.items()}
    ours, theirs = sides["hubtune"], sides["baseline"]

    def speedups(side: dict[str, Any]) -> dict[str, float]:
        return {
            "whole_process_speedup": theirs["whole_process_s"]["mean"] / side["whole_process_s"]["mean"],
            "train_speedup": side["train_samples_per_second"]["mean"] / theirs["train_samples_per_second"]["mean"],
            "eval_speedup": side["test_samples_per_second"]["mean"] / theirs["test_samples_per_second"]["mean"],
        }

    setup = {**VS_RUN_GLUE, "seeds": seeds, "model": MODEL, "train_batch_size": 32, "eval_batch_size": 128}
    return {
        "setup": setup | {"machine": machine(), "hubtune_bf16": all(run["bf16"] for run in runs["hubtune"])},
        **sides,
        **speedups(ours),
        "accuracy_mean": ours["test_accuracy"]["mean"],
        "baseline_accuracy_mean": theirs["test_accuracy"]["mean"],
        **{
            side.removeprefix("hubtune_"): {
                **speedups(sides[side]),
                "accuracy_mean": sides[side]["test_accuracy"]["mean"],
            }
            for side in HUBTUNE_SIDES
            if side != "hubtune"
        },
    }


def machine() -> str:
    """The CPU and what it multiplies bf16 with, which decides hubtune's precision on it."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.machine())
    amx = "with AMX bf16" if cpu_has_amx_bf16() else "without AMX"
    return f"{model}, {os.cpu_count()} cores, {amx}, no GPU" if not torch.cuda.is_available() else model


def vs_run_glue_table(report: dict[str, Any]) -> list[str]:
    lines = [
        "| side | whole process (s) | train samples/s | eval samples/s | peak RSS (MB) | test accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for side, name in SIDE_NAMES.items():
        cells = [
            f"{report[side][key]['mean']:.{digits}f} ± {report[side][key]['std']:.{digits}f}"
            for key, digits in (
                ("whole_process_s", 1),
                ("train_samples_per_second", 1),
                ("test_samples_per_second", 1),
                ("peak_rss_mb", 0),
                ("test_accuracy", 4),
            )
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    fp32, grouped = report["fp32"], report["group_by_length"]
    lines.append(
        f"\nhubtune: whole process {report['whole_process_speedup']:.2f}x, training {report['train_speedup']:.2f}x, "
        f"evaluation {report['eval_speedup']:.2f}x faster (bf16: {report['setup']['hubtune_bf16']}); in fp32 "
        f"{fp32['whole_process_speedup']:.2f}x; with group_by_length {grouped['whole_process_speedup']:.2f}x whole "
        f"process. Seeds {report['setup']['seeds']}; {report['setup']['machine']}."
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-samples", type=int, default=1200)
    parser.add_argument("--test-samples", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--vs-run-glue", action="store_true", help="whole processes against run_glue's defaults")
    parser.add_argument("--seeds", default="42,43,44", help="with --vs-run-glue: the seeds, comma-separated")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.vs_run_glue:
        path = OUT_DIR / "bench_text.json"
        report = json.loads(path.read_text()) if path.exists() else {}
        report["vs_run_glue"] = vs_run_glue([int(seed) for seed in args.seeds.split(",")])
        path.write_text(json.dumps(report, indent=2) + "\n")
        lines = vs_run_glue_table(report["vs_run_glue"])
        (OUT_DIR / "bench_text_vs_run_glue.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return
    with tempfile.TemporaryDirectory() as scratch:
        dynamic = run(False, args, Path(scratch))
        padded = run(True, args, Path(scratch))
    report = {
        "setup": {
            "recipe": RECIPE.name,
            **vars(args),
            "torch_threads": torch.get_num_threads(),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, no GPU"
            if not torch.cuda.is_available()
            else torch.cuda.get_device_name(),
        },
        "dynamic_padding": dynamic,
        "pad_to_128": padded,
        "train_speedup": dynamic["train_samples_per_second"] / padded["train_samples_per_second"],
        "eval_speedup": dynamic["test_samples_per_second"] / padded["test_samples_per_second"],
        "accuracy_difference": dynamic["test_accuracy"] - padded["test_accuracy"],
    }
    OUT_DIR.mkdir(exist_ok=True)
    path = OUT_DIR / "bench_text.json"
    if path.exists() and "vs_run_glue" in json.loads(path.read_text()):
        report["vs_run_glue"] = json.loads(path.read_text())["vs_run_glue"]  # the other comparison's results stay
    path.write_text(json.dumps(report, indent=2) + "\n")
    rows = [("dynamic padding (multiple of 8)", dynamic), ("pad every example to 128", padded)]
    lines = ["| padding | train samples/s | eval samples/s | test accuracy | test F1 macro |", "|---|---|---|---|---|"]
    lines += [
        f"| {name} | {r['train_samples_per_second']:.1f} | {r['test_samples_per_second']:.1f} | "
        f"{r['test_accuracy']:.4f} | {r['test_f1_macro']:.4f} |"
        for name, r in rows
    ]
    lines.append(
        f"\nTrain speed-up {report['train_speedup']:.2f}x, eval speed-up {report['eval_speedup']:.2f}x "
        f"({report['setup']['machine']}; {args.train_samples} train samples x {args.epochs} epochs, "
        f"{args.test_samples} test samples)."
    )
    (OUT_DIR / "bench_text.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
