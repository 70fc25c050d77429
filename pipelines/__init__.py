"""hubtune: transfer learning recipes on the Hugging Face stack.

The names below load on first use (PEP 562), so that `import pipelines` and `hubtune --help` do not import
torch and transformers (seconds) before they are needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.config import RecipeConfig, load_recipe_config
    from pipelines.errors import HubtuneError
    from pipelines.runner.recipe import Recipe

__all__ = ["HubtuneError", "Recipe", "RecipeConfig", "load_recipe_config"]

_HOMES = {
    "HubtuneError": "pipelines.errors",
    "Recipe": "pipelines.runner.recipe",
    "RecipeConfig": "pipelines.config",
    "load_recipe_config": "pipelines.config",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'pipelines' has no attribute '{name}'")
    return getattr(importlib.import_module(_HOMES[name]), name)
