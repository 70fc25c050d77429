"""Recipe forms an earlier hubtune read, rewritten once, at load, to today's form.

Run folders keep the recipe they were trained with and users keep theirs, so both must go on loading. What a
run saves is the rewritten recipe: a run folder written from a legacy recipe holds today's form.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import yaml

from pipelines.config.adapt import check_adapter_numbers
from pipelines.config.builder import coerce, option
from pipelines.errors import HubtuneError
from pipelines.registry import STRATEGIES

logger = logging.getLogger(__name__)

LEGACY_LORA_STRATEGY = "lora"


@dataclass
class LegacyLoraConfig:
    """`adapt.lora`, the settings of `adapt.strategy: lora`; its defaults (not PEFT's) are what such a run used."""

    r: int = option(8, "the rank of the LoRA matrices")
    alpha: int = option(16, "LoRA's scaling numerator (the update is scaled by alpha / r)")
    dropout: float = option(0.1, "dropout on the LoRA branch")
    target_modules: list[str] | None = option(None, "module names to adapt; null: PEFT's default for the architecture")


def upgrade_adapt(values: dict[str, Any]) -> dict[str, Any]:
    """`adapt.strategy: lora` with `adapt.lora: {r, alpha, dropout, target_modules}` becomes `adapt.strategy: peft`
    with `adapt.peft: {method: lora, ...}` (the same PEFT config); a logged warning names the new keys."""
    values = dict(values)
    if values.get("peft", ...) is None:
        del values["peft"]  # what an earlier hubtune saved for a strategy without a PEFT section: the default
    if "lora" not in values and values.get("strategy") != LEGACY_LORA_STRATEGY:
        return values
    lora = coerce(values.pop("lora", None) or {}, LegacyLoraConfig, "adapt.lora")
    strategy = coerce(values.get("strategy", "full"), str, "adapt.strategy")
    if strategy != LEGACY_LORA_STRATEGY:
        # Every recipe.yaml an earlier hubtune saved holds the section at its defaults; a recipe may keep LoRA
        # settings for switching to it by an override. A strategy with an `adapt.peft` section would be ambiguous.
        if lora == LegacyLoraConfig():
            return values
        if "peft" in {spec.name for spec in dataclasses.fields(STRATEGIES.get(strategy).adapt_config)}:
            raise HubtuneError(
                "recipe section 'adapt.lora' belongs to 'adapt.strategy: lora' (the legacy LoRA form); with "
                "'adapt.strategy: peft' set 'adapt.peft' (method: lora, r, alpha, dropout, target_modules)"
            )
        logger.warning(
            "recipe section 'adapt.lora' holds settings of the legacy 'adapt.strategy: lora', which "
            "'adapt.strategy: %s' does not use; LoRA is now 'adapt.strategy: peft' with 'adapt.peft: %s'",
            strategy,
            _flow(lora),
        )
        return values
    if "peft" in values:
        raise HubtuneError(
            "recipe section 'adapt.peft' needs 'adapt.strategy: peft', not 'lora' (the legacy LoRA form, whose "
            "settings are 'adapt.lora'); set 'adapt.strategy: peft' and move the LoRA settings into 'adapt.peft'"
        )
    check_adapter_numbers("adapt.lora", lora.r, lora.alpha, lora.dropout)
    logger.warning(
        "'adapt.strategy: lora' with 'adapt.lora' is the legacy LoRA form: read as 'adapt.strategy: peft' with "
        "'adapt.peft: %s'; write the recipe that way",
        _flow(lora),
    )
    return {**values, "strategy": "peft", "peft": {"method": "lora", **dataclasses.asdict(lora)}}


def _flow(lora: LegacyLoraConfig) -> str:
    """The `adapt.peft` section that holds these settings, as YAML's flow style writes it."""
    settings = {key: value for key, value in dataclasses.asdict(lora).items() if value is not None}
    return yaml.safe_dump({"method": "lora", **settings}, default_flow_style=True, sort_keys=False).strip()
