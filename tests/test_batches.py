"""A last training batch of one example is dropped only for a model whose BatchNorm cannot train on it; every other
model keeps its batches (the UperNet run that needs the drop is in test_semantic_segmentation.py)."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from pipelines import Recipe
from pipelines.training.batches import _batches_of_one, single_value_batch_norm


class TinyConvNet(nn.Module):
    """Convolution, BatchNorm, then (with `pooled_norm`) a BatchNorm after global pooling, as UperNet's pooled
    branch has."""

    def __init__(self, pooled_norm: bool):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.norm = nn.BatchNorm2d(4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.pooled_norm = nn.BatchNorm2d(4) if pooled_norm else nn.Identity()

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.pooled_norm(self.pool(self.norm(self.conv(pixel_values))))


def stack(rows: list[dict]) -> dict[str, torch.Tensor]:
    return {"pixel_values": torch.stack([row["pixel_values"] for row in rows])}


EXAMPLE = {"pixel_values": torch.rand(3, 8, 8)}


def test_a_batch_norm_over_feature_maps_takes_one_example():
    assert single_value_batch_norm(TinyConvNet(pooled_norm=False), EXAMPLE, stack) is None


def test_a_batch_norm_after_global_pooling_cannot_and_is_named():
    model = TinyConvNet(pooled_norm=True)
    before = copy.deepcopy(model.state_dict())
    assert single_value_batch_norm(model, EXAMPLE, stack) == "pooled_norm"
    assert model.training  # left as it was, its statistics untouched by the look
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())


def test_a_frozen_batch_norm_runs_in_eval_mode_and_takes_one_example():
    model = TinyConvNet(pooled_norm=True)
    model.pooled_norm.requires_grad_(False)  # the trainer keeps frozen parts in eval mode
    assert single_value_batch_norm(model, EXAMPLE, stack) is None


@pytest.mark.parametrize(
    ("examples", "batch_size", "world_size", "even_batches", "one"),
    [
        (21, 10, 1, True, True),
        (20, 10, 1, True, False),
        (25, 10, 1, True, False),
        (7, 1, 1, True, True),
        (21, 10, 2, True, False),  # accelerate completes each process's last batch from the epoch's start
        (21, 10, 2, False, True),
    ],
)
def test_batches_of_one_follow_the_batch_size_and_the_processes(examples, batch_size, world_size, even_batches, one):
    args = SimpleNamespace(
        train_batch_size=batch_size,
        world_size=world_size,
        accelerator_config=SimpleNamespace(even_batches=even_batches),
    )
    assert _batches_of_one(examples, args) is one


@pytest.mark.slow
def test_a_model_without_batch_norm_keeps_its_last_batch_of_one(recipe_values):
    values = copy.deepcopy(recipe_values)
    values["data"]["max_train_samples"] = 33  # batches of 16: 16, 16 and 1
    values["training"]["num_train_epochs"] = 1
    results = Recipe.from_dict(values).run()
    assert results["training_setup"]["steps_trained"] == 3
