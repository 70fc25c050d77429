"""The adaptation strategies (recipe key `adapt.strategy`): one module per strategy, each a `Strategy` subclass.

The built-in strategies are registered through the `hubtune.strategies` entry points (pyproject.toml), so that
the recipe layer finds a strategy by name without importing this package; research code adds one at run time
with `register_strategy` (a `Strategy` subclass with a `name`, an `apply` and, for its own keys, an
`adapt_config`), after which recipes may name it.
"""

from __future__ import annotations

from typing import cast

from pipelines.adapt.strategies.base import GroupStrategy, ProbeStage, Strategy
from pipelines.config import AdaptConfig
from pipelines.registry import STRATEGIES

__all__ = [
    "STRATEGIES",
    "GroupStrategy",
    "ProbeStage",
    "Strategy",
    "register_strategy",
    "strategy_class",
    "strategy_for",
]


def strategy_class(name: str) -> type[Strategy]:
    """The strategy class `adapt.strategy` names; an unknown name is an error naming the recipe key."""
    return cast(type[Strategy], STRATEGIES.get(name))


def strategy_for(adapt: AdaptConfig) -> Strategy:
    """The strategy of a recipe's `adapt` section, holding that section."""
    return strategy_class(adapt.strategy)(adapt)


def register_strategy(strategy: type[Strategy]) -> type[Strategy]:
    """Make `strategy` (a `Strategy` subclass with a `name`) available to recipes; usable as a class decorator."""
    if not (isinstance(strategy, type) and issubclass(strategy, Strategy)):
        raise TypeError(f"register_strategy takes a Strategy subclass, got {strategy!r}")
    return cast(type[Strategy], STRATEGIES.register(strategy))
