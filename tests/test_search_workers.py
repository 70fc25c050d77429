"""hubtune search beyond one process: workers sharing one storage, a killed or stopped worker's trial found and run
again, resuming with the same command, pruning, --launch, --report and the search folder's rules."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from pipelines import Recipe
from pipelines.commands.cli import main

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SPACE = {
    "training.learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
    "training.per_device_train_batch_size": {"choices": [8, 16, 32]},
    # Short heartbeats: a lost trial is found seconds after its worker died.
    "heartbeat": {"interval": 1, "grace_period": 3, "retries": 1},
}


def _recipe_file(recipe_values, tmp_path, search, **training) -> str:
    values = dict(recipe_values, search=search)
    values["training"] = {**values["training"], "num_train_epochs": 1, **training}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return str(path)


def _worker(recipe: str, out: Path, trials: int, *extra: str) -> subprocess.Popen:
    """`hubtune search` in a process of its own, as a user or a SLURM array task starts a worker."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "pipelines", "search", recipe, "--trials", str(trials), "--metric", "loss"]
    return subprocess.Popen(
        [*command, "--out", str(out), *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _study(out: Path) -> optuna.Study:
    return optuna.load_study(study_name="tiny-sentiment", storage=f"sqlite:///{out.resolve() / 'study.db'}")


def _wait_for(condition, process: subprocess.Popen, what: str, limit_s: float = 300) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        assert process.poll() is None, f"the worker ended before {what}: {process.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, f"no {what} within {limit_s} s"
        time.sleep(0.2)


def _states(study: optuna.Study) -> dict[int, str]:
    return {trial.number: trial.state.name for trial in study.get_trials(deepcopy=False)}


def test_two_workers_on_one_storage_share_the_trials_and_one_report_covers_them(recipe_values, tmp_path):
    recipe, out = _recipe_file(recipe_values, tmp_path, SPACE), tmp_path / "search"
    workers = [_worker(recipe, out, 6), _worker(recipe, out, 6)]
    for worker in workers:
        _, stderr = worker.communicate(timeout=600)
        assert worker.returncode == 0, stderr[-3000:]
    study = _study(out)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 6 == len(study.trials)  # six trials between them, none more
    # Each trial ran once, in its own folder, and both workers ran some.
    runs = [trial.user_attrs["run"] for trial in complete]
    assert len(set(runs)) == 6 and {Path(run).name for run in runs} == {f"trial-{t.number}" for t in complete}
    assert len({trial.user_attrs["worker"] for trial in complete}) == 2
    assert len({trial.params["training.learning_rate"] for trial in complete}) == 6
    for trial in complete:
        assert json.loads((Path(trial.user_attrs["run"]) / "all_results.json").read_text())["eval_loss"] == trial.value
    summary = json.loads((out / "search.json").read_text())
    assert summary["counts"]["complete"] == 6 and len(summary["trials"]) == 6
    assert summary["best"]["number"] == min(complete, key=lambda t: t.value).number
    assert (out / "search.md").read_text().count("| trial-") == 6


def test_a_killed_search_resumes_with_the_same_command_and_its_best_recipe_reproduces_the_best_trial(
    recipe_values, tmp_path, capsys
):
    recipe, out = _recipe_file(recipe_values, tmp_path, SPACE), tmp_path / "search"
    worker = _worker(recipe, out, 4)

    def two_done_and_one_running() -> bool:
        if not (out / "search.json").exists():  # written after the first trial, in a study made by then
            return False
        states = list(_states(_study(out)).values())
        return states.count("COMPLETE") >= 2 and "RUNNING" in states

    _wait_for(two_done_and_one_running, worker, "two trials and a third running")
    worker.send_signal(signal.SIGKILL)
    worker.communicate()
    lost = next(number for number, state in _states(_study(out)).items() if state == "RUNNING")

    # The same command again: the lost trial is found by its missing heartbeat, failed, and run again.
    assert main(["search", recipe, "--trials", "4", "--metric", "loss", "--out", str(out)]) == 0
    study = _study(out)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 4
    assert _states(study)[lost] == "FAIL"
    retry = next(t for t in study.trials if t.system_attrs.get("failed_trial") == lost)
    assert retry.state == optuna.trial.TrialState.COMPLETE
    assert retry.params == study.trials[lost].params
    table = (out / "search.md").read_text()
    assert f"| {retry.number} (retry of {lost}) |" in table
    assert "failed: its worker was lost (no heartbeat)" in table

    best = min(complete, key=lambda t: t.value)
    printed = capsys.readouterr().out
    assert json.loads(printed[printed.rfind("\n{\n") + 1 :])["best"]["number"] == best.number
    trained = Recipe.from_yaml(out / "best_recipe.yaml", [f"output_dir={tmp_path / 'best-run'}"]).run()
    assert trained["eval_loss"] == pytest.approx(best.value)


def test_sigterm_stops_a_worker_as_train_does_and_its_trial_is_queued_to_run_again(recipe_values, tmp_path):
    recipe, out = _recipe_file(recipe_values, tmp_path, SPACE, num_train_epochs=20), tmp_path / "search"
    worker = _worker(recipe, out, 2)
    _wait_for(lambda: (out / "trial-0" / ".hubtune-run").exists(), worker, "the first trial training")
    time.sleep(1)
    worker.send_signal(signal.SIGTERM)
    _, stderr = worker.communicate(timeout=120)
    assert worker.returncode == 143
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("hubtune: terminated: trial 0 was stopped and queued to run again; continue the search")
    study = _study(out)
    assert _states(study) == {0: "FAIL", 1: "WAITING"}
    assert study.trials[1].params == study.trials[0].params
    assert "interrupted" in json.loads((out / "search.json").read_text())["trials"][0]["error"]


def test_the_median_pruner_stops_trials_with_a_learning_rate_that_cannot_learn(recipe_values, tmp_path, capsys):
    space = {
        "training.learning_rate": {"choices": [5e-3, 1e-9]},
        # This seed draws the learning rate that learns first, then the one that cannot four times in five.
        "sampler": {"name": "random", "seed": 5},
        "pruner": {"name": "median", "n_startup_trials": 1},
    }
    recipe = _recipe_file(recipe_values, tmp_path, space, eval_strategy="steps", eval_steps=5)
    out = tmp_path / "search"
    assert main(["search", recipe, "--trials", "6", "--metric", "loss", "--out", str(out)]) == 0
    trials = json.loads((out / "search.json").read_text())["trials"]
    first_good = next(t["number"] for t in trials if t["params"]["training.learning_rate"] == 5e-3)
    assert trials[0]["number"] == first_good == 0, "the seed should draw the learning rate that learns first"
    pruned = [t for t in trials if t["state"] == "pruned"]
    assert len(pruned) == 4, [t["params"] for t in trials]
    for trial in trials:
        if trial["params"]["training.learning_rate"] == 1e-9:
            assert trial["state"] == "pruned"
            # Stopped at the first evaluation, not at the end of the 15 steps of the epoch.
            assert trial["pruned_at_step"] == 5
            run = Path(trial["run"])
            assert json.loads((run / "pruned.json").read_text())["pruned_at_step"] == 5
            assert json.loads((run / "trainer_state.json").read_text())["global_step"] == 5
        else:
            assert trial["state"] == "complete"
    summary = json.loads((out / "search.json").read_text())
    assert summary["counts"] == {
        "complete": 6 - len(pruned),
        "pruned": len(pruned),
        "failed": 0,
        "running": 0,
        "waiting": 0,
    }
    assert "pruned at step 5" in (out / "search.md").read_text()


def test_a_journal_storage_and_the_report_command(recipe_values, tmp_path, capsys):
    recipe, out = _recipe_file(recipe_values, tmp_path, SPACE), tmp_path / "search"
    journal = tmp_path / "shared" / "search.journal"
    journal.parent.mkdir()
    storage = f"journal:{journal}"
    assert main(["search", recipe, "--trials", "2", "--metric", "loss", "--out", str(out), "--storage", storage]) == 0
    assert journal.stat().st_size > 0 and not (out / "study.db").exists()
    written = json.loads((out / "search.json").read_text())
    for name in ("search.json", "search.md", "best_recipe.yaml"):
        (out / name).unlink()
    capsys.readouterr()
    assert main(["search", "--report", str(out)]) == 0
    assert json.loads((out / "search.json").read_text()) == written
    assert (out / "best_recipe.yaml").is_file()
    printed = json.loads(capsys.readouterr().out)
    assert printed["counts"]["complete"] == 2
    # The same command with more trials continues the study; another search may not use its folder.
    assert main(["search", recipe, "--trials", "3", "--metric", "loss", "--out", str(out), "--storage", storage]) == 0
    assert json.loads((out / "search.json").read_text())["counts"]["complete"] == 3
    capsys.readouterr()
    other = ["search", recipe, "training.seed=7", "--trials", "3", "--metric", "loss", "--out", str(out)]
    assert main([*other, "--storage", storage]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"hubtune: error: search folder '{out}' holds another search (its recipe differ")


def test_launched_trials_run_on_two_processes_and_their_metric_reaches_the_study(recipe_values, tmp_path, capsys):
    recipe, out = _recipe_file(recipe_values, tmp_path, SPACE), tmp_path / "search"
    launch = f"{ROOT / '.venv/bin/accelerate'} launch --config_file {ROOT / 'accelerate_configs/cpu_2proc.yaml'}"
    assert main(["search", recipe, "--trials", "1", "--metric", "loss", "--out", str(out), "--launch", launch]) == 0
    trial = json.loads((out / "search.json").read_text())["trials"][0]
    results = json.loads((Path(trial["run"]) / "all_results.json").read_text())
    assert trial["state"] == "complete" and trial["value"] == results["eval_loss"]
    assert results["training_setup"]["num_processes"] == 2
    run_recipe = yaml.safe_load((Path(trial["run"]) / "recipe.yaml").read_text())
    assert run_recipe["training"]["learning_rate"] == trial["params"]["training.learning_rate"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["--storage", "sqlite:////no/such/folder/study.db"],
            "--storage 'sqlite:////no/such/folder/study.db' cannot be opened",
        ),
        (["--storage", "study.db"], "--storage 'study.db' is neither a database URL"),
        (
            ["--storage", "journal:/no/such/folder/j.log"],
            "--storage 'journal:/no/such/folder/j.log': the journal file's folder",
        ),
        (["--launch", " "], "--launch is empty"),
    ],
)
def test_a_bad_storage_or_launch_is_one_line_and_writes_nothing(recipe_values, tmp_path, capsys, arguments, message):
    recipe, out = _recipe_file(recipe_values, tmp_path, SPACE), tmp_path / "search"
    assert main(["search", recipe, "--out", str(out), *arguments]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"hubtune: error: {message}") and "\n" not in error
    assert not out.exists()
