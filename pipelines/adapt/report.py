"""The table of trainable vs total parameters per layer group, logged at start and saved in the run."""

from __future__ import annotations

from torch import nn

from pipelines.adapt.param_groups import GroupPlan
from pipelines.models.groups import LayerGroups


def parameter_count(parameter: nn.Parameter) -> int:
    """Elements of a parameter as the model defines it: bitsandbytes packs two 4-bit weights into each stored
    byte (QLoRA's base), and keeps the original shape in its `quant_state`."""
    quant_state = getattr(parameter, "quant_state", None)
    return quant_state.shape.numel() if quant_state is not None else parameter.numel()


def parameter_table(model: nn.Module, groups: LayerGroups, plans: dict[str, GroupPlan] | None = None) -> list[dict]:
    """Rows of trainable/total parameters per group, with the LR scale and start of trainable groups."""
    plans = plans or {}
    rows: dict[str, dict] = {}
    for name, parameter in model.named_parameters():
        group = groups.group_of(name)
        plan = plans.get(group)
        row = rows.setdefault(
            group,
            {
                "group": group,
                "trainable": 0,
                "total": 0,
                "lr_scale": plan.lr_scale if plan else None,
                "unfreeze_at": plan.unfreeze_at if plan else None,
            },
        )
        row["total"] += parameter_count(parameter)
        if parameter.requires_grad:
            row["trainable"] += parameter_count(parameter)
    order = {name: i for i, name in enumerate([*groups.names, "adapter"])}
    return sorted(rows.values(), key=lambda row: order.get(row["group"], len(order)))


def format_table(rows: list[dict]) -> str:
    trainable = sum(row["trainable"] for row in rows)
    total = sum(row["total"] for row in rows)
    lines = [f"{'group':<12} {'trainable':>12} {'total':>12} {'share':>7} {'lr scale':>9} {'starts at':>9}"]
    for row in [*rows, {"group": "all", "trainable": trainable, "total": total}]:
        share = row["trainable"] / row["total"] if row["total"] else 0.0
        scale = f"{row['lr_scale']:.4g}" if row.get("lr_scale") is not None else "-"
        start = f"{row['unfreeze_at']:g}" if row.get("unfreeze_at") is not None else "-"
        lines.append(
            f"{row['group']:<12} {row['trainable']:>12,} {row['total']:>12,} {share:>7.1%} {scale:>9} {start:>9}"
        )
    return "\n".join(lines)
