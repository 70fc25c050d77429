"""A task written outside the package: a question detector made of the public building blocks, registered at run
time, then trained, served, evaluated and exported like a built-in task, with no file of pipelines/ changed for it.

The data follow an easy rule (a text is a question when it holds the word "what"), so a trained model must beat
chance by far; predict's labels must be the argmax of the saved model's own logits; evaluate must repeat the run's
test score.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

from pipelines import HubtuneError, Recipe
from pipelines.commands.cli import main
from pipelines.config import option
from pipelines.data.splits import Splits
from pipelines.registry import TASKS
from pipelines.serving.export import export_run
from pipelines.serving.predictor import Predictor
from pipelines.tasks import PreparedData, Task, register_task
from pipelines.tasks.classifier import ClassifierMixin
from pipelines.tasks.classifier_serving import ClassifierServing
from pipelines.tasks.data_sections import LabelledDataConfig
from pipelines.tasks.serving_base import Batch

# --- The task, as a user writes it (the line count in the docs is of these three classes) ----------------------


@dataclass
class QuestionData(LabelledDataConfig):
    text_column: str = option("text", "the column of texts")
    max_length: int = option(16, "tokens per text; longer texts are cut")


class QuestionServing(ClassifierServing["QuestionDetection"]):
    def preprocess(self, inputs: list[str]) -> Batch:
        limit = self.task.data.max_length
        return Batch(
            inputs, self.processor(inputs, truncation=True, max_length=limit, padding=True, return_tensors="pt")
        )


class QuestionDetection(ClassifierMixin, Task[QuestionData]):
    name = "question-detection"
    auto_model = AutoModelForSequenceClassification
    head_suffix = "ForSequenceClassification"
    data_config = QuestionData
    serving = QuestionServing

    def load_processor(self, source: str | None = None) -> Any:
        return AutoTokenizer.from_pretrained(source or self.config.model.checkpoint)

    def prepare(self, splits: Splits, processor: Any, label_names: list[str] | None = None) -> PreparedData:
        names, coding = self.resolve_names(splits, label_names)
        prepared = PreparedData({}, processor, names)
        for role, dataset in splits.datasets.items():
            labels = self.split_labels(splits, role, dataset, names, coding)
            if role == "train":
                self.learn_from_train(prepared, labels, splits.sources[role])
            tokens = processor(list(dataset[self.data.text_column]), truncation=True, max_length=self.data.max_length)
            prepared.datasets[role] = Dataset.from_dict({**tokens, "labels": labels})
        return prepared

    def data_collator(self, processor: Any) -> Any:
        return DataCollatorWithPadding(processor)


# --- The tests ------------------------------------------------------------------------------------------------

# Words of the tiny BERT's vocabulary (tests/conftest.py); "what" marks a question.
WORDS = [
    "the",
    "film",
    "was",
    "plot",
    "acting",
    "story",
    "really",
    "quite",
    "a",
    "and",
    "movie",
    "cast",
    "good",
    "dull",
]


def sentence(rng: random.Random, question: bool) -> str:
    words = rng.sample(WORDS, 5)
    # Both kinds have six words: the model must find the word, not count them.
    words.insert(rng.randrange(6), "what" if question else rng.choice(WORDS))
    return " ".join(words)


def write_split(path: Path, n: int, seed: int) -> str:
    rng = random.Random(seed)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for i in range(n):
            writer.writerow([sentence(rng, i % 2 == 1), "question" if i % 2 else "statement"])
    return str(path)


@pytest.fixture(scope="module")
def question_run(tiny_bert, tmp_path_factory):
    """The task registered for this module's tests, and one run of it: (run folder, results, data files)."""
    register_task(QuestionDetection)
    try:
        root = tmp_path_factory.mktemp("questions")
        files = {
            role: write_split(root / f"{role}.csv", n, seed)
            for role, n, seed in (("train", 200, 0), ("validation", 40, 1), ("test", 80, 2))
        }
        values = {
            "name": "questions",
            "task": "question-detection",
            "output_dir": str(root / "run"),
            "model": {"checkpoint": str(tiny_bert)},
            "data": {"files": files},
            "training": {
                "num_train_epochs": 4,
                "learning_rate": 5e-3,
                "per_device_train_batch_size": 16,
                "save_strategy": "no",
                "disable_tqdm": True,
            },
        }
        results = Recipe.from_dict(values).run()
        yield root / "run", results, files
    finally:
        TASKS.unregister(QuestionDetection.name)


def test_the_registered_task_trains_to_beat_chance_on_the_rule(question_run):
    run_dir, results, _ = question_run
    assert TASKS.get("question-detection") is QuestionDetection
    assert json.loads((run_dir / "config.json").read_text())["id2label"] == {"0": "question", "1": "statement"}
    # Half the test texts are questions: chance is 0.5.
    assert results["test_accuracy"] >= 0.9
    assert {"test_f1_question", "test_f1_statement"} <= set(results)


def test_predict_gives_the_argmax_of_the_saved_model_logits(question_run):
    run_dir, _, _ = question_run
    rng = random.Random(7)
    texts = [sentence(rng, question=i % 3 == 0) for i in range(12)]
    predictions = Predictor(run_dir).predict(texts, batch_size=5)

    model = AutoModelForSequenceClassification.from_pretrained(run_dir).eval()
    tokens = AutoTokenizer.from_pretrained(run_dir)(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        probabilities = model(**tokens).logits.softmax(-1)
    assert [p["input"] for p in predictions] == texts
    assert [p["label"] for p in predictions] == [model.config.id2label[int(i)] for i in probabilities.argmax(-1)]
    for prediction, row in zip(predictions, probabilities):
        assert prediction["scores"] == pytest.approx({"question": float(row[0]), "statement": float(row[1])}, abs=1e-5)
    # The rule itself, on texts the model never saw.
    right = sum(p["label"] == ("question" if "what" in p["input"].split() else "statement") for p in predictions)
    assert right >= 10


def test_evaluate_repeats_the_run_test_score(question_run):
    run_dir, results, files = question_run
    predictor = Predictor(run_dir)
    assert predictor.evaluate("test")["test_accuracy"] == pytest.approx(results["test_accuracy"], abs=1e-6)
    assert predictor.evaluate(data_file=files["test"])["data_accuracy"] == pytest.approx(
        results["test_accuracy"], abs=1e-6
    )


def test_the_cli_serves_the_task_and_its_capabilities_follow_what_it_implements(question_run, tmp_path, capsys):
    run_dir, _, files = question_run
    output = tmp_path / "predictions.jsonl"
    assert main(["predict", str(run_dir), "--data", files["test"], "--output", str(output), "--batch-size", "7"]) == 0
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    texts = [row["text"] for row in csv.DictReader(open(files["test"], newline=""))]
    assert [row["row"] for row in rows] == list(range(1, 81)) and [row["input"] for row in rows] == texts
    assert [row["label"] for row in rows] == [p["label"] for p in Predictor(run_dir).predict(texts)]
    capsys.readouterr()
    # A label head's logits in one forward pass: it exports to ONNX, as the built-in classifiers do; it draws nothing.
    assert QuestionServing.implements("onnx_axes") and not QuestionServing.implements("draw")
    check = export_run(run_dir, tmp_path / "onnx", merge=False, export_format="onnx")
    assert check["max_abs_logit_difference"] < 1e-4
    assert main(["predict", str(run_dir), texts[0], "--draw", str(tmp_path / "drawn")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [
        "hubtune: error: --draw: a question-detection run predicts nothing to draw "
        "(object-detection, semantic-segmentation runs do)"
    ]
    assert not (tmp_path / "drawn").exists()


def test_a_second_task_of_the_same_name_is_refused(question_run):
    class Impostor(QuestionDetection):
        pass

    with pytest.raises(HubtuneError, match="task 'question-detection' is already registered"):
        register_task(Impostor)
