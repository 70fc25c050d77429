"""A recipe's `plugins`: modules outside pipelines/ that register a task and a strategy on import, so that the CLI
trains, predicts and evaluates a recipe that names them, and a run folder's recipe imports them again."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from conftest import make_recipe_values
from safetensors.torch import load_file

from pipelines import HubtuneError, Recipe, load_recipe_config
from pipelines.commands.cli import main
from pipelines.registry import STRATEGIES, TASKS
from pipelines.runs.card import model_card

TASK_MODULE = '''
    """A user's task: text classification under a name of its own, registered when the module is imported."""
    from pipelines import register_task
    from pipelines.tasks.text_classification import TextClassification


    @register_task
    class ReviewPolarity(TextClassification):
        name = "review-polarity"
'''

STRATEGY_MODULE = '''
    """A user's strategy, BitFit: only the biases and the new head train."""
    from pipelines import register_strategy
    from pipelines.adapt.strategies import Strategy


    @register_strategy
    class HeadAndBiases(Strategy):
        name = "head_and_biases"

        def apply(self, model, groups, peft_task_type):
            for name, parameter in model.named_parameters():
                parameter.requires_grad_(name.endswith(".bias") or groups.by_parameter[name] == "head")
            return model
'''

PLUGINS = {"user_review_task": TASK_MODULE, "user_bitfit_strategy": STRATEGY_MODULE}


def forget_plugins() -> None:
    """What a new process starts with: neither the modules imported nor their entries registered."""
    TASKS.unregister("review-polarity")
    STRATEGIES.unregister("head_and_biases")
    for module in PLUGINS:
        sys.modules.pop(module, None)


@pytest.fixture
def plugin_folder(tmp_path, monkeypatch):
    """The two plugin modules in a folder on the import path (as PYTHONPATH puts it there)."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    for module, source in PLUGINS.items():
        (folder / f"{module}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(folder))
    forget_plugins()
    yield folder
    forget_plugins()


def plugin_recipe(tiny_bert, sentiment_files, run_dir: Path) -> dict:
    values = make_recipe_values(tiny_bert, sentiment_files, run_dir)
    values.update(task="review-polarity", plugins=list(PLUGINS))
    values["adapt"] = {"strategy": "head_and_biases"}
    return values


def test_the_cli_trains_predicts_and_evaluates_a_recipe_of_plugins(plugin_folder, tiny_bert, sentiment_files, capsys):
    run_dir = plugin_folder.parent / "run"
    recipe = plugin_folder.parent / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(plugin_recipe(tiny_bert, sentiment_files, run_dir)))
    assert main(["train", str(recipe)]) == 0
    printed = capsys.readouterr().out.splitlines()  # the JSON the command prints after the Trainer's log lines
    trained = json.loads("\n".join(printed[printed.index("{") :]))
    assert trained["test_accuracy"] >= 0.9
    assert yaml.safe_load((run_dir / "recipe.yaml").read_text())["plugins"] == list(PLUGINS)
    # The strategy chose the parameters: no backbone weight matrix changed, the biases and the head did.
    before, after = load_file(str(tiny_bert / "model.safetensors")), load_file(str(run_dir / "model.safetensors"))
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert "classifier.weight" in changed and any(name.startswith("bert.encoder.") for name in changed)
    assert all(name.endswith(".bias") or name.startswith("classifier.") for name in changed), sorted(changed)

    forget_plugins()  # as `hubtune predict` in a new process: the run folder's recipe imports the plugins
    assert main(["predict", str(run_dir), "--json", "a wonderful film", "dull and boring"]) == 0
    labels = [json.loads(line)["label"] for line in capsys.readouterr().out.splitlines()]
    assert labels == ["positive", "negative"]
    assert "review-polarity" in TASKS and "head_and_biases" in STRATEGIES

    forget_plugins()
    assert main(["evaluate", str(run_dir)]) == 0
    assert json.loads(capsys.readouterr().out)["test_accuracy"] == pytest.approx(trained["test_accuracy"], abs=1e-6)
    card = model_card(run_dir, load_recipe_config(run_dir / "recipe.yaml"), "text-classification")
    assert "The recipe imports `user_review_task`, `user_bitfit_strategy` (recipe key `plugins`)" in card


def test_the_python_api_imports_the_plugins_too(plugin_folder, tiny_bert, sentiment_files):
    values = plugin_recipe(tiny_bert, sentiment_files, plugin_folder.parent / "run")
    values["training"]["num_train_epochs"] = 1
    result = Recipe.from_dict(values).run()
    assert TASKS.get("review-polarity").__module__ == "user_review_task"
    assert result.trainer.args.num_train_epochs == 1 and result["trainable_parameters"] < result["total_parameters"]


def test_a_plugin_that_fails_to_import_is_one_line_naming_the_key_and_module(
    plugin_folder, recipe_values, tmp_path, capsys
):
    with pytest.raises(HubtuneError) as caught:
        load_recipe_config(values={**recipe_values, "plugins": ["user_review_task", "no_such_plugin"]})
    assert str(caught.value) == (
        "recipe key 'plugins' names module 'no_such_plugin', which failed to import: "
        "ModuleNotFoundError: No module named 'no_such_plugin'"
    )
    (plugin_folder / "broken_plugin.py").write_text("raise RuntimeError('needs a licence\\nfile')\n")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({**recipe_values, "plugins": ["broken_plugin"]}))
    assert main(["train", str(recipe)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "hubtune: error: recipe key 'plugins' names module 'broken_plugin', which failed to import: "
        "RuntimeError: needs a licence file"
    ]
    with pytest.raises(HubtuneError, match=r"recipe key 'plugins' must be a list, got 'user_review_task'"):
        load_recipe_config(values={**recipe_values, "plugins": "user_review_task"})
