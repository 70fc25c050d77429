"""Optimizer parameter groups from layer groups: one function for LR decay, head LR scale, weight decay
rules and the unfreeze schedule, for every architecture that `layer_groups` names (timm's `param_groups`
shape: the layer groups decide, the optimizer only sees groups with `lr_scale` and `unfreeze_at`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from torch import nn

from pipelines.config import AdaptConfig
from pipelines.errors import HubtuneError
from pipelines.models.groups import LayerGroups


@dataclass(frozen=True)
class GroupPlan:
    lr_scale: float
    unfreeze_at: float  # in the schedule's unit (epochs or steps); 0 = from the start


def _depth(group: str, num_blocks: int) -> int:
    if group == "embeddings":
        return 0
    if group.startswith("block."):
        return int(group.split(".")[1]) + 1
    return num_blocks + 1  # neck, head, adapter


def lr_scales(groups: LayerGroups, adapt: AdaptConfig) -> dict[str, float]:
    """LR multiplier per group: layer_decay^(depth below the head) times head_lr_scale for the head."""
    top = groups.num_blocks + 1
    scales = {}
    for name in [*groups.names, "adapter"]:
        scale = adapt.layer_decay ** (top - _depth(name, groups.num_blocks)) if adapt.layer_decay else 1.0
        scales[name] = scale * (adapt.head_lr_scale if name == "head" else 1.0)
    return scales


def unfreeze_starts(groups: LayerGroups, adapt: AdaptConfig, trainable: set[str]) -> dict[str, float]:
    """Start of each trainable group under `adapt.unfreeze_schedule`; groups it does not name start at 0."""
    schedule = adapt.unfreeze_schedule
    starts = {name: 0.0 for name in trainable}
    if schedule is None:
        return starts
    if schedule.every is not None:
        # ULMFiT top-down: the head (with the neck) first, then one block at a time, embeddings last.
        order = [name for name in reversed(groups.names) if name in trainable and name not in ("head", "neck")]
        for rank, name in enumerate(order, start=1):
            starts[name] = rank * schedule.every
        return starts
    for pattern, start in schedule.at.items():
        matched = [name for name in trainable if fnmatch.fnmatchcase(name, pattern)]
        if not matched:
            raise HubtuneError(
                f"recipe key 'adapt.unfreeze_schedule.at.{pattern}' names no trainable layer group "
                f"(trainable: {', '.join(n for n in groups.names if n in trainable)})"
            )
        if start < 0:
            raise HubtuneError(f"recipe key 'adapt.unfreeze_schedule.at.{pattern}' must be >= 0, got {start}")
        for name in matched:
            starts[name] = float(start)
    return starts


def plan_groups(model: nn.Module, groups: LayerGroups, adapt: AdaptConfig) -> dict[str, GroupPlan]:
    trainable = {groups.group_of(name) for name, p in model.named_parameters() if p.requires_grad}
    scales = lr_scales(groups, adapt)
    starts = unfreeze_starts(groups, adapt, trainable)
    return {name: GroupPlan(scales[name], starts[name]) for name in trainable}


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """Full parameter names that a module inside `model` excludes from weight decay through timm's
    `no_weight_decay()` (e.g. a ViT's `pos_embed` and `cls_token`), wherever the module sits (TimmWrapper, PEFT)."""
    names = set()
    for prefix, module in model.named_modules():
        exclude = getattr(module, "no_weight_decay", None)
        if callable(exclude):
            names |= {f"{prefix}.{name}" if prefix else name for name in exclude()}
    return names


def _no_decay(name: str, parameter: nn.Parameter, excluded: AbstractSet[str]) -> bool:
    # Biases and normalisation weights (all 1-D) are not decayed, as in BERT, timm and the Trainer.
    return parameter.ndim <= 1 or name.endswith(".bias") or name in excluded


def optimizer_groups(
    model: nn.Module,
    groups: LayerGroups,
    plans: dict[str, GroupPlan],
    base_lr: float,
    weight_decay: float,
    no_decay_names: AbstractSet[str] = frozenset(),
) -> list[dict]:
    """Torch optimizer param groups: one per (layer group, decay or not), each with its LR and schedule start.

    `no_decay_names` are undecayed whatever their shape (`no_weight_decay_names`)."""
    buckets: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            key = (groups.group_of(name), _no_decay(name, parameter, no_decay_names))
            buckets.setdefault(key, []).append(parameter)
    return [
        {
            "params": params,
            "lr": base_lr * plans[group].lr_scale,
            "weight_decay": 0.0 if no_decay else weight_decay,
            "layer_group": group,
            "unfreeze_at": plans[group].unfreeze_at,
        }
        for (group, no_decay), params in buckets.items()
    ]
