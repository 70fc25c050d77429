"""hubtune: transfer learning recipes on the Hugging Face stack."""

from pipelines.config import RecipeConfig, load_recipe_config
from pipelines.errors import HubtuneError
from pipelines.recipe import Recipe

__all__ = ["HubtuneError", "Recipe", "RecipeConfig", "load_recipe_config"]
