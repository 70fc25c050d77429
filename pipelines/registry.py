"""Registries of the pluggable parts: tasks (recipe key `task`) and adaptation strategies (`adapt.strategy`).

The recipe layer checks a recipe against the task and strategy it names without importing either: it asks these
registries, which sit below every other layer. Built-in entries are found through the package's entry points
(groups `hubtune.tasks` and `hubtune.strategies` in pyproject.toml), so they are imported only when a recipe
names them, and another installed package can add its own the same way. Research code registers a class at run
time with `TASKS.register(MyTask)` (or the decorator form), after which recipes may name it; a recipe's `plugins`
key lists modules that do so on import (`import_plugins`), so the CLI and a run folder's predict find them too.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import entry_points
from typing import Any

from pipelines.errors import HubtuneError


class Registry:
    """Name -> class, filled by `register` and, on first look-up, by the entry points of `group`."""

    def __init__(self, kind: str, recipe_key: str, group: str):
        self.kind = kind  # what an entry is, for error messages ("task", "adapt strategy")
        self.recipe_key = recipe_key  # the recipe key that names an entry
        self.group = group  # the entry-point group of built-in and third-party entries
        self._entries: dict[str, Any] = {}
        self._entry_points: dict[str, Any] | None = None

    def register(self, entry: Any = None, *, name: str | None = None) -> Any:
        """Register `entry` (a class with a `name`, or under `name`); usable as a decorator. Registering a name
        twice with another class is an error: a recipe must not silently change meaning."""

        def add(entry: Any) -> Any:
            key = name or entry.name
            known = self._entries.get(key)
            if known is not None and known is not entry:
                raise HubtuneError(f"{self.kind} '{key}' is already registered (by {known.__module__})")
            self._entries[key] = entry
            return entry

        return add if entry is None else add(entry)

    def unregister(self, name: str) -> None:
        """Remove a run-time registration (tests and notebooks that define a task more than once)."""
        self._entries.pop(name, None)

    def _installed(self) -> dict[str, Any]:
        if self._entry_points is None:
            self._entry_points = {point.name: point for point in entry_points(group=self.group)}
        return self._entry_points

    def names(self) -> list[str]:
        """Every registered and installed name, sorted (without importing the installed ones)."""
        return sorted({*self._installed(), *self._entries})

    def get(self, name: str) -> Any:
        """The class registered as `name`, loading an installed one on first use; an unknown name is an error
        naming the recipe key and the closest known name."""
        if name not in self._entries:
            point = self._installed().get(name)
            if point is None:
                match = difflib.get_close_matches(name, self.names(), n=1, cutoff=0.5)
                hint = f"; did you mean '{match[0]}'?" if match else f"; known: {', '.join(self.names())}"
                raise HubtuneError(f"unknown {self.kind} '{name}' in recipe key '{self.recipe_key}'{hint}")
            self.register(point.load(), name=name)
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __getitem__(self, name: str) -> Any:
        return self.get(name)

    def values(self) -> list[Any]:
        """Every entry's class, loading the installed ones."""
        return [self.get(name) for name in self.names()]

    def items(self) -> Iterator[tuple[str, Any]]:
        """Every entry, loading the installed ones (for listings and error messages that compare them)."""
        for name in self.names():
            yield name, self.get(name)

    def where(self, test: Callable[[Any], bool]) -> list[str]:
        """The names of the entries that pass `test` (what a capability error lists as the ones that can)."""
        return [name for name, entry in self.items() if test(entry)]


TASKS = Registry("task", "task", "hubtune.tasks")
STRATEGIES = Registry("adapt strategy", "adapt.strategy", "hubtune.strategies")


def import_plugins(modules: Sequence[str], recipe_key: str = "plugins") -> None:
    """Import each module named by the recipe key `recipe_key`; importing one registers the tasks and strategies it
    defines. A module already imported is not imported again."""
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as error:  # the plugin's own code may raise anything; the message names whose it is
            raise HubtuneError(
                f"recipe key '{recipe_key}' names module '{module}', which failed to import: "
                f"{type(error).__name__}: {' '.join(str(error).split())}"
            ) from error
