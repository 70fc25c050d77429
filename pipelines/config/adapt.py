"""The `adapt` section's shared keys: the strategy's name and the learning-rate layout every strategy takes.

A strategy's own keys (`adapt.n`, `adapt.peft`, `adapt.lp_ft` ...) live in its `adapt_config`, a subclass of
`AdaptConfig` kept with the strategy (pipelines/adapt/strategies). The loader finds that class through
`pipelines.registry.STRATEGIES` (`pipelines.config.loading.build_adapt_config`), as it finds a task's data section.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.config.builder import factory, option
from pipelines.errors import HubtuneError

UNFREEZE_UNITS = ("epoch", "step")


def check_adapter_numbers(section: str, r: int | None, alpha: float | None, dropout: float | None) -> None:
    """The numeric settings PEFT adapters share (`adapt.peft`, and the legacy `adapt.lora`, named as written),
    checked at load: PEFT itself takes a rank of 0 or a dropout of 1.5 and fails later, when the adapter is built,
    with a message that points elsewhere."""
    if r is not None and r < 1:
        raise HubtuneError(f"recipe key '{section}.r' must be at least 1, got {r}")
    if alpha is not None and not alpha > 0:
        raise HubtuneError(f"recipe key '{section}.alpha' must be positive, got {alpha}")
    if dropout is not None and not 0.0 <= dropout < 1.0:
        raise HubtuneError(f"recipe key '{section}.dropout' must lie in [0, 1), got {dropout}")


@dataclass
class UnfreezeScheduleConfig:
    """When each layer group starts training (its learning rate is zero before)."""

    unit: str = option("epoch", "the unit of 'every' and 'at': epoch or step")
    every: float | None = option(
        None, "ULMFiT top-down: the head first, then one more group from the top every this many units"
    )
    at: dict[str, float] = factory(dict, "explicit starts: group name or glob (block.*) -> start")


@dataclass
class AdaptConfig:
    """The keys every strategy takes; a strategy's `adapt_config` subclass adds its own and their rules."""

    strategy: str = option(
        "full",
        "full, freeze_backbone, train_last_n, peft or lp_ft, or a strategy another package registers; a key that "
        "only some strategies take is marked with them",
    )
    layer_decay: float | None = option(
        None, "a group's LR = base LR x decay^(levels below the head), as BEiT, ELECTRA and timm"
    )
    head_lr_scale: float = option(1.0, "the head's LR multiplier")
    unfreeze_schedule: UnfreezeScheduleConfig | None = option(
        None, "gradual unfreezing: when each layer group starts training"
    )
    feature_cache: bool = option(
        False, "freeze_backbone only: compute the frozen backbone's features once and train the head on them"
    )
    feature_cache_dir: str | None = option(None, "where cached features go; default ~/.cache/hubtune/features")
    hold_batchnorm_statistics: bool = option(
        False,
        "every BatchNorm layer normalises with its running statistics (the checkpoint's, never updated) while "
        "training, its weight and bias still trained; for CNN fine-tuning and lp_ft (scripts/bench_lpft.py)",
    )
    freeze_feature_encoder: bool = option(
        True,
        "speech: keep the convolutional feature encoder of wav2vec2-family models frozen (ignored by other models)",
    )

    def validate(self) -> None:
        """Raise HubtuneError naming the key when a value cannot work; subclasses add their keys' rules."""
        if self.layer_decay is not None and not 0.0 < self.layer_decay <= 1.0:
            raise HubtuneError(f"recipe key 'adapt.layer_decay' must lie in (0, 1], got {self.layer_decay}")
        if self.head_lr_scale <= 0:
            raise HubtuneError(f"recipe key 'adapt.head_lr_scale' must be positive, got {self.head_lr_scale}")
        schedule = self.unfreeze_schedule
        if schedule is not None:
            if schedule.unit not in UNFREEZE_UNITS:
                raise HubtuneError(
                    f"recipe key 'adapt.unfreeze_schedule.unit' must be epoch or step, got '{schedule.unit}'"
                )
            if (schedule.every is None) == (not schedule.at):
                raise HubtuneError("recipe section 'adapt.unfreeze_schedule' needs exactly one of 'every' and 'at'")
            if schedule.every is not None and schedule.every <= 0:
                raise HubtuneError(f"recipe key 'adapt.unfreeze_schedule.every' must be positive, got {schedule.every}")
