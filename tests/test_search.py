"""hubtune search: Optuna trials, each a full hubtune run in its own folder, a summary, a plot and a best recipe."""

from __future__ import annotations

import json

import pytest
import yaml

from pipelines import HubtuneError, Recipe
from pipelines.commands.cli import main
from pipelines.runner.search_plan import load_search

# Trains models for seconds each: `make test-fast` leaves this module out.
pytestmark = pytest.mark.slow

SPACE = {
    "training.learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
    "training.per_device_train_batch_size": {"choices": [8, 16, 32]},
    "adapt.layer_decay": {"low": 0.5, "high": 1.0},
    "sampler": {"seed": 3},
}


def _recipe_file(recipe_values, tmp_path, search) -> str:
    values = dict(recipe_values, search=search)
    values["training"] = dict(values["training"], num_train_epochs=1)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return str(path)


def test_three_trials_write_their_runs_the_summary_the_plot_and_a_trainable_best_recipe(
    recipe_values, tmp_path, capsys
):
    out = tmp_path / "search"
    recipe = _recipe_file(recipe_values, tmp_path, SPACE)
    # The tiny task saturates accuracy at 1 epoch; the validation loss tells the trials apart.
    assert main(["search", recipe, "--trials", "3", "--metric", "loss", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out  # the Trainer's printed logs, then the command's JSON
    printed = json.loads(stdout[stdout.rfind("\n{\n") + 1 :])
    summary = json.loads((out / "search.json").read_text())
    assert summary["metric"] == printed["metric"] == "eval_loss"
    assert summary["direction"] == "minimize"  # the task's rule: lower loss is better
    trials = summary["trials"]
    assert [t["number"] for t in trials] == [0, 1, 2]
    for trial in trials:
        assert trial["state"] == "complete"
        assert sorted(trial["params"]) == sorted(k for k in SPACE if k != "sampler")
        assert trial["run"] == str(out / f"trial-{trial['number']}")
        run_results = json.loads((out / f"trial-{trial['number']}" / "all_results.json").read_text())
        assert run_results["eval_loss"] == trial["value"]
        # The trial's values are the run's: its recipe.yaml records them.
        run_recipe = yaml.safe_load((out / f"trial-{trial['number']}" / "recipe.yaml").read_text())
        assert run_recipe["training"]["learning_rate"] == trial["params"]["training.learning_rate"]
        assert run_recipe["adapt"]["layer_decay"] == trial["params"]["adapt.layer_decay"]
    # Three different draws of the seeded sampler.
    assert len({t["params"]["training.learning_rate"] for t in trials}) == 3
    assert len({t["value"] for t in trials}) == 3
    best = min(trials, key=lambda t: t["value"])
    assert summary["best"]["number"] == printed["best"]["number"] == best["number"]

    table = (out / "search.md").read_text()
    assert "| trial | training.learning_rate | training.per_device_train_batch_size | adapt.layer_decay |" in table
    assert f"**{best['value']:.4f}** (best)" in table
    assert (out / "search.png").stat().st_size > 1000

    best_values = yaml.safe_load((out / "best_recipe.yaml").read_text())
    assert "search" not in best_values
    assert best_values["training"]["learning_rate"] == best["params"]["training.learning_rate"]
    assert (
        best_values["training"]["per_device_train_batch_size"] == best["params"]["training.per_device_train_batch_size"]
    )
    assert best_values["adapt"]["layer_decay"] == best["params"]["adapt.layer_decay"]
    # The rest is the recipe as written.
    assert best_values["output_dir"] == recipe_values["output_dir"]
    assert best_values["training"]["logging_steps"] == recipe_values["training"]["logging_steps"]
    trained = Recipe.from_yaml(out / "best_recipe.yaml", [f"output_dir={tmp_path / 'best-run'}"])
    assert trained.config.training["learning_rate"] == best["params"]["training.learning_rate"]
    results = trained.run()
    assert results["eval_loss"] == pytest.approx(best["value"])  # the same seeded run again


@pytest.mark.parametrize(
    ("search", "message"),
    [
        (
            {"training.learnin_rate": {"low": 1e-5, "high": 1e-3}},
            "search key 'training.learnin_rate' = 1e-05: unknown recipe key 'training.learnin_rate'; "
            "did you mean 'training.learning_rate'?",
        ),
        (
            {"adapt.peft.rank": {"choices": [4, 8]}},
            "search key 'adapt.peft.rank' = 4: unknown recipe key 'adapt.peft.rank'; valid keys: alpha, dropout, "
            "feedforward_modules, method, quantize, r, target_modules, use_dora, use_rslora",
        ),
        (
            {"training.learning_rate": {"low": 1e-3, "high": 1e-5}},
            "search range 'training.learning_rate': low 0.001 is above high 1e-05",
        ),
        (
            {"training.per_device_train_batch_size": {"choices": [8, 0]}},
            "search key 'training.per_device_train_batch_size' = 0: recipe key "
            "'training.per_device_train_batch_size' must be at least 1, got 0",
        ),
        (
            {"training.num_train_epochs": {"low": 1, "hihg": 3}},
            "unknown recipe key 'search.training.num_train_epochs.hihg'; "
            "did you mean 'search.training.num_train_epochs.high'?",
        ),
        (
            {"training.learning_rate": {"low": 0, "high": 1e-3, "log": True}},
            "search range 'training.learning_rate': a log range needs low above 0, got 0",
        ),
        (
            {"adapt.n": {"low": 1, "high": 2.5, "type": "int"}},
            "search range 'adapt.n' has type int; low, high and step must be whole numbers",
        ),
        ({"output_dir": {"choices": ["a", "b"]}}, "search key 'output_dir' cannot be searched"),
        (
            {"training.learning_rate": {"low": 1e-5, "high": 1e-3}, "direction": "up"},
            "search option 'direction' must be minimize or maximize, got 'up'",
        ),
        ({"direction": "minimize"}, "recipe section 'search' has no ranges"),
        (
            {"training.learning_rate": {"low": 1e-5, "high": 1e-3}, "pruner": {"name": "mean"}},
            "recipe key 'search.pruner.name' must be one of median, hyperband, none, got 'mean'",
        ),
        (
            {"training.learning_rate": {"low": 1e-5, "high": 1e-3}, "pruner": {"name": "median", "n_warmup": 2}},
            "unknown recipe key 'search.pruner.n_warmup'; did you mean 'search.pruner.n_warmup_steps'?",
        ),
        (
            {
                "training.learning_rate": {"low": 1e-5, "high": 1e-3},
                "pruner": {"name": "hyperband", "n_startup_trials": 2},
            },
            "unknown recipe key 'search.pruner.n_startup_trials'",
        ),
        (
            {
                "training.learning_rate": {"low": 1e-5, "high": 1e-3},
                "pruner": {"name": "median", "n_startup_trials": 0},
            },
            "recipe key 'search.pruner.n_startup_trials' must be at least 1, got 0",
        ),
        (
            {"training.learning_rate": {"low": 1e-5, "high": 1e-3}, "pruner": {"n_startup_trials": 2}},
            "search option 'pruner' needs 'name' (median, hyperband, none)",
        ),
        (
            {"training.learning_rate": {"low": 1e-5, "high": 1e-3}, "heartbeat": {"interval": 10, "grace_period": 5}},
            "recipe key 'search.heartbeat.grace_period' (5) must be longer than 'search.heartbeat.interval' (10)",
        ),
    ],
)
def test_a_bad_search_section_is_one_line_naming_the_key(recipe_values, tmp_path, capsys, search, message):
    recipe = _recipe_file(recipe_values, tmp_path, search)
    with pytest.raises(HubtuneError) as raised:
        load_search(recipe)
    assert str(raised.value).startswith(message), str(raised.value)
    assert main(["search", recipe, "--trials", "1", "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"hubtune: error: {message}") and "\n" not in error
    assert not (tmp_path / "out").exists()  # checked before anything is written


def test_a_pruner_needs_evaluations_during_training_and_the_trials_in_this_process(recipe_values, tmp_path, capsys):
    space = {"training.learning_rate": {"low": 1e-5, "high": 1e-3}, "pruner": {"name": "median"}}
    values = dict(recipe_values, training={**recipe_values["training"], "eval_strategy": "no"})
    with pytest.raises(HubtuneError, match="'training.eval_strategy' is 'no'; set it to steps or epoch"):
        load_search(_recipe_file(values, tmp_path, space))
    recipe = _recipe_file(recipe_values, tmp_path, space)
    assert main(["search", recipe, "--out", str(tmp_path / "s"), "--launch", "accelerate launch"]) == 2
    assert "with --launch pruning is unavailable" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_search_help_documents_storage_launch_and_the_pruner_keys(capsys):
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    text = capsys.readouterr().out
    for words in (
        "--storage URL",
        "journal:PATH",
        "--launch COMMAND",
        "--report DIR",
        "pruner: {name: median",
        "n_startup_trials",
        "reduction_factor",
        "heartbeat: {interval",
    ):
        assert words in text, words


def test_failed_trials_are_recorded_and_the_search_goes_on(recipe_values, tmp_path, capsys):
    # A column name passes the recipe check at load; the data shows it missing when each trial reads it.
    recipe = _recipe_file(recipe_values, tmp_path, {"data.text_column": {"choices": ["review"]}})
    out = tmp_path / "search"
    assert main(["search", recipe, "--trials", "2", "--out", str(out)]) == 2
    assert "none of the 2 trials finished" in capsys.readouterr().err
    summary = json.loads((out / "search.json").read_text())
    assert (summary["metric"], summary["direction"]) == ("eval_accuracy", "maximize")  # the task's default
    trials = summary["trials"]
    assert [t["state"] for t in trials] == ["failed", "failed"]
    assert all("review" in t["error"] for t in trials)
    assert "failed: " in (out / "search.md").read_text()
    assert not (out / "best_recipe.yaml").exists()


def test_train_refuses_a_recipe_with_a_search_section(recipe_values, tmp_path, capsys):
    recipe = _recipe_file(recipe_values, tmp_path, SPACE)
    assert main(["train", recipe]) == 2
    error = capsys.readouterr().err
    assert "recipe section 'search' holds ranges for `hubtune search RECIPE`" in error
    assert not (tmp_path / "run").exists()


def test_an_existing_search_folder_is_not_replaced(recipe_values, tmp_path, capsys):
    out = tmp_path / "search"
    out.mkdir()
    (out / "search.json").write_text("{}")
    assert main(["search", _recipe_file(recipe_values, tmp_path, SPACE), "--out", str(out)]) == 2
    assert f"search folder '{out}' already exists" in capsys.readouterr().err
    assert (out / "search.json").read_text() == "{}"


def test_a_trial_out_of_gpu_memory_fails_alone_and_the_best_is_among_the_others(recipe_values, tmp_path, monkeypatch):
    """A batch size the GPU cannot hold is a failed trial; the other trials still compete (no GPU here: a
    stand-in for Recipe.run that fails like an out-of-memory step and otherwise scores the learning rate)."""
    import torch

    from pipelines.runner import search as search_module

    def fake_run(self, callbacks=()):
        if self.config.training["per_device_train_batch_size"] == 32:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return {"eval_accuracy": 1.0 - abs(self.config.training["learning_rate"] - 1e-3)}

    monkeypatch.setattr(Recipe, "run", fake_run)
    space = {
        "training.learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
        "training.per_device_train_batch_size": {"choices": [16, 32]},
        "sampler": {"name": "random", "seed": 0},
    }
    result = search_module.search(_recipe_file(recipe_values, tmp_path, space), trials=8, out_dir=tmp_path / "s")
    failed = [t for t in result.trials if t.state == "failed"]
    done = [t for t in result.trials if t.state == "complete"]
    assert failed and done  # the seeded draws hit both batch sizes
    assert all(t.params["training.per_device_train_batch_size"] == 32 for t in failed)
    assert all("CUDA out of memory" in (t.error or "") for t in failed)
    assert result.best is max(done, key=lambda t: t.value or 0.0)
    best_values = yaml.safe_load((tmp_path / "s" / "best_recipe.yaml").read_text())
    assert best_values["training"]["learning_rate"] == result.best.params["training.learning_rate"]


def test_without_optuna_the_command_says_how_to_get_it(recipe_values, tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "optuna", None)  # what an install without the 'search' extra sees
    assert main(["search", _recipe_file(recipe_values, tmp_path, SPACE), "--out", str(tmp_path / "s")]) == 2
    assert "hubtune search needs Optuna: pip install 'hubtune[search]'" in capsys.readouterr().err
