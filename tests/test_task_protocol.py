"""The task protocol: a task object holds only its recipe; what it learns from data travels in `PreparedData`."""

from __future__ import annotations

from dataclasses import fields

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


# --- Capabilities are what a task implements -------------------------------------------------------------------


def test_capabilities_follow_what_each_built_in_task_implements():
    from pipelines.tasks import TASKS

    assert TASKS.where(lambda task: task.serving.implements("draw")) == ["object-detection", "semantic-segmentation"]
    assert TASKS.where(lambda task: task.serving.implements("onnx_axes")) == [
        "audio-classification",
        "image-classification",
        "semantic-segmentation",
        "text-classification",
        "token-classification",
    ]
    label_heads = TASKS.where(lambda task: task.checkpoint_label_names is not Task.checkpoint_label_names)
    assert label_heads == [
        "audio-classification",
        "image-classification",
        "semantic-segmentation",
        "text-classification",
        "token-classification",
    ]
    for name, task in TASKS.items():
        # Every serving half reads a column its task's data section names.
        assert task.serving.input_column_key in {f.name for f in fields(task.data_config)}, name


def test_a_serving_half_draws_only_when_it_implements_draw():
    from pipelines.tasks.serving_base import Batch, TaskServing

    class Echo(TaskServing):
        def preprocess(self, inputs):
            return Batch(inputs, {})

        def postprocess(self, batch, outputs):
            return [{"input": text} for text in batch.inputs]

    class Pictured(Echo):
        def draw(self, prediction):
            return {}

    assert not Echo.implements("draw") and Pictured.implements("draw") and not Pictured.implements("onnx_axes")
    with pytest.raises(NotImplementedError, match="Echo draws nothing"):
        Echo(None, None, None).draw({"input": "x"})
    assert Echo(None, None, None).format({"input": "x"}) == '{"input": "x"}'


def test_the_label_head_hook_reads_the_checkpoint_head(recipe_values):
    task = TextClassification(load_recipe_config(values=recipe_values))
    # The tiny BERT was saved as a sentiment classifier with transformers' default label names.
    assert task.checkpoint_label_names() == ["LABEL_0", "LABEL_1"]
