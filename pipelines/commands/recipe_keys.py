"""`hubtune recipe-keys TASK`: every key a recipe of that task can set, with its type, default and help."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from pipelines.config import TRAINING_DEFAULTS, AdaptConfig, RecipeConfig
from pipelines.registry import STRATEGIES


@dataclasses.dataclass(frozen=True)
class RecipeKey:
    key: str
    type: str
    default: str
    help: str


def _dataclass_in(annotation: Any) -> type | None:
    """The dataclass an annotation holds (`X` or `X | None`), if any."""
    candidates = typing.get_args(annotation) or (annotation,)
    return next((c for c in candidates if isinstance(c, type) and dataclasses.is_dataclass(c)), None)


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _default(spec: dataclasses.Field) -> str:
    if spec.default is not dataclasses.MISSING:
        return repr(spec.default)
    return repr(spec.default_factory()) if spec.default_factory is not dataclasses.MISSING else "required"


def _strategy_keys() -> dict[str, tuple[type, list[str]]]:
    """Each strategy's own `adapt` key -> the config class of the first strategy that takes it, and all of them."""
    owners: dict[str, tuple[type, list[str]]] = {}
    shared = {spec.name for spec in dataclasses.fields(AdaptConfig)}
    for name, strategy in STRATEGIES.items():
        for spec in dataclasses.fields(strategy.adapt_config):
            if spec.name not in shared:
                owners.setdefault(spec.name, (strategy.adapt_config, []))[1].append(name)
    return owners


def recipe_keys(task: str) -> list[RecipeKey]:
    """The keys of a `task` recipe in the order a recipe writes them; `data` and `generation` are the task's own
    sections, `adapt` the keys every strategy takes followed by each strategy's own."""
    from pipelines.tasks import get_task

    data_class = get_task(task).data_config
    generation_class = get_task(task).generation_section
    keys: list[RecipeKey] = []

    def walk(cls: type, prefix: str, note: str = "", only: str | None = None) -> None:
        hints = typing.get_type_hints(cls)
        for spec in dataclasses.fields(cls):
            if only is not None and spec.name != only:
                continue
            key, annotation = prefix + spec.name, hints[spec.name]
            if cls is RecipeConfig and spec.name == "adapt":
                walk(AdaptConfig, "adapt.")
                for name, (owner, strategies) in _strategy_keys().items():
                    walk(owner, "adapt.", f" (adapt.strategy: {', '.join(strategies)})", only=name)
                continue
            if cls is RecipeConfig and spec.name == "generation":
                if generation_class is not None:  # a task that does not generate takes no such section
                    walk(generation_class, "generation.")
                continue
            nested = data_class if cls is RecipeConfig and spec.name == "data" else _dataclass_in(annotation)
            if nested is not None:
                walk(nested, key + ".", note)
            elif cls is RecipeConfig and spec.name == "training":
                defaults = ", ".join(f"{k}={v}" for k, v in TRAINING_DEFAULTS.items())
                keys.append(
                    RecipeKey(
                        "training.*",
                        "TrainingArguments field",
                        f"hubtune's: {defaults}",
                        "any transformers TrainingArguments field, plus 'resume' (continue from the "
                        "last complete checkpoint)",
                    )
                )
            else:
                help_text = spec.metadata.get("help", "")
                keys.append(RecipeKey(key, _type_name(annotation), _default(spec), help_text + note))

    walk(RecipeConfig, "")
    return keys


def format_keys(keys: list[RecipeKey]) -> str:
    width = max(len(k.key) for k in keys)
    return "\n".join(f"{k.key:<{width}}  {k.help} [{k.type}, default {k.default}]" for k in keys)
