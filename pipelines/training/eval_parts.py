"""The parts of a model that run in eval mode while the rest of it trains.

Frozen parts always do: their features are then deterministic (no dropout) and their BatchNorm layers keep the
pretrained statistics. With `adapt.hold_batchnorm_statistics` every BatchNorm layer does: it normalises with its
running statistics, which stay the checkpoint's, while its weight and bias still train. Measured by
scripts/bench_lpft.py: switching BatchNorm to batch statistics is what cost LP-FT its probed head's fit on a CNN
(docs/benchmarks.md, "LP vs FT vs LP-FT under distribution shift").
"""

from __future__ import annotations

import logging

from torch import nn

logger = logging.getLogger(__name__)


def frozen_modules(model: nn.Module) -> list[nn.Module]:
    """The top-most modules whose parameters are all frozen (with their parameter-less children, e.g. dropout)."""
    found: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        parameters = list(module.parameters())
        if parameters and not any(p.requires_grad for p in parameters):
            found.append(module)
            return
        for child in module.children():
            visit(child)

    visit(model)
    return found


def eval_mode_parts(model: nn.Module, hold_batchnorm_statistics: bool = False) -> list[nn.Module]:
    """The frozen parts (`frozen_modules`) and, where `hold_batchnorm_statistics`, every BatchNorm layer outside
    them."""
    parts = frozen_modules(model)
    if hold_batchnorm_statistics:
        inside = {id(module) for part in parts for module in part.modules()}
        layers = [module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
        if not layers:
            logger.warning("adapt.hold_batchnorm_statistics: %s has no BatchNorm layer to hold", type(model).__name__)
        parts += [layer for layer in layers if id(layer) not in inside]
    return parts
