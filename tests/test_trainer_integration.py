"""The layer-group optimizer stays on upstream's paths: Trainer's epoch length, upstream's optimizer choice,
timm's `no_weight_decay`, and fresh optimizer state for a group at its unfreeze step."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainerCallback

from pipelines import HubtuneError, Recipe

BASE_LR = 1e-3


class RecordOptimizer(TrainerCallback):
    """The LR of each layer group after every optimizer step, and the optimizer as training ended."""

    def __init__(self):
        self.rates: list[dict[str, float]] = []
        self.optimizer = None

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        self.rates.append({group["layer_group"]: group["lr"] for group in optimizer.param_groups})

    def on_train_end(self, args, state, control, optimizer=None, **kwargs):
        self.optimizer = optimizer


def test_epoch_unfreezing_under_gradient_accumulation_follows_trainers_epochs(recipe_values):
    # 240 examples / batch 16 = 15 batches; at accumulation 2 Trainer makes 8 update steps per epoch (7 full
    # windows and a last one of one batch), so epochs end at steps 8 and 16, not 7 and 14.
    recorder = RecordOptimizer()
    recipe = Recipe.from_dict(
        recipe_values,
        [
            "adapt.unfreeze_schedule.every=1",
            f"training.learning_rate={BASE_LR}",
            "training.num_train_epochs=3",
            "training.lr_scheduler_type=constant",
            "training.gradient_accumulation_steps=2",
        ],
    )
    recipe.run(callbacks=[recorder])
    assert len(recorder.rates) == 24
    starts = {"head": 0, "block.1": 8, "block.0": 16}
    for step, rates in enumerate(recorder.rates, start=1):
        for group, start in starts.items():
            assert (rates[group] > 0) == (step >= start), (group, step)


def test_unfrozen_group_starts_with_fresh_optimizer_state(recipe_values):
    # 2 epochs of 15 steps; block.0 opens at step 12. Its Adam state counts only the steps it took since then,
    # as if it had been added to the optimizer at that point.
    recorder = RecordOptimizer()
    recipe = Recipe.from_dict(
        recipe_values,
        [
            "adapt.unfreeze_schedule.unit=step",
            "adapt.unfreeze_schedule.at={block.0: 12}",
            "training.num_train_epochs=2",
            f"training.learning_rate={BASE_LR}",
        ],
    )
    recipe.run(callbacks=[recorder])
    steps = {
        group["layer_group"]: int(recorder.optimizer.state[group["params"][0]]["step"])
        for group in recorder.optimizer.param_groups
    }
    assert steps["head"] == 30 and steps["block.1"] == 30
    assert steps["block.0"] == 30 - 12


@pytest.mark.parametrize("optim, expected", [("adafactor", "Adafactor"), ("sgd", "SGD")])
def test_training_optim_is_honoured_with_layer_group_rates(recipe_values, optim, expected):
    recorder = RecordOptimizer()
    recipe = Recipe.from_dict(
        recipe_values,
        [
            f"training.optim={optim}",
            "adapt.layer_decay=0.5",
            f"training.learning_rate={BASE_LR}",
            "training.lr_scheduler_type=constant",
            "training.num_train_epochs=1",
        ],
    )
    recipe.run(callbacks=[recorder])
    optimizer = getattr(recorder.optimizer, "optimizer", recorder.optimizer)
    assert type(optimizer).__name__ == expected
    first = recorder.rates[0]
    assert first["block.0"] == pytest.approx(BASE_LR * 0.5**2)
    assert first["head"] == pytest.approx(BASE_LR)


def test_whole_model_optimizers_are_refused_at_load(recipe_values):
    with pytest.raises(HubtuneError, match="'training.optim': 'galore_adamw'"):
        Recipe.from_dict(recipe_values, ["training.optim=galore_adamw"])


def test_timm_no_weight_decay_parameters_are_not_decayed():
    import timm

    from pipelines.adapt import layer_groups
    from pipelines.adapt.param_groups import no_weight_decay_names, optimizer_groups, plan_groups
    from pipelines.config import AdaptConfig

    wrapper = torch.nn.Module()
    wrapper.timm_model = timm.create_model("test_vit", num_classes=3)
    excluded = no_weight_decay_names(wrapper)
    assert {"timm_model.pos_embed", "timm_model.cls_token"} <= excluded
    groups = layer_groups(wrapper.timm_model)
    model = wrapper.timm_model
    param_groups = optimizer_groups(
        model, groups, plan_groups(model, groups, AdaptConfig()), 1e-3, 0.05, no_weight_decay_names(model)
    )
    decay_of = {id(p): group["weight_decay"] for group in param_groups for p in group["params"]}
    assert decay_of[id(model.pos_embed)] == 0.0 and decay_of[id(model.cls_token)] == 0.0
    assert decay_of[id(model.patch_embed.proj.weight)] == 0.05
