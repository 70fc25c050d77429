"""The `adapt` section: how the checkpoint is adapted (strategy, adapter settings, learning-rate layout)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pipelines.config.builder import closest, factory, option, require_one_of
from pipelines.errors import HubtuneError

ADAPT_STRATEGIES = ("full", "freeze_backbone", "train_last_n", "lora", "peft", "lp_ft")
# Strategies that train a PEFT adapter (the run folder holds the adapter and the head, not full weights).
ADAPTER_STRATEGIES = ("lora", "peft")
# The `adapt.peft` keys each method takes besides `method` and `target_modules`, as the field of PEFT's own
# config class (LoraConfig, IA3Config, LoHaConfig, LoKrConfig) each one sets.
PEFT_METHOD_KEYS: dict[str, dict[str, str]] = {
    "lora": {
        "r": "r",
        "alpha": "lora_alpha",
        "dropout": "lora_dropout",
        "use_dora": "use_dora",
        "use_rslora": "use_rslora",
    },
    "ia3": {"feedforward_modules": "feedforward_modules"},
    "loha": {"r": "r", "alpha": "alpha"},
    "lokr": {"r": "r", "alpha": "alpha"},
}
# QLoRA: a base model quantized by bitsandbytes, a LoRA adapter over it.
PEFT_QUANTIZE = ("4bit",)
UNFREEZE_UNITS = ("epoch", "step")


@dataclass
class LoraConfig:
    r: int = option(8, "the rank of the LoRA matrices")
    alpha: int = option(16, "LoRA's scaling numerator (the update is scaled by alpha / r)")
    dropout: float = option(0.1, "dropout on the LoRA branch")
    target_modules: list[str] | None = option(None, "module names to adapt; null: PEFT's default for the architecture")


@dataclass
class PeftConfig:
    """One PEFT method and its settings (strategy peft); a key the method does not take is an error at load.

    Unset (null) keys take PEFT's own default for the method.
    """

    method: str = option("lora", "lora (with use_dora: DoRA, use_rslora: rsLoRA), ia3, loha or lokr")
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


@dataclass
class UnfreezeScheduleConfig:
    """When each layer group starts training (its learning rate is zero before)."""

    unit: str = option("epoch", "the unit of 'every' and 'at': epoch or step")
    every: float | None = option(
        None, "ULMFiT top-down: the head first, then one more group from the top every this many units"
    )
    at: dict[str, float] = factory(dict, "explicit starts: group name or glob (block.*) -> start")


@dataclass
class LpFtConfig:
    """LP-FT: a linear probe (head only), then fine-tuning from the probed head."""

    probe_epochs: float = option(1.0, "epochs of the linear probe")
    probe_learning_rate: float = option(1e-3, "the linear probe's learning rate")
    then: str = option("full", "the fine-tuning stage's strategy: full, or train_last_n (with adapt.n)")


@dataclass
class AdaptConfig:
    strategy: str = option("full", "full, freeze_backbone, train_last_n, lora, peft or lp_ft")
    n: int = option(2, "blocks left trainable by train_last_n, counted from the top")
    lora: LoraConfig = factory(LoraConfig, "LoRA settings (strategy lora)")
    peft: PeftConfig | None = option(
        None, "the PEFT method and its settings (strategy peft): lora, DoRA, rsLoRA, QLoRA, ia3, loha, lokr"
    )
    layer_decay: float | None = option(
        None, "a group's LR = base LR x decay^(levels below the head), as BEiT, ELECTRA and timm"
    )
    head_lr_scale: float = option(1.0, "the head's LR multiplier")
    unfreeze_schedule: UnfreezeScheduleConfig | None = option(
        None, "gradual unfreezing: when each layer group starts training"
    )
    lp_ft: LpFtConfig = factory(LpFtConfig, "LP-FT settings (strategy lp_ft)")
    feature_cache: bool = option(
        False, "freeze_backbone only: compute the frozen backbone's features once and train the head on them"
    )
    feature_cache_dir: str | None = option(None, "where cached features go; default ~/.cache/hubtune/features")
    freeze_feature_encoder: bool = option(
        True,
        "speech: keep the convolutional feature encoder of wav2vec2-family models frozen (ignored by other models)",
    )

    def adapter(self) -> PeftConfig:
        """The PEFT method an adapter strategy trains: `adapt.peft`, or `adapt.lora` for strategy lora."""
        if self.strategy == "lora":
            lora = self.lora
            return PeftConfig("lora", lora.r, lora.alpha, lora.dropout, lora.target_modules)
        return self.peft or PeftConfig()


def validate_adapt(adapt: AdaptConfig, from_scratch: bool) -> None:
    if adapt.strategy not in ADAPT_STRATEGIES:
        raise HubtuneError(
            f"unknown adapt strategy '{adapt.strategy}' in 'adapt.strategy'"
            f"{closest(adapt.strategy, ADAPT_STRATEGIES, noun='strategies')}"
        )
    if adapt.strategy in ADAPTER_STRATEGIES and from_scratch:
        raise HubtuneError(
            f"'adapt.strategy: {adapt.strategy}' needs pretrained weights; it cannot be combined with "
            "'model.from_scratch'"
        )
    if adapt.peft is not None and adapt.strategy != "peft":
        raise HubtuneError(f"recipe section 'adapt.peft' needs 'adapt.strategy: peft', not '{adapt.strategy}'")
    if adapt.strategy == "peft":
        if adapt.lora != LoraConfig():
            raise HubtuneError(
                "recipe section 'adapt.lora' belongs to 'adapt.strategy: lora'; with peft set 'adapt.peft' "
                "(method: lora, r, alpha, dropout, target_modules)"
            )
        validate_peft(adapt.adapter())
    if adapt.layer_decay is not None and not 0.0 < adapt.layer_decay <= 1.0:
        raise HubtuneError(f"recipe key 'adapt.layer_decay' must lie in (0, 1], got {adapt.layer_decay}")
    if adapt.head_lr_scale <= 0:
        raise HubtuneError(f"recipe key 'adapt.head_lr_scale' must be positive, got {adapt.head_lr_scale}")
    schedule = adapt.unfreeze_schedule
    if schedule is not None:
        if schedule.unit not in UNFREEZE_UNITS:
            raise HubtuneError(
                f"recipe key 'adapt.unfreeze_schedule.unit' must be epoch or step, got '{schedule.unit}'"
            )
        if (schedule.every is None) == (not schedule.at):
            raise HubtuneError("recipe section 'adapt.unfreeze_schedule' needs exactly one of 'every' and 'at'")
        if schedule.every is not None and schedule.every <= 0:
            raise HubtuneError(f"recipe key 'adapt.unfreeze_schedule.every' must be positive, got {schedule.every}")
        if adapt.strategy in (*ADAPTER_STRATEGIES, "lp_ft"):
            raise HubtuneError(f"'adapt.unfreeze_schedule' gates layer groups; it does not apply to '{adapt.strategy}'")
    if adapt.feature_cache and adapt.strategy != "freeze_backbone":
        raise HubtuneError(f"'adapt.feature_cache' needs 'adapt.strategy: freeze_backbone', not '{adapt.strategy}'")
    if adapt.strategy == "lp_ft" and adapt.lp_ft.then not in ("full", "train_last_n"):
        raise HubtuneError(f"recipe key 'adapt.lp_ft.then' must be full or train_last_n, got '{adapt.lp_ft.then}'")
    if adapt.strategy == "train_last_n" and adapt.n < 1:
        raise HubtuneError(f"recipe key 'adapt.n' must be at least 1 for train_last_n, got {adapt.n}")


def validate_peft(settings: PeftConfig) -> None:
    require_one_of("adapt.peft.method", settings.method, tuple(PEFT_METHOD_KEYS))
    taken = {"method", "target_modules", *PEFT_METHOD_KEYS[settings.method]}
    if settings.method == "lora":
        taken.add("quantize")
    for key in (f.name for f in dataclasses.fields(settings)):
        if key not in taken and getattr(settings, key) is not None:
            raise HubtuneError(
                f"recipe key 'adapt.peft.{key}' does not apply to method '{settings.method}' "
                f"('adapt.peft.method'); it takes {', '.join(sorted(taken - {'method'}))}"
            )
    if settings.r is not None and settings.r < 1:
        raise HubtuneError(f"recipe key 'adapt.peft.r' must be at least 1, got {settings.r}")
    if settings.alpha is not None and settings.alpha <= 0:
        raise HubtuneError(f"recipe key 'adapt.peft.alpha' must be positive, got {settings.alpha}")
    if settings.dropout is not None and not 0.0 <= settings.dropout < 1.0:
        raise HubtuneError(f"recipe key 'adapt.peft.dropout' must lie in [0, 1), got {settings.dropout}")
    if settings.feedforward_modules is not None:
        outside = sorted(set(settings.feedforward_modules) - set(settings.target_modules or ()))
        if outside:
            raise HubtuneError(
                f"recipe key 'adapt.peft.feedforward_modules' names {', '.join(outside)}, which "
                "'adapt.peft.target_modules' does not: IA3 scales only the modules it targets"
            )
    if settings.quantize is not None:
        require_one_of("adapt.peft.quantize", settings.quantize, PEFT_QUANTIZE)
