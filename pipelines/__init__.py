"""hubtune: transfer learning recipes on the Hugging Face stack.

The public API is the names below (docs/api.md says what each is and which modules are internal). They load on
first use (PEP 562), so that `import pipelines` and `hubtune --help` do not import torch and transformers (seconds)
before they are needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.adapt.strategies import register_strategy
    from pipelines.config import RecipeConfig, load_recipe_config
    from pipelines.errors import HubtuneError
    from pipelines.runner.rank import RankReport, rank
    from pipelines.runner.recipe import Recipe
    from pipelines.runner.result import RunResult
    from pipelines.serving.predictor import Predictor
    from pipelines.tasks import register_task

__all__ = [
    "HubtuneError",
    "Predictor",
    "RankReport",
    "Recipe",
    "RecipeConfig",
    "RunResult",
    "load_recipe_config",
    "rank",
    "register_strategy",
    "register_task",
]

_HOMES = {
    "HubtuneError": "pipelines.errors",
    "Predictor": "pipelines.serving.predictor",
    "RankReport": "pipelines.runner.rank",
    "Recipe": "pipelines.runner.recipe",
    "RecipeConfig": "pipelines.config",
    "RunResult": "pipelines.runner.result",
    "load_recipe_config": "pipelines.config",
    "rank": "pipelines.runner.rank",
    "register_strategy": "pipelines.adapt.strategies",
    "register_task": "pipelines.tasks",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'pipelines' has no attribute '{name}'")
    return getattr(importlib.import_module(_HOMES[name]), name)
