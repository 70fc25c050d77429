"""Speed defaults: a (faked) CUDA device gets bf16 or fp16, TF32 and workers, a CPU with AMX bf16 and nothing
else, other CPUs nothing (random training batches everywhere: length grouping is opt-in), the recipe's own keys
win, and all_results.json records what a run trained with."""

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


@pytest.fixture
def fake_cpu(monkeypatch):
    """A machine with no GPU or other accelerator, whose CPU has AMX bf16 tiles or not (`fake_cpu(amx=False)`)."""

    def fake(amx: bool = True, accelerator: bool = False) -> None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")  # tests/conftest.py holds oneDNN below AMX for the suite
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        monkeypatch.setattr(torch.accelerator, "is_available", lambda: accelerator)
        monkeypatch.setattr(pipelines.training.speed, "cpu_has_amx_bf16", lambda: amx)

    return fake


def test_cpu_without_amx_gets_nothing(recipe_values, fake_cpu):
    fake_cpu(amx=False)
    config = load_recipe_config(values=recipe_values)
    assert not SPEED_KEYS & training_values(config, True).keys()
    for switch in ("training.speed_defaults=false", "training.gpu_defaults=false"):  # the key and its former name
        off = load_recipe_config(values=recipe_values, overrides=[switch])
        assert training_values(config, True) == training_values(off, True)
    # The fused AdamW is already transformers 5's default optimizer (torch >= 2.8): nothing to add for it.
    assert training_arguments(config, recipe_values["output_dir"], True).optim == "adamw_torch_fused"


def test_cpu_with_amx_gets_bf16_alone(recipe_values, fake_cpu):
    fake_cpu()
    values = training_values(load_recipe_config(values=recipe_values), True)
    assert values["bf16"] is True and values["use_cpu"] is True  # TrainingArguments takes bf16 on a CPU so only
    assert not {"fp16", "tf32", "dataloader_num_workers", "train_sampling_strategy"} & values.keys()
    args = training_arguments(load_recipe_config(values=recipe_values), recipe_values["output_dir"], True)
    assert args.bf16 and args.use_cpu


@pytest.mark.parametrize(
    "override", ["training.bf16=false", "training.fp16=true", "training.use_cpu=false", "training.speed_defaults=false"]
)
def test_recipe_keys_win_on_an_amx_cpu(recipe_values, fake_cpu, override):
    fake_cpu()
    values = training_values(load_recipe_config(values=recipe_values, overrides=[override]), True)
    assert not values.get("bf16")
    assert "use_cpu" not in values or override == "training.use_cpu=false"


@pytest.mark.parametrize(("cap", "bf16"), [("AVX512_CORE_BF16", False), ("AVX512_CORE_AMX", True), ("ALL", True)])
def test_onednn_held_below_amx_counts_as_no_amx(recipe_values, fake_cpu, monkeypatch, cap, bf16):
    fake_cpu()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    assert training_values(load_recipe_config(values=recipe_values), True).get("bf16", False) is bf16


def test_amx_cpu_beside_an_accelerator_gets_nothing(recipe_values, fake_cpu):
    fake_cpu(accelerator=True)  # a Mac's MPS: use_cpu would keep the run off it
    assert not {"bf16", "use_cpu"} & training_values(load_recipe_config(values=recipe_values), True).keys()


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


@pytest.mark.parametrize("amx", [False, True])
def test_run_records_its_speed_settings(recipe_values, tmp_path, fake_cpu, amx):
    """A real run on a CPU, in fp32, or in bf16 mixed precision where the CPU has AMX (faked: without AMX the
    bf16 run is slow, not wrong)."""
    from pipelines import Recipe

    fake_cpu(amx=amx)
    overrides = [
        "training.num_train_epochs=1",
        "training.train_sampling_strategy=group_by_length",  # opt-in, and works on hubtune's datasets
        "model.attn_implementation=eager",
    ]
    Recipe.from_dict(recipe_values, overrides=overrides).run()
    results = json.loads((tmp_path / "run" / RESULTS_FILE).read_text())
    assert results["speed_settings"] == {
        "bf16": amx,
        "fp16": False,
        "tf32": None,
        "optim": "adamw_torch_fused",
        "train_sampling_strategy": "group_by_length",
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": not amx,  # TrainingArguments turns pinning off with use_cpu
        "torch_compile": False,
        "use_cpu": amx,
        "attn_implementation": "eager",
        "padding_free": False,
    }


def test_bf16_trains_but_scores_and_hands_back_the_saved_model_in_fp32(recipe_values, tmp_path, fake_cpu):
    """Mixed precision is for training: the run's final scores, `hubtune evaluate` and the model `run()` returns are
    the saved model's in fp32, as predict and pipeline() run it."""
    from pipelines import Recipe
    from pipelines.serving.predictor import Predictor

    fake_cpu()
    result = Recipe.from_dict(recipe_values, overrides=["training.num_train_epochs=1"]).run()
    assert result.metrics["speed_settings"]["bf16"] is True
    predictor = Predictor(result.run_dir)
    timing = ("test_runtime", "test_samples_per_second", "test_steps_per_second")
    reloaded = predictor.evaluate("test")
    scores = {key for key in reloaded.keys() & result.metrics.keys() if key.startswith("test_")} - set(timing)
    assert {"test_loss", "test_accuracy"} <= scores
    assert {key: reloaded[key] for key in scores} == pytest.approx({key: result[key] for key in scores}, rel=1e-5)
    batch = predictor.processor(["a fine film", "dull"], padding=True, return_tensors="pt")
    with torch.no_grad():
        returned, saved = result.model.eval()(**batch).logits, predictor.model(**batch).logits
    assert returned.dtype == torch.float32
    torch.testing.assert_close(returned, saved, rtol=0, atol=1e-6)
