"""`adapt.strategy: peft`: a PEFT adapter (LoRA, DoRA, rsLoRA, QLoRA, IA3, LoHa, LoKr) over the frozen checkpoint,
with the task head trained in full and saved with it (`modules_to_save`).

`METHODS` is the one table of the methods: PEFT's config class for each and the `adapt.peft` keys it takes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import peft
from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from torch import nn

from pipelines.adapt.strategies.base import Strategy
from pipelines.config import AdaptConfig, check_adapter_numbers, factory, option, require_one_of
from pipelines.errors import HubtuneError
from pipelines.models.groups import LayerGroups

SECTION = "adapt.peft"


@dataclass(frozen=True)
class PeftMethod:
    """One value of `adapt.peft.method`."""

    config_class: Callable[..., peft.PeftConfig]  # PEFT's own config class for the method
    keys: dict[str, str]  # the `adapt.peft` keys it takes besides method and target_modules -> the field each sets
    quantizable: bool = False  # QLoRA: the adapter over a base quantized by bitsandbytes (`adapt.peft.quantize`)


METHODS: dict[str, PeftMethod] = {
    "lora": PeftMethod(
        peft.LoraConfig,
        {
            "r": "r",
            "alpha": "lora_alpha",
            "dropout": "lora_dropout",
            "use_dora": "use_dora",
            "use_rslora": "use_rslora",
        },
        quantizable=True,
    ),
    "ia3": PeftMethod(peft.IA3Config, {"feedforward_modules": "feedforward_modules"}),
    "loha": PeftMethod(peft.LoHaConfig, {"r": "r", "alpha": "alpha"}),
    "lokr": PeftMethod(peft.LoKrConfig, {"r": "r", "alpha": "alpha"}),
}
PEFT_QUANTIZE = ("4bit",)


@dataclass
class PeftConfig:
    """One PEFT method and its settings; a key the method does not take is an error at load.

    Unset (null) keys take PEFT's own default for the method.
    """

    method: str = option("lora", "lora (with use_dora: DoRA, use_rslora: rsLoRA, quantize: QLoRA), ia3, loha or lokr")
    r: int | None = option(None, "the adapter's rank (lora, loha, lokr)")
    alpha: int | None = option(None, "the scaling numerator: the update is scaled by alpha / r (lora, loha, lokr)")
    dropout: float | None = option(None, "dropout on the adapter's input (lora)")
    target_modules: list[str] | None = option(None, "module names to adapt; null: PEFT's default for the architecture")
    use_dora: bool | None = option(None, "DoRA: a trained magnitude per output next to the LoRA direction (lora)")
    use_rslora: bool | None = option(None, "rsLoRA: scale the update by alpha / sqrt(r) instead of alpha / r (lora)")
    feedforward_modules: list[str] | None = option(
        None, "the target modules IA3 scales at their input rather than their output; a subset of target_modules (ia3)"
    )
    quantize: str | None = option(
        None, "4bit: QLoRA, the frozen base loaded in 4 bits by bitsandbytes (lora; needs a CUDA GPU)"
    )

    def validate(self) -> None:
        require_one_of(f"{SECTION}.method", self.method, tuple(METHODS))
        method = METHODS[self.method]
        taken = {"method", "target_modules", *method.keys} | ({"quantize"} if method.quantizable else set())
        for key in (f.name for f in dataclasses.fields(self)):
            if key not in taken and getattr(self, key) is not None:
                raise HubtuneError(
                    f"recipe key '{SECTION}.{key}' does not apply to method '{self.method}' "
                    f"('{SECTION}.method'); it takes {', '.join(sorted(taken - {'method'}))}"
                )
        check_adapter_numbers(SECTION, self.r, self.alpha, self.dropout)
        if self.feedforward_modules is not None:
            outside = sorted(set(self.feedforward_modules) - set(self.target_modules or ()))
            if outside:
                raise HubtuneError(
                    f"recipe key '{SECTION}.feedforward_modules' names {', '.join(outside)}, which "
                    f"'{SECTION}.target_modules' does not: IA3 scales only the modules it targets"
                )
        if self.quantize is not None:
            require_one_of(f"{SECTION}.quantize", self.quantize, PEFT_QUANTIZE)

    def described(self) -> str:
        """The method and the settings the recipe gave (unset ones are PEFT's defaults)."""
        return ", ".join(f"{key}={value}" for key, value in dataclasses.asdict(self).items() if value is not None)


@dataclass
class PeftAdaptConfig(AdaptConfig):
    peft: PeftConfig = factory(
        PeftConfig, "the PEFT method and its settings: lora (DoRA, rsLoRA, QLoRA), ia3, loha or lokr"
    )

    def validate(self) -> None:
        super().validate()
        self.peft.validate()


def quantization_kwargs(settings: PeftConfig) -> dict[str, Any]:
    """`from_pretrained` arguments that load the base in 4 bits for QLoRA (none otherwise)."""
    if settings.quantize is None:
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
    method = METHODS[settings.method]
    chosen = {field: getattr(settings, key) for key, field in method.keys.items() if getattr(settings, key) is not None}
    return method.config_class(
        target_modules=settings.target_modules,
        # A copy: PEFT extends the list it is given in place.
        modules_to_save=list(modules_to_save) or None,
        task_type=task_type,
        **chosen,
    )


def has_default_targets(model_type: str) -> bool:
    """Whether PEFT knows which modules of a `model_type` LoRA adapts when `target_modules` is null (its table of
    transformers architectures; a timm network wrapped by transformers is not in it)."""
    return model_type in TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING


def apply_adapter(model: nn.Module, settings: PeftConfig, groups: LayerGroups, task_type: str | None) -> peft.PeftModel:
    """Wrap `model` in the adapter `settings` describes."""
    if settings.quantize is not None:
        if not getattr(model, "is_loaded_in_4bit", False):
            raise HubtuneError(
                f"recipe key '{SECTION}.quantize' needs the task's model loaded in 4 bits, which only the "
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
            f"'{SECTION}.target_modules' to the names of the modules to adapt (its attention projections, or a "
            "convolutional network's conv layers)"
        ) from error


class Peft(Strategy):
    name = "peft"
    adapt_config = PeftAdaptConfig
    settings: PeftAdaptConfig
    saves_adapter = True

    def apply(self, model: nn.Module, groups: LayerGroups, peft_task_type: str | None) -> nn.Module:
        # PEFT freezes every parameter of the base model, the head's original included.
        return apply_adapter(model, self.settings.peft, groups, peft_task_type)

    def describe(self) -> str:
        return f"`{self.name}` ({self.settings.peft.described()})"

    def model_load_kwargs(self) -> dict[str, Any]:
        return quantization_kwargs(self.settings.peft)

    def cuda_requirements(self) -> dict[str, str]:
        if self.settings.peft.quantize is None:
            return {}
        return {f"'{SECTION}.quantize: {self.settings.peft.quantize}' (QLoRA)": "bitsandbytes"}
