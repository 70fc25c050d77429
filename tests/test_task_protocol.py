"""The task protocol: a task object holds only its recipe; what it learns from data travels in `PreparedData`."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset
from transformers import EvalPrediction

from pipelines import load_recipe_config
from pipelines.data.splits import Splits
from pipelines.tasks import PreparedData, Task
from pipelines.tasks.text_classification import TextClassification


def _splits(labels: list[str]) -> Splits:
    texts = [f"text number {i}" for i in range(len(labels))]
    return Splits({"train": Dataset.from_dict({"text": texts, "label": labels})}, {"train": "train rows"})


def test_one_task_object_serves_two_datasets_with_their_own_labels(recipe_values):
    recipe_values["data"].pop("labels", None)  # label sets read from each dataset
    task = TextClassification(load_recipe_config(values=recipe_values))
    tokenizer = task.load_processor()
    sentiment = task.prepare(_splits(["negative", "positive", "positive"]), tokenizer)
    topics = task.prepare(_splits(["art", "law", "sport", "law"]), tokenizer)
    assert sentiment.label_names == ["negative", "positive"]
    assert topics.label_names == ["art", "law", "sport"]
    assert sentiment.processor is tokenizer and sentiment["train"]["labels"] == [0, 1, 1]
    # The second prepare changed nothing the first one's later steps read.
    assert task.build_model(sentiment).config.id2label == {0: "negative", 1: "positive"}
    assert task.build_model(topics).config.num_labels == 3
    logits = np.array([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    scores = task.compute_metrics(EvalPrediction(predictions=logits, label_ids=np.array([0, 1, 1])), sentiment)
    assert scores["accuracy"] == pytest.approx(2 / 3)
    assert {"f1_negative", "f1_positive"} <= set(scores) and not any(key.endswith("_law") for key in scores)


def test_data_warnings_travel_with_the_prepared_data(recipe_values):
    recipe_values["data"]["labels"] = ["negative", "neutral", "positive"]
    task = TextClassification(load_recipe_config(values=recipe_values))
    prepared = task.prepare(_splits(["negative", "positive"]), task.load_processor())
    assert len(prepared.warnings) == 1 and "neutral" in prepared.warnings[0]
    assert not hasattr(task, "warnings") and not hasattr(task, "label_names")


def test_a_task_must_implement_the_protocol():
    class Incomplete(Task):
        name = "incomplete"

        def load_processor(self, source=None):
            return None

    with pytest.raises(TypeError, match="abstract methods.*build_model.*compute_metrics"):
        Incomplete(None)  # type: ignore[abstract]
    assert PreparedData({}, None).label_names == []
