"""Speed defaults: nothing changes on CPU, a (faked) CUDA device gets bf16 or fp16, TF32 and workers (random
training batches on both: length grouping is opt-in), the recipe's own keys win, and all_results.json records
what a run trained with."""

from __future__ import annotations

import json

import pytest
import torch

import pipelines.training.speed
from pipelines.config import load_recipe_config
from pipelines.errors import HubtuneError
from pipelines.runs.folder import RESULTS_FILE
from pipelines.training.trainer import training_arguments, training_values

SPEED_KEYS = {"bf16", "fp16", "tf32", "train_sampling_strategy", "dataloader_num_workers"}


@pytest.fixture
def fake_cuda(monkeypatch):
    """A CUDA device as far as the resolution can tell (no CUDA tensor is built); `fake_cuda(bf16=False)`: an
    older GPU without native bf16."""

    def fake(bf16: bool = True, tf32: bool = True) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
        monkeypatch.setattr(pipelines.training.speed, "is_torch_tf32_available", lambda: tf32)

    return fake


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what a machine without CUDA gets")
def test_cpu_gets_nothing(recipe_values):
    config = load_recipe_config(values=recipe_values)
    assert not SPEED_KEYS & training_values(config, True).keys()
    for switch in ("training.speed_defaults=false", "training.gpu_defaults=false"):  # the key and its former name
        off = load_recipe_config(values=recipe_values, overrides=[switch])
        assert training_values(config, True) == training_values(off, True)
    # The fused AdamW is already transformers 5's default optimizer (torch >= 2.8): nothing to add for it.
    assert training_arguments(config, recipe_values["output_dir"], True).optim == "adamw_torch_fused"


def test_speed_switch_and_its_former_name_must_agree(recipe_values):
    with pytest.raises(HubtuneError, match="'training.speed_defaults' and 'training.gpu_defaults' .* disagree"):
        load_recipe_config(
            values=recipe_values, overrides=["training.speed_defaults=true", "training.gpu_defaults=false"]
        )


def test_cuda_with_bf16_gets_bf16_tf32_and_workers_but_random_batches(recipe_values, fake_cuda):
    fake_cuda()
    values = training_values(load_recipe_config(values=recipe_values), True)
    assert values["bf16"] is True and values["fp16"] is False
    assert values["tf32"] is True
    assert "train_sampling_strategy" not in values  # length grouping cost accuracy (docs/benchmarks.md)
    assert values["dataloader_num_workers"] >= 0


def test_gpu_without_bf16_gets_fp16(recipe_values, fake_cuda):
    fake_cuda(bf16=False, tf32=False)
    values = training_values(load_recipe_config(values=recipe_values), True)
    assert values["fp16"] is True and values["bf16"] is False
    assert values["tf32"] is False


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("training.bf16=false", {"bf16": False, "fp16": False}),  # fp32: neither precision is added
        ("training.fp16=true", {"bf16": False, "fp16": True}),
        ("training.tf32=false", {"tf32": False}),
        ("training.train_sampling_strategy=random", {"train_sampling_strategy": "random"}),
        ("training.dataloader_num_workers=0", {"dataloader_num_workers": 0}),
    ],
)
def test_recipe_keys_win(recipe_values, fake_cuda, override, expected):
    fake_cuda()
    values = training_values(load_recipe_config(values=recipe_values, overrides=[override]), True)
    assert {key: values.get(key, False) for key in expected} == expected


def test_switch_turns_every_default_off(recipe_values, fake_cuda):
    fake_cuda()
    config = load_recipe_config(values=recipe_values, overrides=["training.speed_defaults=false"])
    assert not SPEED_KEYS & training_values(config, True).keys()


def test_switch_must_be_boolean(recipe_values):
    with pytest.raises(HubtuneError, match="'training.speed_defaults' must be true or false"):
        load_recipe_config(values=recipe_values, overrides=["training.speed_defaults=yes"])


def test_run_records_its_speed_settings(recipe_values, tmp_path):
    from pipelines import Recipe

    overrides = [
        "training.num_train_epochs=1",
        "training.train_sampling_strategy=group_by_length",  # opt-in, and works on hubtune's datasets
        "model.attn_implementation=eager",
    ]
    Recipe.from_dict(recipe_values, overrides=overrides).run()
    settings = json.loads((tmp_path / "run" / RESULTS_FILE).read_text())["speed_settings"]
    assert settings == {
        "bf16": False,
        "fp16": False,
        "tf32": None,
        "optim": "adamw_torch_fused",
        "train_sampling_strategy": "group_by_length",
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": True,
        "torch_compile": False,
        "attn_implementation": "eager",
        "padding_free": False,
    }
