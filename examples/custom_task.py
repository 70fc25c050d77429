"""A task of your own, registered from a script: classify a text by its first few words only ("headline").

Three classes make the task (as in docs/adding-a-task.md): its `data` section with a key of its own
(`data.max_words`), its serving half (raw texts -> model inputs, for `Predictor`), and the `Task` itself, made of
hubtune's building blocks for label heads. `register_task` makes its name a recipe value; the run then trains,
scores and predicts like a built-in task.

Run it on a real checkpoint, with CSV files of columns `text,label`:

    python examples/custom_task.py --checkpoint sentence-transformers/all-MiniLM-L6-v2 \\
        --train train.csv --validation validation.csv --test test.csv --max-words 8

For `hubtune train/predict/evaluate`, put the classes and the `register_task` call in an importable module and
name it in the recipe's `plugins:` list (docs/recipes.md), or publish it under the `hubtune.tasks` entry points.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

from pipelines import Predictor, Recipe, register_task
from pipelines.config import option
from pipelines.data.splits import Splits
from pipelines.tasks import PreparedData, Task
from pipelines.tasks.classifier import ClassifierMixin
from pipelines.tasks.classifier_serving import ClassifierServing
from pipelines.tasks.data_sections import LabelledDataConfig
from pipelines.tasks.serving_base import Batch


@dataclass
class HeadlineData(LabelledDataConfig):
    text_column: str = option("text", "the column of texts")
    max_words: int = option(8, "the words of each text the model sees, from its start")


def headline(text: str, max_words: int) -> str:
    return " ".join(text.split()[:max_words])


class HeadlineServing(ClassifierServing["HeadlineClassification"]):
    def preprocess(self, inputs: list[str]) -> Batch:
        texts = [headline(text, self.task.data.max_words) for text in inputs]
        return Batch(inputs, self.processor(texts, truncation=True, padding=True, return_tensors="pt"))


@register_task
class HeadlineClassification(ClassifierMixin, Task[HeadlineData]):
    name = "headline-classification"
    auto_model = AutoModelForSequenceClassification
    head_suffix = "ForSequenceClassification"
    data_config = HeadlineData
    serving = HeadlineServing

    def load_processor(self, source: str | None = None) -> Any:
        return AutoTokenizer.from_pretrained(source or self.config.model.checkpoint)

    def prepare(self, splits: Splits, processor: Any, label_names: list[str] | None = None) -> PreparedData:
        names, coding = self.resolve_names(splits, label_names)
        prepared = PreparedData({}, processor, names)
        for role, dataset in splits.datasets.items():
            labels = self.split_labels(splits, role, dataset, names, coding)
            if role == "train":
                self.learn_from_train(prepared, labels, splits.sources[role])
            texts = [headline(text, self.data.max_words) for text in dataset[self.data.text_column]]
            prepared.datasets[role] = Dataset.from_dict({**processor(texts, truncation=True), "labels": labels})
        return prepared

    def data_collator(self, processor: Any) -> Any:
        return DataCollatorWithPadding(processor)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a Hub id or a local checkpoint folder")
    parser.add_argument("--train", required=True)
    parser.add_argument("--validation", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--max-words", type=int, default=8)
    parser.add_argument("--runs", type=Path, default=Path("runs/headline"), help="the run folder")
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    args = parser.parse_args()

    result = Recipe.from_dict(
        {
            "name": "headline",
            "task": HeadlineClassification.name,
            "output_dir": str(args.runs),
            "overwrite": True,
            "model": {"checkpoint": args.checkpoint},
            "data": {
                "files": {"train": args.train, "validation": args.validation, "test": args.test},
                "max_words": args.max_words,
            },
            "training": {"num_train_epochs": args.epochs, "learning_rate": args.learning_rate, "save_strategy": "no"},
        }
    ).run()
    print(f"test accuracy on the first {args.max_words} words: {result['test_accuracy']:.4f}")
    print(f"labels: {result.label_names}; run folder: {result.run_dir}")
    for prediction in Predictor(result.run_dir).predict(["a wonderful film", "dull and far too long"]):
        print(f"{prediction['label']}\t{prediction['score']:.3f}\t{prediction['input']}")


if __name__ == "__main__":
    main()
