"""One test per function of `pipelines.compat`: each fails when upstream renames the private name it wraps or
changes what hubtune relies on it to mean."""

from __future__ import annotations

import subprocess
import sys

import torch
from datasets import Dataset
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForObjectDetection,
    BertConfig,
    BertForSequenceClassification,
)

from pipelines.compat import (
    attention_implementation,
    auto_class_builds,
    auto_class_model_types,
    dataset_fingerprint,
    set_initialized_flag,
)


def tiny_bert_config() -> BertConfig:
    return BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, num_labels=3
    )


def test_set_initialized_flag_decides_what_the_init_pass_draws():
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_bert_config())
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(0.5)
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        set_initialized_flag(tensor, name != "classifier.weight")
    for module in model.modules():
        set_initialized_flag(module, False)
    model.initialize_weights()
    changed = {name for name, parameter in model.named_parameters() if not torch.all(parameter == 0.5)}
    assert changed == {"classifier.weight"}

    # A module flagged as initialized is skipped whole, its unflagged tensors too.
    with torch.no_grad():
        model.classifier.weight.fill_(0.5)
    set_initialized_flag(model.classifier.weight, False)
    set_initialized_flag(model.classifier, True)
    model.initialize_weights()
    assert torch.all(model.classifier.weight == 0.5)


def test_auto_class_mapping_names_what_it_builds():
    assert auto_class_builds(AutoModelForObjectDetection, AutoConfig.for_model("rt_detr"))
    assert not auto_class_builds(AutoModelForObjectDetection, tiny_bert_config())
    types = auto_class_model_types(AutoModelForObjectDetection)
    assert {"detr", "rt_detr", "deformable_detr"} <= set(types) and "bert" not in types
    assert types == sorted(types)


def test_attention_implementation_follows_loading_and_the_public_setter():
    model = AutoModel.from_config(tiny_bert_config(), attn_implementation="eager")
    assert attention_implementation(model.config) == "eager"
    model.set_attn_implementation("sdpa")
    assert attention_implementation(model.config) == "sdpa"
    assert attention_implementation(object()) is None


def test_dataset_fingerprint_follows_the_data_and_transforms():
    rows = {"text": ["a", "b", "c"], "label": [0, 1, 0]}
    first = dataset_fingerprint(Dataset.from_dict(rows))
    assert first == dataset_fingerprint(Dataset.from_dict(rows))
    assert first != dataset_fingerprint(Dataset.from_dict({**rows, "label": [0, 1, 1]}))
    upper = Dataset.from_dict(rows).map(lambda row: {"text": row["text"].upper()})
    assert dataset_fingerprint(upper) not in (first, "")
    # The feature cache finds a run's features again in a later process only if the fingerprint is the same there.
    script = (
        "from datasets import Dataset; from pipelines.compat import dataset_fingerprint; "
        f"print(dataset_fingerprint(Dataset.from_dict({rows!r})))"
    )
    other_process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert other_process.stdout.strip() == first
