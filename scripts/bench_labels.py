"""Classifier options on real offline data: multi-label tweets and an imbalanced sentiment set.

- Multi-label: which entity types does a WNUT-16 tweet mention? The labels come from the tweet's NER tags (a
  tweet without entities has none); all-MiniLM-L6-v2 fine-tuned with `data.problem_type: multi_label` and
  `data.tune_thresholds`, scored on the test split at the thresholds tuned on validation and at a flat 0.5.
- Imbalance: Rotten Tomatoes training reviews with 1 positive kept for every 10 negatives, scored on the
  balanced test split: plain training against `data.sampler: balanced` and `training.class_weights: balanced`.

Writes benchmarks/bench_labels.json and .md. Usage: HF_HUB_OFFLINE=1 python scripts/bench_labels.py [--part P]
(`make assets-text` places the data and the checkpoint first); `--part multi_label` or `imbalance` reruns one
part and keeps the other's last results.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import f1_score

from pipelines import Recipe
from pipelines.serving.predictor import Predictor

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "benchmarks"
CHECKPOINT = "sentence-transformers/all-MiniLM-L6-v2"
KEPT_POSITIVES = 0.1  # of the positive training reviews: a 10:1 imbalance


def tweets(path: Path) -> list[dict[str, Any]]:
    """A CoNLL file (token TAB tag) as tweets: their text and the entity types their tags name."""
    rows, words, types = [], [], set()
    for line in [*path.read_text(encoding="utf-8").splitlines(), ""]:
        if line.strip():
            token, tag = line.split("\t")
            words.append(token)
            if tag != "O":
                types.add(tag[2:])
        elif words:
            rows.append({"text": " ".join(words), "label": sorted(types)})
            words, types = [], set()
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def run(values: dict[str, Any], keys: tuple[str, ...]) -> dict[str, float]:
    results = Recipe.from_dict(values).run()
    return {key: results[key] for key in keys}


def multi_label(scratch: Path) -> dict[str, Any]:
    files, label_counts = {}, {}
    for split in ("train", "validation", "test"):
        rows = tweets(ROOT / "data" / "wnut16" / f"{split}.conll")
        files[split] = write_jsonl(scratch / f"wnut16-types-{split}.jsonl", rows)
        label_counts[split] = len(rows)
    types = sorted({kind for row in tweets(ROOT / "data" / "wnut16" / "train.conll") for kind in row["label"]})
    values = {
        "name": "wnut16-entity-types",
        "task": "text-classification",
        "seed": 42,
        "output_dir": str(scratch / "wnut16-types"),
        "model": {"checkpoint": CHECKPOINT},
        "data": {
            "files": files,
            "problem_type": "multi_label",
            "labels": types,
            "max_length": 64,
            "tune_thresholds": True,
        },
        "training": {
            "num_train_epochs": 5,
            "learning_rate": 1.5e-4,
            "warmup_steps": 0.1,
            "per_device_train_batch_size": 16,
            "per_device_eval_batch_size": 64,
            "eval_strategy": "no",
            "save_strategy": "no",
            "logging_steps": 50,
        },
    }
    keys = ("test_f1_micro", "test_f1_macro", "test_f1_samples", "test_subset_accuracy")
    tuned = run(values, keys)
    # The same model's test predictions decided at a flat 0.5 instead, what the run scores without tuning.
    test = [json.loads(line) for line in Path(files["test"]).read_text(encoding="utf-8").splitlines()]
    predictions = Predictor(values["output_dir"]).predict([row["text"] for row in test], batch_size=64)
    reference = np.array([[kind in row["label"] for kind in types] for row in test])
    at_half = np.array([[p["scores"][kind] >= 0.5 for kind in types] for p in predictions])
    flat = {
        "test_f1_micro": float(f1_score(reference, at_half, average="micro", zero_division=0)),
        "test_f1_macro": float(f1_score(reference, at_half, average="macro", zero_division=0)),
    }
    return {"tweets": label_counts, "entity_types": types, "tuned_thresholds": tuned, "threshold_0.5": flat}


def imbalanced(scratch: Path) -> dict[str, Any]:
    rng = random.Random(42)
    with (ROOT / "data" / "rotten_tomatoes" / "train.csv").open(newline="", encoding="utf-8") as handle:
        reviews = list(csv.DictReader(handle))
    kept = [row for row in reviews if row["label"] == "negative" or rng.random() < KEPT_POSITIVES]
    train = scratch / "rt-imbalanced.csv"
    with train.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows({"text": row["text"], "label": row["label"]} for row in kept)
    counts = {label: sum(row["label"] == label for row in kept) for label in ("negative", "positive")}
    rt = ROOT / "data" / "rotten_tomatoes"
    results: dict[str, Any] = {"train_counts": counts}
    for name, extra in (
        ("plain", {}),
        ("sampler_balanced", {"data": {"sampler": "balanced"}}),
        ("class_weights_balanced", {"training": {"class_weights": "balanced"}}),
    ):
        values = {
            "name": f"rt-imbalanced-{name}",
            "task": "text-classification",
            "seed": 42,
            "output_dir": str(scratch / f"rt-{name}"),
            "model": {"checkpoint": CHECKPOINT},
            "data": {
                "files": {"train": str(train), "validation": str(rt / "validation.csv"), "test": str(rt / "test.csv")},
                "labels": ["negative", "positive"],
                "max_length": 64,
                **extra.get("data", {}),
            },
            "training": {
                "num_train_epochs": 2,
                "learning_rate": 1e-4,
                "warmup_steps": 0.1,
                "per_device_train_batch_size": 32,
                "per_device_eval_batch_size": 128,
                "eval_strategy": "no",
                "save_strategy": "no",
                "logging_steps": 50,
                **extra.get("training", {}),
            },
        }
        results[name] = run(values, ("test_f1_macro", "test_accuracy", "test_recall_positive"))
    return results


def write(report: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench_labels.json").write_text(json.dumps(report, indent=2) + "\n")
    multi, imb = report["multi_label"], report["imbalance"]
    tuned, flat = multi["tuned_thresholds"], multi["threshold_0.5"]
    lines = [
        "# Classifier options on real offline data (scripts/bench_labels.py)",
        "",
        f"**Multi-label**: which of {len(multi['entity_types'])} entity types a WNUT-16 tweet mentions "
        f"({multi['tweets']['train']} training tweets), all-MiniLM-L6-v2, 5 epochs. With each type's threshold "
        f"tuned on validation (`data.tune_thresholds`): test micro-F1 {tuned['test_f1_micro']:.3f}, macro-F1 "
        f"{tuned['test_f1_macro']:.3f}, samples-F1 {tuned['test_f1_samples']:.3f}, subset accuracy "
        f"{tuned['test_subset_accuracy']:.3f}; the same model at a flat 0.5: micro-F1 {flat['test_f1_micro']:.3f}, "
        f"macro-F1 {flat['test_f1_macro']:.3f}.",
        "",
        f"**Imbalance**: Rotten Tomatoes training reviews, {imb['train_counts']['negative']} negative and "
        f"{imb['train_counts']['positive']} positive; balanced test split; 2 epochs.",
        "",
        "| training | test macro-F1 | test accuracy | test recall (positive) |",
        "|---|---|---|---|",
    ]
    for name in ("plain", "sampler_balanced", "class_weights_balanced"):
        row = imb[name]
        lines.append(
            f"| {name} | {row['test_f1_macro']:.3f} | {row['test_accuracy']:.3f} | {row['test_recall_positive']:.3f} |"
        )
    (out_dir / "bench_labels.md").write_text("\n".join(lines) + "\n")


PARTS = {"multi_label": multi_label, "imbalance": imbalanced}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=[*PARTS, "all"], default="all")
    args = parser.parse_args()
    previous = OUT_DIR / "bench_labels.json"
    report = json.loads(previous.read_text()) if args.part != "all" and previous.is_file() else {}
    with tempfile.TemporaryDirectory() as folder:
        for name, part in PARTS.items():
            if args.part in (name, "all"):
                report[name] = part(Path(folder))
    missing = [name for name in PARTS if name not in report]
    if missing:
        raise SystemExit(f"no results for {missing} in {previous}: run with --part all")
    write(report, OUT_DIR)
    print((OUT_DIR / "bench_labels.md").read_text())


if __name__ == "__main__":
    main()
