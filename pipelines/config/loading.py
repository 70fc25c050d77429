"""Loading a recipe: YAML and overrides -> typed sections -> the checks that span sections.

The task's own rules run through the task registry (`Task.check_recipe`) and its data section's
(`DataConfig.check_recipe`), the adapt strategy's through the strategy registry (`Strategy.check_recipe`); nothing
here imports a task or a strategy. Nothing here looks at the machine either: CUDA and bitsandbytes are checked
when a run starts training, so a run folder reads back anywhere.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import typing
from pathlib import Path
from typing import Any

import yaml

from pipelines.config.adapt import AdaptConfig
from pipelines.config.builder import build, closest, coerce
from pipelines.config.legacy import upgrade_adapt
from pipelines.config.sections import DataConfig, GenerationSection, RecipeConfig
from pipelines.config.training import TRAINING_DEFAULTS, validate_training
from pipelines.config.yaml_io import apply_overrides, read_recipe_file
from pipelines.errors import HubtuneError
from pipelines.registry import STRATEGIES, TASKS, import_plugins

logger = logging.getLogger(__name__)


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
    config.adapt.validate()
    STRATEGIES.get(config.adapt.strategy).check_recipe(config)
    TASKS.get(config.task).check_recipe(config)
    config.data.validate()
    if config.generation is not None:
        config.generation.validate()
    config.hub.validate()
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
    adapt = tree.pop("adapt", None) or {}
    generation = tree.pop("generation", None)
    config = build(RecipeConfig, tree)
    # Before the task and the strategy are looked up: importing a plugin registers the ones it defines.
    import_plugins(config.plugins)
    config.training = training
    config.adapt = build_adapt_config(adapt)
    config.data = build_data_config(config.task, data)
    config.generation = build_generation_config(config.task, generation)
    if config.generation is not None:
        config.generation.take_training_keys(config.training)
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


def build_generation_config(task: str, values: Any) -> GenerationSection | None:
    """The `generation` section as the task's own class (`Task.generation_section`), its defaults where the recipe
    has none; None for a task that does not generate, which takes no such section."""
    section_class = getattr(TASKS.get(task), "generation_section", None)
    if section_class is None:
        if values:
            owners = sorted(name for name, other in TASKS.items() if getattr(other, "generation_section", None))
            raise HubtuneError(
                f"recipe section 'generation' sets how a model decodes, for task {', '.join(owners)}; task '{task}' "
                "does not generate (recipe key 'task'): remove the section"
            )
        return None
    if values is not None and not isinstance(values, dict):
        raise HubtuneError(f"recipe section 'generation' must be a mapping, got {values!r}")
    return build(section_class, values or {}, "generation.")


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _left_at_default(adapt_class: type, key: str, value: Any) -> bool:
    return value is None or getattr(build(adapt_class, {key: value}, "adapt."), key) == getattr(adapt_class(), key)


def build_adapt_config(values: Any) -> AdaptConfig:
    """The `adapt` section as its strategy's own config class (`Strategy.adapt_config`, found through the strategy
    registry), after the legacy LoRA form is rewritten.

    A key of another strategy is checked against that strategy's section and left out: a recipe may keep the
    settings of strategies it switches to by an override (and every recipe.yaml of an earlier hubtune holds every
    strategy's keys). Set to anything but its default, a warning says it is unused.
    """
    if not isinstance(values, dict):
        raise HubtuneError(f"recipe section 'adapt' must be a mapping, got {values!r}")
    values = upgrade_adapt(values)
    name = coerce(values.get("strategy", "full"), str, "adapt.strategy")
    adapt_class = STRATEGIES.get(name).adapt_config
    names = _field_names(adapt_class)
    own = {}
    for key, value in values.items():
        if key in names:
            own[key] = value
            continue
        every = {other: strategy.adapt_config for other, strategy in STRATEGIES.items()}
        owners = {other: cls for other, cls in every.items() if key in _field_names(cls)}
        if not owners:
            keys = set().union(*map(_field_names, every.values()))
            raise HubtuneError(f"unknown recipe key 'adapt.{key}'{closest(key, keys, 'adapt.')}")
        if not all(_left_at_default(cls, key, value) for cls in owners.values()):
            logger.warning(
                "recipe key 'adapt.%s' is for strategy %s; 'adapt.strategy: %s' leaves it unused",
                key,
                ", ".join(sorted(owners)),
                name,
            )
    return build(adapt_class, own, "adapt.")


def dump_recipe_config(config: RecipeConfig, path: Path, notes: typing.Sequence[str] = ()) -> None:
    """Write `config` as a recipe YAML that `load_recipe_config` reads back; `notes` become comment lines at the
    top (what the recipe cannot hold, such as the custom pieces a run took from Python)."""
    header = "".join(f"# {note}\n" for note in notes)
    path.write_text(header + yaml.safe_dump(config.to_dict(), sort_keys=False))
