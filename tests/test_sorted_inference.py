"""Inference batched by length: evaluation, prediction after training, `predict` and `predict --data` read the
examples sorted by length, and give the same records and metrics, in the data's order, as the unsorted path."""

from __future__ import annotations

import csv
import json
import random

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
    TrainingArguments,
)
from transformers.trainer_utils import PredictionOutput

from pipelines.serving.predictor import Predictor
from pipelines.training.length_order import ShuffledLengthGroupedSampler, length_order, restore_order
from pipelines.training.trainer import HubtuneTrainer

WORDS = "the film was good bad long short fine awful great plot actor scene music end".split()


def texts(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(1, 40))) for _ in range(count)]


def test_length_order_sorts_stably_and_skips_what_has_one_length():
    rows = Dataset.from_dict({"input_ids": [[1, 2, 3], [1], [4, 5], [6]], "label": [0, 1, 0, 1]})
    assert length_order(rows, ["input_ids"]) == [1, 3, 2, 0]
    assert length_order(rows.select([2, 0]), ["input_ids"]) == [0, 1]  # through an indices mapping
    assert length_order(Dataset.from_dict({"input_ids": [[1, 2], [3, 4]]}), ["input_ids"]) is None
    assert length_order(rows, ["text"]) is None  # no such column
    assert length_order(rows, ["length", "input_ids"]) == [1, 3, 2, 0]  # the first column it has
    assert length_order(Dataset.from_dict({"length": [5, 2, 9]}), ["length"]) == [1, 0, 2]  # stored lengths


def test_restore_order_undoes_the_sort_in_every_output():
    order = [2, 0, 3, 1]
    sorted_rows = np.array([20, 0, 30, 10])
    output = PredictionOutput(
        predictions=(sorted_rows, {"boxes": sorted_rows * 2}), label_ids=sorted_rows + 1, metrics={"x": 1.0}
    )
    restored = restore_order(output, order)
    assert restored.predictions[0].tolist() == [0, 10, 20, 30]
    assert restored.predictions[1]["boxes"].tolist() == [0, 20, 40, 60]
    assert restored.label_ids.tolist() == [1, 11, 21, 31]
    assert restored.metrics == {"x": 1.0}


def _trainer(model, tokenizer, collator, tmp_path, sort: bool, batch_size: int, sampling: str = "random"):
    args = TrainingArguments(
        output_dir=str(tmp_path / str(sort)),
        per_device_eval_batch_size=batch_size,
        report_to=[],
        train_sampling_strategy=sampling,
    )
    return HubtuneTrainer(
        model=model, args=args, processing_class=tokenizer, data_collator=collator, sort_by_length=sort
    )


def _accuracy(prediction) -> dict[str, float]:
    logits, labels = prediction
    return {"accuracy": float((logits.argmax(-1) == labels).mean())}


@pytest.mark.parametrize("sampling", ["random", "group_by_length"])
def test_trainer_predictions_sorted_by_length_equal_the_unsorted_ones(tiny_bert, tmp_path, sampling):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2).eval()
    rows = Dataset.from_dict({"text": texts(37), "label": [i % 2 for i in range(37)]})
    encoded = rows.map(lambda batch: tokenizer(batch["text"]), batched=True, remove_columns=["text"])
    outputs = {}
    for sort in (False, True):
        # group_by_length must not reorder evaluation either.
        trainer = _trainer(model, tokenizer, DataCollatorWithPadding(tokenizer), tmp_path, sort, 4, sampling)
        trainer.compute_metrics = _accuracy
        outputs[sort] = (trainer.predict(encoded), trainer.evaluate(encoded))
    (plain, plain_eval), (by_length, by_length_eval) = outputs[False], outputs[True]
    assert by_length.label_ids.tolist() == rows["label"] == plain.label_ids.tolist()
    np.testing.assert_allclose(by_length.predictions, plain.predictions, atol=1e-5)
    # A sequence classifier's loss is a mean over examples: any batching gives the same.
    for key in ("test_accuracy", "test_loss"):
        assert by_length.metrics[key] == pytest.approx(plain.metrics[key], abs=1e-6)
    for key in ("eval_accuracy", "eval_loss"):
        assert by_length_eval[key] == pytest.approx(plain_eval[key], abs=1e-6)
    assert by_length.metrics["test_accuracy"] == by_length_eval["eval_accuracy"]


def test_token_predictions_sorted_by_length_equal_the_unsorted_ones(tiny_bert, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    model = AutoModelForTokenClassification.from_pretrained(tiny_bert, num_labels=2).eval()
    words = [text.split() for text in texts(23, seed=1)]
    encoded = Dataset.from_dict({"words": words}).map(
        lambda row: {
            **tokenizer(row["words"], is_split_into_words=True),
            "labels": [-100]
            + [i % 2 for i in range(len(tokenizer(row["words"], is_split_into_words=True)["input_ids"]) - 2)]
            + [-100],
        },
        remove_columns=["words"],
    )
    predictions = {}
    for sort in (False, True):
        collator = DataCollatorForTokenClassification(tokenizer)
        predictions[sort] = _trainer(model, tokenizer, collator, tmp_path, sort, 5).predict(encoded)
    plain, by_length = predictions[False], predictions[True]
    assert by_length.label_ids.shape == plain.label_ids.shape
    # Positions past a row's own length are padding, whose value depends on the batch; the row's tokens do not.
    scored = plain.label_ids != -100
    assert (by_length.label_ids[scored] == plain.label_ids[scored]).all()
    assert (by_length.label_ids == -100).sum() == (plain.label_ids == -100).sum()
    np.testing.assert_allclose(by_length.predictions[scored], plain.predictions[scored], atol=1e-5)


def test_predict_and_predict_data_sort_by_length_and_keep_input_order(trained_run, tmp_path):
    predictor = Predictor(trained_run("full").run_dir)
    inputs = texts(50, seed=2)
    batched = predictor.predict(inputs, batch_size=8)
    alone = [predictor.predict([text], batch_size=1)[0] for text in inputs]  # no padding at all
    assert [record["input"] for record in batched] == inputs
    assert [record["label"] for record in batched] == [record["label"] for record in alone]
    np.testing.assert_allclose([r["score"] for r in batched], [r["score"] for r in alone], atol=1e-5)

    data = tmp_path / "reviews.csv"
    with data.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text"])
        writer.writerows([text] for text in inputs)
    output = tmp_path / "predictions.jsonl"
    assert predictor.predict_data(data, output, batch_size=8) == len(inputs)
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [record["row"] for record in records] == list(range(1, len(inputs) + 1))
    assert [{k: v for k, v in record.items() if k != "row"} for record in records] == batched


def test_length_grouped_training_batches_pad_little_and_come_in_random_order():
    rng = random.Random(0)
    lengths = [rng.randint(5, 120) for _ in range(2000)]
    torch.manual_seed(0)
    indices = list(ShuffledLengthGroupedSampler(32, lengths=lengths, step=8))
    assert sorted(indices) == list(range(2000))
    batches = [indices[start : start + 32] for start in range(0, 2000, 32)]
    assert max(lengths) in [lengths[i] for i in batches[0]]  # the widest batch first: out of memory at once

    def padded(batch: list[int]) -> int:
        return len(batch) * -(-max(lengths[i] for i in batch) // 8) * 8

    drawn = torch.randperm(2000, generator=torch.Generator().manual_seed(0)).tolist()
    random_batches = [drawn[start : start + 32] for start in range(0, 2000, 32)]
    assert sum(map(padded, batches)) < 0.7 * sum(map(padded, random_batches))
    # Not upstream's sweeps from long to short: the widths of consecutive batches go up about as often as down.
    widths = [max(lengths[i] for i in batch) for batch in batches[1:]]
    ups = sum(later > earlier for earlier, later in zip(widths, widths[1:]))
    assert 0.3 < ups / (len(widths) - 1) < 0.7
    # Within a padding step the order is random: one width's examples are not sorted by their exact length.
    assert any(lengths[a] < lengths[b] for batch in batches for a, b in zip(batch, batch[1:]))
    torch.manual_seed(0)
    assert list(ShuffledLengthGroupedSampler(32, lengths=lengths, step=8)) == indices  # a resumed run's order
