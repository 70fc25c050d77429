"""PEFT adapters (LoRA, DoRA, rsLoRA, QLoRA, IA3, LoHa, LoKr), with the task head kept trainable and saved
(`modules_to_save`)."""

from __future__ import annotations

import logging
from typing import Any

import peft
from torch import nn

from pipelines.config import PEFT_METHOD_KEYS, PeftConfig
from pipelines.errors import HubtuneError
from pipelines.models.groups import LayerGroups

logger = logging.getLogger(__name__)

PEFT_CONFIG_CLASSES: dict[str, Any] = {
    "lora": peft.LoraConfig,
    "ia3": peft.IA3Config,
    "loha": peft.LoHaConfig,
    "lokr": peft.LoKrConfig,
}


def quantization_kwargs(settings: PeftConfig | None) -> dict[str, Any]:
    """`from_pretrained` arguments that load the base in 4 bits for QLoRA (none otherwise)."""
    if settings is None or settings.quantize is None:
        return {}
    import torch
    from transformers import BitsAndBytesConfig

    # The QLoRA paper's choices: NormalFloat4 with double quantization, bf16 compute.
    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    return {"quantization_config": quantization}


def peft_config(settings: PeftConfig, modules_to_save: list[str], task_type: str | None) -> peft.PeftConfig:
    """PEFT's config for the method: the keys the recipe set, PEFT's defaults for the rest."""
    fields = PEFT_METHOD_KEYS[settings.method]
    chosen = {fields[key]: getattr(settings, key) for key in fields if getattr(settings, key) is not None}
    return PEFT_CONFIG_CLASSES[settings.method](
        target_modules=settings.target_modules,
        # A copy: PEFT extends the list it is given in place.
        modules_to_save=list(modules_to_save) or None,
        task_type=task_type,
        **chosen,
    )


def apply_adapter(
    model: nn.Module, settings: PeftConfig, groups: LayerGroups, task_type: str | None, section: str
) -> peft.PeftModel:
    """Wrap `model` in the adapter `settings` describes; `section` is the recipe section they came from."""
    if settings.quantize is not None:
        if not getattr(model, "is_loaded_in_4bit", False):
            raise HubtuneError(
                f"recipe key '{section}.quantize' needs the task's model loaded in 4 bits, which only the "
                "classification tasks do"
            )
        # Casts the unquantized parameters (norms, head) to fp32 for stable training. Gradient checkpointing
        # stays the recipe's choice ('training.gradient_checkpointing'), not PEFT's default of always on.
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    try:
        return peft.get_peft_model(model, peft_config(settings, groups.head_modules, task_type))
    except ValueError as error:
        model_type = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
        raise HubtuneError(
            f"PEFT method '{settings.method}' cannot be applied to '{model_type}' ({error}); set "
            f"'{section}.target_modules' to the names of its attention projections"
        ) from error
