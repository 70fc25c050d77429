"""Adaptation of a pretrained model to a task: layer groups, the strategies (`adapt.strategy`) and the optimizer's
parameter groups."""

from __future__ import annotations

from torch import nn

from pipelines.adapt.param_groups import GroupPlan, plan_groups
from pipelines.adapt.report import format_table, parameter_table
from pipelines.adapt.strategies import Strategy, strategy_for
from pipelines.config import AdaptConfig
from pipelines.models.groups import LayerGroups, layer_groups

__all__ = [
    "GroupPlan",
    "LayerGroups",
    "Strategy",
    "adapt_model",
    "format_table",
    "layer_groups",
    "parameter_table",
    "plan_groups",
    "strategy_for",
]


def adapt_model(model: nn.Module, adapt: AdaptConfig, peft_task_type: str | None) -> tuple[nn.Module, LayerGroups]:
    """Apply the strategy `adapt.strategy` names; returns the model to train (PEFT-wrapped for an adapter) and its
    groups."""
    return strategy_for(adapt).adapt(model, peft_task_type)
