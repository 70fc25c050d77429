"""The registries: built-in tasks come from the package's entry points, and the recipe layer finds a task by name
through them without importing the task package."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from pipelines import HubtuneError, load_recipe_config
from pipelines.registry import TASKS, Registry
from pipelines.tasks import Task, register_task
from pipelines.tasks.text_classification import TextClassification


def test_every_task_entry_point_names_its_class_by_the_class_name():
    points = {point.name: point for point in entry_points(group="hubtune.tasks")}
    assert len(points) == 8
    for name, point in points.items():
        task = point.load()
        assert issubclass(task, Task) and task.name == name
        assert TASKS.get(name) is task


@pytest.mark.slow  # a fresh interpreter imports transformers (seconds)
def test_loading_a_recipe_does_not_import_the_tasks_it_does_not_name(tmp_path):
    """The recipe layer reaches a task through the registry: only the named task's module is imported."""
    script = (
        "import sys\n"
        "from pipelines.config import load_recipe_config\n"
        "load_recipe_config(values={'name': 'r', 'task': 'text-classification', 'model': {'checkpoint': 'x'},"
        " 'data': {'files': {'train': 'a.csv'}}})\n"
        "print(sorted(m for m in sys.modules if m.startswith('pipelines.tasks.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    loaded = eval(out)  # a printed list of module names
    assert "pipelines.tasks.text_classification" in loaded
    assert not {"pipelines.tasks.object_detection", "pipelines.tasks.speech_seq2seq"} & set(loaded)


def test_an_unknown_task_names_the_recipe_key_and_the_closest_task(recipe_values):
    with pytest.raises(HubtuneError, match="unknown task 'text-clasification' in recipe key 'task'; did you mean"):
        load_recipe_config(values=recipe_values, overrides=["task=text-clasification"])


def test_a_name_registered_twice_with_another_class_is_refused():
    registry = Registry("task", "task", "hubtune.no-such-group")

    class First:
        name = "same"

    class Second:
        name = "same"

    registry.register(First)
    registry.register(First)  # the same class again is harmless (a module imported twice)
    with pytest.raises(HubtuneError, match="task 'same' is already registered"):
        registry.register(Second)
    registry.unregister("same")
    assert registry.register(Second) is Second and registry.get("same") is Second


def test_register_task_takes_task_classes_only():
    with pytest.raises(TypeError, match="takes a Task subclass"):
        register_task(object)  # type: ignore[arg-type]
    with pytest.raises(HubtuneError, match="already registered"):

        class Impostor(TextClassification):
            pass

        register_task(Impostor)  # same name, another class
