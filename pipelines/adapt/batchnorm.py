"""BatchNorm layers whose parameters are all frozen keep their ImageNet statistics during training.

In train mode BatchNorm normalises with the batch's statistics and overwrites its running mean and
variance, so a "frozen" CNN stem or stage would still change, and, under LoRA, drift from the base weights
the adapter is reloaded onto. The Trainer calls `model.train()` before every step (after any callback),
so no callback can keep these layers in eval mode; a forward pre-hook on each of them does.
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def _stay_in_eval(module: nn.Module, _inputs: tuple) -> None:
    module.training = False


def freeze_batchnorm_statistics(model: nn.Module) -> list[str]:
    """Hook every BatchNorm whose affine parameters are all frozen; returns their names."""
    frozen = []
    for name, module in model.named_modules():
        if isinstance(module, _BatchNorm) and not any(p.requires_grad for p in module.parameters(recurse=False)):
            module.register_forward_pre_hook(_stay_in_eval)
            frozen.append(name)
    return frozen
