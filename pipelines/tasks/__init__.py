"""The tasks: one module per task, each a `Task` subclass registered under its recipe key `task`.

The built-in tasks are registered through the `hubtune.tasks` entry points (pyproject.toml), so that the recipe
layer finds a task by name without importing this package; `TASKS` is the registry itself.
"""

from __future__ import annotations

from typing import cast

from pipelines.registry import TASKS
from pipelines.tasks.base import PreparedData, Task

__all__ = ["TASKS", "PreparedData", "Task", "get_task", "register_task"]


def get_task(name: str) -> type[Task]:
    """The task class a recipe's `task` names; an unknown name is an error naming the recipe key."""
    return cast(type[Task], TASKS.get(name))


def register_task(task: type[Task]) -> type[Task]:
    """Make `task` (a `Task` subclass with a `name`) available to recipes; usable as a class decorator."""
    if not (isinstance(task, type) and issubclass(task, Task)):
        raise TypeError(f"register_task takes a Task subclass, got {task!r}")
    return cast(type[Task], TASKS.register(task))
