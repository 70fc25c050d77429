"""Loading a recipe: YAML and overrides -> typed sections -> the checks that span sections.

The task's own rules run through the task registry (`Task.check_recipe`) and its data section's
(`DataConfig.check_recipe`); nothing here imports a task. Nothing here looks at the machine either: CUDA and
bitsandbytes are checked when a run starts training, so a run folder reads back anywhere.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from pathlib import Path
from typing import Any

import yaml

from pipelines.config.adapt import ADAPTER_STRATEGIES, validate_adapt
from pipelines.config.builder import build, closest
from pipelines.config.sections import DataConfig, RecipeConfig
from pipelines.config.training import TRAINING_DEFAULTS, validate_training
from pipelines.config.yaml_io import apply_overrides, read_recipe_file
from pipelines.errors import HubtuneError
from pipelines.registry import TASKS


def validate_recipe(config: RecipeConfig) -> None:
    """The checks that span sections, the task's (`Task.check_recipe`) and its data section's among them."""
    if not config.name:
        raise HubtuneError("recipe key 'name' is required")
    if config.name in (".", "..") or any(separator in config.name for separator in "/\\"):
        raise HubtuneError(
            f"recipe key 'name' must be a plain folder name (the run goes to runs/<name>), got "
            f"{config.name!r}; set 'output_dir' to put the run elsewhere"
        )
    if not config.model.checkpoint:
        raise HubtuneError("recipe key 'model.checkpoint' is required (a Hub id or a local folder)")
    validate_adapt(config.adapt, config.model.from_scratch)
    if config.model.architecture and config.adapt.strategy in ADAPTER_STRATEGIES:
        # A run folder of an adapter names its base by `model.checkpoint`, which here holds only the backbone's
        # weights under timm's names: a reload would start from a random backbone and predict garbage.
        raise HubtuneError(
            f"recipe key 'adapt.strategy: {config.adapt.strategy}' saves an adapter over 'model.checkpoint', which "
            "with 'model.architecture' is only the backbone, so the run could not be reloaded; use full, "
            "freeze_backbone or train_last_n"
        )
    TASKS.get(config.task).check_recipe(config)
    config.data.validate()
    if config.hub.push and not config.hub.repo_id:
        raise HubtuneError("'hub.push' is true but 'hub.repo_id' is not set")
    validate_training(config.training)
    config.data.check_recipe(config)


def load_recipe_config(
    path: str | Path | None = None, overrides: typing.Sequence[str] = (), values: dict[str, Any] | None = None
) -> RecipeConfig:
    """Read a recipe from YAML (or a dict), apply overrides, validate. Raises HubtuneError naming the key."""
    tree: dict[str, Any] = read_recipe_file(path) if path is not None else {}
    if values:
        tree = {**tree, **values}
    tree = apply_overrides(tree, overrides)
    if "search" in tree:
        # A search section holds ranges, not values: training it with its base values alone would look like a
        # search that ran. Only `hubtune search` reads it (pipelines.runner.search); it writes a trainable best recipe.
        raise HubtuneError(
            "recipe section 'search' holds ranges for `hubtune search RECIPE`; to train one set of values, "
            "train the best_recipe.yaml that a search writes, or remove the section"
        )
    training = {**TRAINING_DEFAULTS, **(tree.pop("training", None) or {})}
    data = tree.pop("data", None) or {}
    config = build(RecipeConfig, tree)
    config.training = training
    config.data = build_data_config(config.task, data)
    validate_recipe(config)
    return config


def build_data_config(task: str, values: Any) -> DataConfig:
    """The `data` section as the task's own data config class: the task is read first, and a key that belongs
    to another task's section is an error that says so."""
    data_class = TASKS.get(task).data_config
    if not isinstance(values, dict):
        raise HubtuneError(f"recipe section 'data' must be a mapping, got {values!r}")
    names = [f.name for f in dataclasses.fields(data_class)]
    for key in values:
        if key in names:
            continue
        owners = sorted(
            name for name, other in TASKS.items() if key in {f.name for f in dataclasses.fields(other.data_config)}
        )
        if owners:
            similar = difflib.get_close_matches(key, names, n=1, cutoff=0.8)  # a typo, not a lookalike
            raise HubtuneError(
                f"recipe key 'data.{key}' belongs to task {', '.join(owners)}, not to '{task}' "
                f"(recipe key 'task')" + (f"; did you mean 'data.{similar[0]}'?" if similar else "")
            )
        raise HubtuneError(f"unknown recipe key 'data.{key}'{closest(key, names, 'data.')} (task '{task}')")
    return build(data_class, values, "data.")


def dump_recipe_config(config: RecipeConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
