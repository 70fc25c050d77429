"""Adaptation of a pretrained model to a task: layer groups, freezing strategies and PEFT adapters."""

from __future__ import annotations

import logging

from torch import nn

from pipelines.adapt.adapters import apply_adapter
from pipelines.adapt.freeze import freeze, trainable_groups
from pipelines.adapt.param_groups import GroupPlan, plan_groups
from pipelines.adapt.report import format_table, parameter_table
from pipelines.config import ADAPTER_STRATEGIES, AdaptConfig
from pipelines.models.groups import LayerGroups, layer_groups

logger = logging.getLogger(__name__)

__all__ = ["GroupPlan", "LayerGroups", "adapt_model", "format_table", "layer_groups", "parameter_table", "plan_groups"]


def adapt_model(
    model: nn.Module, config: AdaptConfig, peft_task_type: str | None, strategy: str | None = None
) -> tuple[nn.Module, LayerGroups]:
    """Apply a strategy (the recipe's unless given); returns the model to train (PEFT-wrapped for lora and peft)
    and its groups."""
    strategy = strategy or config.strategy
    groups = layer_groups(model)
    if strategy in ADAPTER_STRATEGIES:
        model = apply_adapter(model, config.adapter(), groups, peft_task_type, f"adapt.{strategy}")
    else:
        freeze(model, groups, trainable_groups(strategy, groups, config.n))
    # wav2vec2-family: the convolutional feature encoder is pretrained on raw audio and fine-tuning it rarely
    # helps (the wav2vec2 paper and the transformers examples keep it frozen). PEFT has frozen it already.
    freeze_encoder = getattr(model, "freeze_feature_encoder", None)
    if config.freeze_feature_encoder and strategy not in ADAPTER_STRATEGIES and callable(freeze_encoder):
        freeze_encoder()
    return model, groups
