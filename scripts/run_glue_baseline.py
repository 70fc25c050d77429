"""The baseline of `scripts/bench_text.py --vs-run-glue`: text classification as the transformers example
`examples/pytorch/text-classification/run_glue.py` does it with its defaults, in a process of its own.

What it keeps from the example: a plain `Trainer`, every example padded to `max_seq_length` (128) at
tokenisation (`--pad_to_max_length`, on by default there), `default_data_collator`, the label list sorted from
the training file, and `Trainer.predict` on the test file. What differs: accuracy is counted with numpy, since
the example's `evaluate.load("accuracy")` downloads its metric script from the Hub, which this machine cannot
reach. Not part of the library: it is what hubtune is measured against.

Usage: python scripts/run_glue_baseline.py --model M --train F --test F --seed 42 --result out.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
from datasets import load_dataset
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    Trainer,
    TrainingArguments,
    default_data_collator,
    set_seed,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--train", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--train-batch-size", type=int, default=32)
    parser.add_argument("--eval-batch-size", type=int, default=128)
    parser.add_argument("--result", required=True)
    args = parser.parse_args()
    started = time.perf_counter()
    set_seed(args.seed)
    raw = load_dataset("csv", data_files={"train": args.train, "test": args.test})
    label_list = sorted(set(raw["train"]["label"]))
    label_to_id = {label: i for i, label in enumerate(label_list)}
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model,
        num_labels=len(label_list),
        id2label=dict(enumerate(label_list)),
        label2id=label_to_id,
    )

    def preprocess(batch):
        encoded = tokenizer(batch["text"], padding="max_length", max_length=args.max_seq_length, truncation=True)
        encoded["labels"] = [label_to_id[label] for label in batch["label"]]
        return encoded

    encoded = raw.map(preprocess, batched=True, remove_columns=["text", "label"])

    def compute_metrics(prediction):
        return {"accuracy": float((np.argmax(prediction.predictions, axis=1) == prediction.label_ids).mean())}

    with tempfile.TemporaryDirectory() as output_dir:
        training_args = TrainingArguments(
            output_dir=output_dir,
            seed=args.seed,
            learning_rate=args.learning_rate,
            num_train_epochs=args.epochs,
            per_device_train_batch_size=args.train_batch_size,
            per_device_eval_batch_size=args.eval_batch_size,
            eval_strategy="no",
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
        )
        trainer = Trainer(
            model=model,
            args=training_args,
            train_dataset=encoded["train"],
            processing_class=tokenizer,
            data_collator=default_data_collator,
            compute_metrics=compute_metrics,
        )
        train_metrics = trainer.train().metrics
        test_metrics = trainer.predict(encoded["test"], metric_key_prefix="test").metrics
    result = {
        "train_samples_per_second": train_metrics["train_samples_per_second"],
        "test_samples_per_second": test_metrics["test_samples_per_second"],
        "test_accuracy": test_metrics["test_accuracy"],
        "in_process_s": time.perf_counter() - started,
    }
    with open(args.result, "w") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main()
