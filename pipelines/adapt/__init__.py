"""Adaptation of a pretrained model to a task: layer groups, freezing strategies and PEFT adapters."""

from __future__ import annotations

import logging

from torch import nn

from pipelines.adapt.batchnorm import freeze_batchnorm_statistics
from pipelines.adapt.freeze import freeze, trainable_groups
from pipelines.adapt.groups import LayerGroups, layer_groups
from pipelines.adapt.lora import apply_lora
from pipelines.adapt.report import format_table, parameter_table
from pipelines.config import AdaptConfig

logger = logging.getLogger(__name__)

__all__ = ["LayerGroups", "adapt_model", "format_table", "layer_groups", "parameter_table"]


def adapt_model(model: nn.Module, config: AdaptConfig, peft_task_type: str | None) -> tuple[nn.Module, LayerGroups]:
    """Apply the recipe's strategy; returns the model to train (PEFT-wrapped for LoRA) and its groups."""
    groups = layer_groups(model)
    if config.strategy == "lora":
        model = apply_lora(model, config.lora, groups, peft_task_type)
    else:
        freeze(model, groups, trainable_groups(config.strategy, groups, config.n))
    frozen = freeze_batchnorm_statistics(model)
    if frozen:
        logger.info("%d BatchNorm layers of frozen parts keep their running statistics (eval mode)", len(frozen))
    return model, groups
