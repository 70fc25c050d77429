"""The recipe layer: YAML plus dotted `key=value` overrides -> typed, validated sections.

A recipe has the sections `model`, `data`, `adapt`, `training` and `hub`. Each section is a dataclass built by
one typed builder (`builder`); `training` is passed through to `transformers.TrainingArguments`, whose field
names it is checked against. Every unknown or mistyped key is an error that names the key and the closest valid
one. The task a recipe names is reached through `pipelines.registry`, never imported: its data section class and
its rules come from there.
"""

from pipelines.config.adapt import (
    ADAPT_STRATEGIES,
    ADAPTER_STRATEGIES,
    PEFT_METHOD_KEYS,
    AdaptConfig,
    LoraConfig,
    LpFtConfig,
    PeftConfig,
    UnfreezeScheduleConfig,
)
from pipelines.config.builder import build, closest, factory, option, require_one_of
from pipelines.config.loading import build_data_config, dump_recipe_config, load_recipe_config
from pipelines.config.sections import DataConfig, HubConfig, ModelConfig, RecipeConfig
from pipelines.config.training import HUBTUNE_TRAINING_KEYS, TRACKERS, TRAINING_DEFAULTS
from pipelines.config.yaml_io import apply_overrides, read_recipe_file, read_yaml, set_dotted

__all__ = [
    "ADAPTER_STRATEGIES",
    "ADAPT_STRATEGIES",
    "HUBTUNE_TRAINING_KEYS",
    "PEFT_METHOD_KEYS",
    "TRACKERS",
    "TRAINING_DEFAULTS",
    "AdaptConfig",
    "DataConfig",
    "HubConfig",
    "LoraConfig",
    "LpFtConfig",
    "ModelConfig",
    "PeftConfig",
    "RecipeConfig",
    "UnfreezeScheduleConfig",
    "apply_overrides",
    "build",
    "build_data_config",
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
