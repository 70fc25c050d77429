"""Freezing strategies: which layer groups stay trainable."""

from __future__ import annotations

from torch import nn

from pipelines.errors import HubtuneError
from pipelines.models.groups import LayerGroups


def trainable_groups(strategy: str, groups: LayerGroups, n: int) -> set[str]:
    if strategy == "full":
        return set(groups.names)
    if strategy == "freeze_backbone":
        return {"neck", "head"} if groups.dense else {"head"}
    if strategy == "train_last_n":
        if n > groups.num_blocks:
            raise HubtuneError(f"recipe key 'adapt.n' is {n} but the model has only {groups.num_blocks} blocks")
        return {f"block.{i}" for i in range(groups.num_blocks - n, groups.num_blocks)} | {"neck", "head"}
    raise HubtuneError(f"unknown adapt strategy '{strategy}'")


def freeze(model: nn.Module, groups: LayerGroups, trainable: set[str]) -> None:
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(groups.by_parameter[name] in trainable)
