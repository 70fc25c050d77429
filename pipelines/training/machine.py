"""What a run needs of the machine it trains on, checked when training starts.

Never checked when a recipe or a run folder is read: a QLoRA run trained on a GPU must still load for
predict, evaluate, export and push on a CPU machine.
"""

from __future__ import annotations

import importlib.util

import torch

from pipelines.adapt.strategies import strategy_for
from pipelines.config import TRACKERS, RecipeConfig
from pipelines.errors import HubtuneError
from pipelines.training.trackers import named_trackers

# transformers' attention kernels that run on CUDA only, with the package each needs.
CUDA_ATTENTION_PACKAGES = {"flash_attention_2": "flash_attn", "flash_attention_3": "flash_attn_interface"}


def check_machine(config: RecipeConfig) -> None:
    """Refuse, naming the recipe key, a run this machine cannot train (rather than failing at the first step)."""
    for setting, package in strategy_for(config.adapt).cuda_requirements().items():
        _require_cuda(setting, package)
    for tracker in named_trackers(config.training.get("report_to")):
        package = TRACKERS[tracker]
        if importlib.util.find_spec(package) is None:
            raise HubtuneError(
                f"recipe key 'training.report_to' names {tracker}, whose package is not installed "
                f"(pip install {'mlflow' if tracker == 'mlflow' else package})"
            )
    attention = config.model.attn_implementation
    if attention in CUDA_ATTENTION_PACKAGES:
        _require_cuda(f"'model.attn_implementation: {attention}'", CUDA_ATTENTION_PACKAGES[attention])


def _require_cuda(setting: str, package: str) -> None:
    if not torch.cuda.is_available() or importlib.util.find_spec(package) is None:
        missing = "a CUDA GPU" if not torch.cuda.is_available() else f"the {package} package"
        raise HubtuneError(f"recipe key {setting} needs a CUDA GPU and {package}; this machine lacks {missing}")
