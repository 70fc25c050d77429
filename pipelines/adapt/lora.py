"""LoRA through PEFT, with the task head kept trainable and saved (`modules_to_save`)."""

from __future__ import annotations

import peft
from torch import nn

from pipelines.adapt.groups import LayerGroups
from pipelines.config import LoraConfig
from pipelines.errors import HubtuneError


def apply_lora(model: nn.Module, config: LoraConfig, groups: LayerGroups, task_type: str | None) -> peft.PeftModel:
    lora_config = peft.LoraConfig(
        r=config.r,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=config.target_modules,
        # A copy: PEFT extends the list it is given in place.
        modules_to_save=list(groups.head_modules) or None,
        task_type=task_type,
    )
    try:
        return peft.get_peft_model(model, lora_config)
    except ValueError as error:
        model_type = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
        raise HubtuneError(
            f"LoRA cannot be applied to '{model_type}' ({error}); set 'adapt.lora.target_modules' "
            "to the names of its attention projections"
        ) from error
