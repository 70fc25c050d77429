"""The recipe layer: YAML plus dotted `key=value` overrides -> typed, validated sections.

A recipe has the sections `model`, `data`, `adapt`, `training` and `hub`, and `generation` for a task that
generates. Each section is a dataclass built by
one typed builder (`builder`); `training` is passed through to `transformers.TrainingArguments`, whose field
names it is checked against. Every unknown or mistyped key is an error that names the key and the closest valid
one. The task and the adapt strategy a recipe names are reached through `pipelines.registry`, never imported: the
task's data section class, the strategy's adapt section class and their rules come from there.
"""

from pipelines.config.adapt import AdaptConfig, UnfreezeScheduleConfig, check_adapter_numbers
from pipelines.config.builder import build, closest, factory, option, require_one_of
from pipelines.config.loading import (
    build_adapt_config,
    build_data_config,
    build_generation_config,
    dump_recipe_config,
    load_recipe_config,
)
from pipelines.config.sections import DataConfig, GenerationSection, HubConfig, ModelConfig, RecipeConfig
from pipelines.config.training import HUBTUNE_TRAINING_KEYS, TRACKERS, TRAINING_DEFAULTS
from pipelines.config.yaml_io import apply_overrides, read_recipe_file, read_yaml, set_dotted

__all__ = [
    "HUBTUNE_TRAINING_KEYS",
    "TRACKERS",
    "TRAINING_DEFAULTS",
    "AdaptConfig",
    "DataConfig",
    "GenerationSection",
    "HubConfig",
    "ModelConfig",
    "RecipeConfig",
    "UnfreezeScheduleConfig",
    "apply_overrides",
    "build",
    "build_adapt_config",
    "build_data_config",
    "build_generation_config",
    "check_adapter_numbers",
    "closest",
    "dump_recipe_config",
    "factory",
    "load_recipe_config",
    "option",
    "read_recipe_file",
    "read_yaml",
    "require_one_of",
    "set_dotted",
]
