"""Layer groups of BERT and DistilBERT (built from configs, no training), under PEFT too; the metric module."""

from __future__ import annotations

import random

import peft
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
)

from pipelines import HubtuneError
from pipelines.adapt import adapt_model, layer_groups, parameter_table
from pipelines.config import build_adapt_config
from pipelines.metrics import load_metric


def tiny_bert_model(layers: int = 3) -> BertForSequenceClassification:
    torch.manual_seed(0)
    return BertForSequenceClassification(
        BertConfig(
            vocab_size=40,
            hidden_size=16,
            num_hidden_layers=layers,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=32,
            num_labels=3,
        )
    )


def tiny_distilbert_model(layers: int = 4) -> DistilBertForSequenceClassification:
    torch.manual_seed(0)
    return DistilBertForSequenceClassification(
        DistilBertConfig(
            vocab_size=40, dim=16, n_layers=layers, n_heads=2, hidden_dim=32, max_position_embeddings=32, num_labels=3
        )
    )


def test_bert_groups():
    model = tiny_bert_model(layers=3)
    groups = layer_groups(model)
    assert groups.names == ["embeddings", "block.0", "block.1", "block.2", "neck", "head"]
    assert groups.num_blocks == 3
    assert groups.head_modules == ["classifier"]
    names = [name for name, _ in model.named_parameters()]
    assert set(groups.by_parameter) == set(names)
    for name in names:
        group = groups.by_parameter[name]
        if name.startswith("bert.embeddings."):
            assert group == "embeddings", name
        elif name.startswith("bert.encoder.layer."):
            assert group == f"block.{name.split('.')[3]}", name
        elif name.startswith("bert.pooler."):
            assert group == "neck", name
        else:
            assert name.startswith("classifier.") and group == "head", name
    assert groups.group_of("bert.encoder.layer.2.output.dense.weight") == "block.2"
    assert groups.group_of("bert.pooler.dense.bias") == "neck"


def test_distilbert_groups():
    model = tiny_distilbert_model(layers=4)
    groups = layer_groups(model)
    # No pooler in DistilBERT: no neck; its two-layer head is outside the base model.
    assert groups.names == ["embeddings", "block.0", "block.1", "block.2", "block.3", "head"]
    assert groups.num_blocks == 4
    assert groups.head_modules == ["pre_classifier", "classifier"]
    for name, _ in model.named_parameters():
        group = groups.by_parameter[name]
        if name.startswith("distilbert.embeddings."):
            assert group == "embeddings", name
        elif name.startswith("distilbert.transformer.layer."):
            assert group == f"block.{name.split('.')[3]}", name
        else:
            assert name.split(".")[0] in ("pre_classifier", "classifier") and group == "head", name


def test_base_model_without_head():
    from transformers import BertModel

    model = BertModel(
        BertConfig(
            vocab_size=40,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=32,
        )
    )
    groups = layer_groups(model)
    assert groups.names == ["embeddings", "block.0", "block.1", "neck"]
    assert groups.head_modules == []


def test_model_without_blocks_is_an_error():
    with pytest.raises(HubtuneError, match="cannot find the transformer blocks of Linear"):
        layer_groups(torch.nn.Linear(3, 3))


@pytest.mark.parametrize(
    ("build", "targets", "head"),
    [
        (tiny_bert_model, ["query", "value"], ["classifier"]),
        (tiny_distilbert_model, ["q_lin", "v_lin"], ["pre_classifier", "classifier"]),
    ],
)
def test_group_of_under_peft(build, targets, head):
    model = build()
    groups = layer_groups(model)
    wrapped = peft.get_peft_model(
        model,
        peft.LoraConfig(
            r=2, lora_alpha=4, target_modules=targets, modules_to_save=list(groups.head_modules), task_type="SEQ_CLS"
        ),
    )
    seen = {"lora": 0, "saved": 0, "base_layer": 0}
    for name, _ in wrapped.named_parameters():
        assert name.startswith("base_model.model.")
        group = groups.group_of(name)
        if "lora_A" in name or "lora_B" in name:
            seen["lora"] += 1
            block = name.split(".layer.")[1].split(".")[0]
            assert group == f"block.{block}", name
        elif ".modules_to_save." in name or ".original_module." in name:
            seen["saved"] += 1
            assert name.removeprefix("base_model.model.").split(".")[0] in head
            assert group == "head", name
        elif ".base_layer." in name:
            seen["base_layer"] += 1
            assert group.startswith("block."), name
        else:
            # Untouched parameters keep the group of their unwrapped name.
            assert group == groups.by_parameter[name.removeprefix("base_model.model.")], name
    assert seen["lora"] == 2 * 2 * groups.num_blocks  # A and B, two projections, every block
    assert seen["saved"] == 2 * 2 * len(head)  # weight and bias, trained copy and original
    assert seen["base_layer"] == 2 * 2 * groups.num_blocks


def test_lora_parameter_table_has_no_unassigned_rows():
    model = tiny_bert_model()
    head_size = sum(p.numel() for p in model.classifier.parameters())
    wrapped, groups = adapt_model(model, build_adapt_config({"strategy": "peft", "peft": {"r": 2}}), "SEQ_CLS")
    rows = parameter_table(wrapped, groups)
    assert [row["group"] for row in rows] == groups.names  # no "adapter" catch-all
    assert sum(row["total"] for row in rows) == sum(p.numel() for p in wrapped.parameters())
    assert sum(row["trainable"] for row in rows) == sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    table = {row["group"]: row for row in rows}
    assert table["embeddings"]["trainable"] == table["neck"]["trainable"] == 0
    assert head_size == 16 * 3 + 3
    assert table["head"]["trainable"] == head_size  # the trained copy; the original stays frozen
    assert table["head"]["total"] == 2 * head_size
    for block in ("block.0", "block.1", "block.2"):
        assert table[block]["trainable"] == 2 * (2 * 16 + 16 * 2)  # query and value: A (2x16) and B (16x2)


@pytest.mark.parametrize(
    ("adapt", "trainable"),
    [
        ({"strategy": "full"}, {"embeddings", "block.0", "block.1", "block.2", "neck", "head"}),
        ({"strategy": "freeze_backbone"}, {"head"}),
        ({"strategy": "train_last_n", "n": 2}, {"block.1", "block.2", "neck", "head"}),
        ({"strategy": "lp_ft", "n": 1, "lp_ft": {"then": "train_last_n"}}, {"block.2", "neck", "head"}),
    ],
)
def test_freezing_strategies(adapt, trainable):
    model, groups = adapt_model(tiny_bert_model(layers=3), build_adapt_config(adapt), None)
    for name, parameter in model.named_parameters():
        assert parameter.requires_grad == (groups.by_parameter[name] in trainable), name


# --- the metric module -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def classification_metric():
    return load_metric("classification")


def test_metric_equals_sklearn(classification_metric):
    rng = random.Random(3)
    references = [rng.randrange(3) for _ in range(200)]
    # Mostly right, some noise, and class 2 never predicted (its precision is 0 by convention).
    predictions = [r if r != 2 and rng.random() < 0.8 else rng.randrange(2) for r in references]
    names = ["neg", "neu", "pos"]
    result = classification_metric.compute(predictions=predictions, references=references, label_names=names)

    assert result["accuracy"] == pytest.approx(accuracy_score(references, predictions))
    assert result["f1_macro"] == pytest.approx(f1_score(references, predictions, average="macro", zero_division=0))
    assert result["precision_macro"] == pytest.approx(
        precision_score(references, predictions, average="macro", zero_division=0)
    )
    assert result["recall_macro"] == pytest.approx(recall_score(references, predictions, average="macro"))
    per_class_f1 = f1_score(references, predictions, average=None, labels=[0, 1, 2], zero_division=0)
    for i, name in enumerate(names):
        assert result[f"f1_{name}"] == pytest.approx(per_class_f1[i])
    assert result["precision_pos"] == 0.0
    assert {key for key in result if key.startswith(("precision_", "recall_", "f1_"))} == {
        f"{kind}_{suffix}" for kind in ("precision", "recall", "f1") for suffix in ("macro", *names)
    }
    assert 0.3 < result["accuracy"] < 1.0


def test_metric_scores_every_named_class_even_unseen(classification_metric):
    # Label 2 appears neither in references nor predictions: still scored (as 0), and the macro mean counts it.
    result = classification_metric.compute(
        predictions=[0, 1, 1, 0], references=[0, 1, 0, 0], label_names=["a", "b", "c"]
    )
    assert result["accuracy"] == 0.75
    assert result["f1_c"] == 0.0
    assert result["f1_macro"] == pytest.approx(
        f1_score([0, 1, 0, 0], [0, 1, 1, 0], labels=[0, 1, 2], average="macro", zero_division=0)
    )


def test_metric_without_label_names_uses_ids(classification_metric):
    result = classification_metric.compute(predictions=[0, 2, 2, 1], references=[0, 2, 1, 1])
    assert {"f1_0", "f1_1", "f1_2"} <= set(result)
    assert result["accuracy"] == 0.75
    assert result["f1_macro"] == pytest.approx(f1_score([0, 2, 1, 1], [0, 2, 2, 1], average="macro"))
