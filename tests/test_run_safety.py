"""A user's files are never lost: hubtune replaces only run folders it wrote, swaps a new run in only once it has
finished, and every interrupted run (Ctrl-C, SIGTERM, kill -9 while saving) resumes to the uninterrupted result."""

from __future__ import annotations

import copy
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers.runs import assert_same_run
from transformers import TrainerCallback

from pipelines import HubtuneError, Recipe, load_recipe_config
from pipelines.commands.cli import main, stop_on_sigterm
from pipelines.errors import RunFailed, RunInterrupted
from pipelines.runs.guard import MARKER, finish_run, recover_interrupted_swap, staging_dir, start_run
from pipelines.runs.lock import lock_path

# Trains models for seconds each: `make test-fast` leaves this module out.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTING = ["training.save_strategy=steps", "training.save_steps=5", "training.num_train_epochs=2"]
STEPS = 2 * 240 // 16  # 30


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


class InterruptAt(TrainerCallback):
    """Ctrl-C right after the given optimizer step."""

    def __init__(self, step: int, error: type[BaseException] = KeyboardInterrupt):
        self.step, self.error = step, error

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise self.error("interrupted by the test")


@pytest.fixture(scope="module")
def straight(tiny_bert, sentiment_files, tmp_path_factory):
    """The uninterrupted run that interrupted and resumed runs must reproduce."""
    from conftest import make_recipe_values

    run_dir = tmp_path_factory.mktemp("straight") / "run"
    results = Recipe.from_dict(make_recipe_values(tiny_bert, sentiment_files, run_dir), CHECKPOINTING).run()
    return results, run_dir


@pytest.fixture
def finished_run(recipe_values) -> Path:
    """A short finished run in `recipe_values`' output_dir."""
    Recipe.from_dict(copy.deepcopy(recipe_values), ["training.num_train_epochs=1"]).run()
    return Path(recipe_values["output_dir"])


# --- where a run may write, and what it may replace ------------------------------------------------------------


@pytest.mark.parametrize("where", ["cwd", "parent_of_cwd", "home"])
def test_protected_folders_are_never_used_or_replaced(recipe_values, tmp_path, monkeypatch, where):
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "notes.txt").write_text("mine")
    monkeypatch.chdir(project / "src" if where == "parent_of_cwd" else project)
    if where == "home":
        monkeypatch.setenv("HOME", str(project))
        monkeypatch.chdir(tmp_path)
    before = snapshot(project)
    with pytest.raises(HubtuneError) as caught:
        Recipe.from_dict(dict(recipe_values, output_dir=str(project)), ["overwrite=true"]).run()
    assert str(project) in str(caught.value) and "run folder of its own" in str(caught.value)
    assert snapshot(project) == before


def test_output_dir_that_is_a_file_is_refused_before_anything_is_written(recipe_values, tmp_path):
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    with pytest.raises(HubtuneError, match="is a file, not a folder") as caught:
        Recipe.from_dict(dict(recipe_values, output_dir=str(target)), ["overwrite=true"]).run()
    assert str(target) in str(caught.value)
    assert target.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["results.txt"]


@pytest.mark.parametrize("name", [".", "..", "../escaped-run", "a/b"])
def test_names_stay_inside_runs(recipe_values, name):
    values = {k: v for k, v in recipe_values.items() if k != "output_dir"}
    with pytest.raises(HubtuneError, match="recipe key 'name' must be a plain folder name"):
        load_recipe_config(values=dict(values, name=name))


def test_folder_hubtune_did_not_write_is_never_replaced(recipe_values, tmp_path):
    run_dir = Path(recipe_values["output_dir"])
    run_dir.mkdir()
    (run_dir / "thesis.tex").write_text("years of work")
    with pytest.raises(HubtuneError, match=f"hubtune did not write it .*{MARKER}") as caught:
        Recipe.from_dict(copy.deepcopy(recipe_values), ["overwrite=true"]).run()
    assert str(run_dir) in str(caught.value)
    assert (run_dir / "thesis.tex").read_text() == "years of work"


def test_users_files_inside_a_run_folder_block_overwrite(finished_run, recipe_values):
    (finished_run / "notes.txt").write_text("what I saw")
    (finished_run / "analysis").mkdir()
    (finished_run / "analysis" / "plot.py").write_text("print(1)")
    before = snapshot(finished_run)
    with pytest.raises(HubtuneError) as caught:
        Recipe.from_dict(copy.deepcopy(recipe_values), ["overwrite=true"]).run()
    message = str(caught.value)
    assert str(finished_run / "notes.txt") in message and str(finished_run / "analysis") in message
    assert snapshot(finished_run) == before


def test_files_hubtune_adds_later_do_not_block_overwrite(finished_run, recipe_values, tmp_path):
    from pipelines.serving.predictor import Predictor

    Predictor(finished_run).evaluate("validation")
    assert main(["push", str(finished_run), "--repo-id", "me/x", "--dry-run", str(tmp_path / "upload")]) == 0
    Recipe.from_dict(copy.deepcopy(recipe_values), ["overwrite=true", "training.num_train_epochs=1"]).run()
    assert not (finished_run / "evaluate_results.json").exists()


def test_failed_overwrite_leaves_the_old_run_intact(finished_run, recipe_values):
    before = snapshot(finished_run)
    with pytest.raises(RunFailed, match="RuntimeError: interrupted by the test; no checkpoint was complete") as caught:
        Recipe.from_dict(copy.deepcopy(recipe_values), ["overwrite=true"]).run(callbacks=[InterruptAt(3, RuntimeError)])
    assert f"'{finished_run}' is as it was" in str(caught.value)
    assert snapshot(finished_run) == before
    # The failed one saved no checkpoint to resume: nothing of it is left beside the run.
    assert sorted(p.name for p in finished_run.parent.iterdir()) == [finished_run.name]
    Recipe.from_dict(copy.deepcopy(recipe_values), ["overwrite=true", "training.num_train_epochs=1"]).run()
    assert sorted(p.name for p in finished_run.parent.iterdir()) == [finished_run.name]


def test_a_crash_between_the_swaps_renames_is_repaired(tmp_path):
    target = tmp_path / "run"
    start_run(target)
    (target / "all_results.json").write_text("{}")
    finish_run(target)
    retired = tmp_path / ".run.hubtune-old"
    target.rename(retired)  # the moment after the old run was moved aside, before the new one moved in
    recover_interrupted_swap(target)
    assert (target / "all_results.json").is_file() and not retired.exists()


# --- interrupted runs resume -------------------------------------------------------------------------------------


def test_ctrl_c_stops_cleanly_and_resume_gives_the_uninterrupted_run(straight, recipe_values):
    values = copy.deepcopy(recipe_values)
    with pytest.raises(RunInterrupted) as caught:
        Recipe.from_dict(values, CHECKPOINTING).run(callbacks=[InterruptAt(12)])
    run_dir = Path(values["output_dir"])
    assert str(run_dir / "checkpoint-10") in str(caught.value) and "training.resume=true" in str(caught.value)
    assert isinstance(caught.value, KeyboardInterrupt)
    assert not (run_dir / "all_results.json").exists()
    resumed = Recipe.from_dict(values, [*CHECKPOINTING, "training.resume=true"]).run()
    assert_same_run(resumed, run_dir, *straight)


def test_ctrl_c_during_overwrite_keeps_the_old_run_and_resumes_the_new_one(straight, finished_run, recipe_values):
    before = snapshot(finished_run)
    with pytest.raises(RunInterrupted):
        Recipe.from_dict(copy.deepcopy(recipe_values), [*CHECKPOINTING, "overwrite=true"]).run(
            callbacks=[InterruptAt(7)]
        )
    assert snapshot(finished_run) == before
    assert (staging_dir(finished_run) / "checkpoint-5").is_dir()
    resumed = Recipe.from_dict(copy.deepcopy(recipe_values), [*CHECKPOINTING, "training.resume=true"]).run()
    assert_same_run(resumed, finished_run, *straight)
    assert not staging_dir(finished_run).exists()


def _run_worker(
    worker: str, step: int, recipe_values: dict, tmp_path: Path
) -> tuple[dict, subprocess.CompletedProcess]:
    """`hubtune train` in a process of its own through tests/workers/`worker`, which stops it at `step`; the recipe
    saves a checkpoint every 5 steps for 2 epochs."""
    values = copy.deepcopy(recipe_values)
    values["training"] = dict(values["training"], save_strategy="steps", save_steps=5, num_train_epochs=2)
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(values))
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    completed = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "workers" / worker), str(recipe_path), str(step)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return values, completed


def test_sigterm_stops_like_ctrl_c_with_exit_143_and_resume_gives_the_uninterrupted_run(
    straight, recipe_values, tmp_path
):
    values, completed = _run_worker("term.py", 12, recipe_values, tmp_path)
    assert completed.returncode == 143, completed.stderr[-2000:]
    run_dir = Path(values["output_dir"])
    (last_line,) = [line for line in completed.stderr.splitlines() if line.startswith("hubtune:")]
    assert last_line.startswith("hubtune: terminated: training stopped; its last complete checkpoint is")
    assert str(run_dir / "checkpoint-10") in last_line and "training.resume=true" in last_line
    assert not (run_dir / "all_results.json").exists()
    resumed = Recipe.from_dict(values, ["training.resume=true"]).run()
    assert_same_run(resumed, run_dir, *straight)


def test_forked_children_of_a_command_still_die_of_sigterm():
    # datasets' map workers and DataLoader workers are forked while the command's SIGTERM handler is installed;
    # their pools end them with SIGTERM and wait, so they must start with the default action and die of it.
    previous = signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(60,))
        child.start()
        time.sleep(0.2)
        child.terminate()
        child.join(20)
        assert child.exitcode == -signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) is stop_on_sigterm  # the command's own process keeps it
        with pytest.raises(KeyboardInterrupt):
            stop_on_sigterm(signal.SIGTERM, None)  # where it stops like Ctrl-C
    finally:
        signal.signal(signal.SIGTERM, previous)


def _start_holder(values: dict, folder: Path) -> subprocess.Popen:
    """A `hubtune train` process that pauses at step 3 holding its run folder (tests/workers/hold.py)."""
    folder.mkdir(parents=True, exist_ok=True)
    recipe_path = folder / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(values))
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    holder = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "workers/hold.py"), str(recipe_path), "3"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while not (folder / "holding").exists():
        assert holder.poll() is None, holder.stderr.read()[-2000:] if holder.stderr else ""
        assert time.monotonic() < deadline, "the holding run never reached its step"
        time.sleep(0.1)
    return holder


def test_a_second_run_on_a_folder_in_use_is_refused_naming_the_first(recipe_values, tmp_path):
    values = copy.deepcopy(recipe_values)
    holder = _start_holder(values, tmp_path / "first")
    try:
        second = subprocess.run(
            [sys.executable, "-m", "pipelines", "train", str(tmp_path / "first" / "recipe.yaml"), "overwrite=true"],
            env=dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT)),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert second.returncode == 2, second.stderr[-2000:]
        (line,) = [line for line in second.stderr.splitlines() if line.startswith("hubtune:")]
        assert f"is in use by another hubtune run (process {holder.pid} on " in line
    finally:
        (tmp_path / "first" / "release").touch()
        assert holder.wait(timeout=300) == 0
    assert (Path(values["output_dir"]) / "all_results.json").is_file()  # the first run went on undisturbed
    assert not lock_path(Path(values["output_dir"])).exists()


def test_the_lock_of_a_killed_run_is_taken_over(recipe_values, tmp_path):
    values = copy.deepcopy(recipe_values)
    holder = _start_holder(values, tmp_path / "first")
    holder.kill()  # SIGKILL: no cleanup runs, the lock file stays behind
    holder.wait(timeout=60)
    assert lock_path(Path(values["output_dir"])).exists()
    results = Recipe.from_dict(values, ["overwrite=true", "training.num_train_epochs=1"]).run()
    assert results["train_samples"] > 0 and not lock_path(Path(values["output_dir"])).exists()


class Diverge(TrainerCallback):
    """Turns one weight NaN after a training step, as a diverging run or a bad batch would."""

    def __init__(self, step: int, parameter: str):
        self.step, self.parameter = step, parameter

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step:
            with torch.no_grad():
                model.get_parameter(self.parameter).view(-1)[0] = float("nan")


def test_a_non_finite_loss_stops_the_run_keeping_the_last_good_checkpoint(straight, recipe_values):
    values = copy.deepcopy(recipe_values)
    with pytest.raises(HubtuneError) as caught:
        Recipe.from_dict(values, CHECKPOINTING).run(callbacks=[Diverge(7, "classifier.bias")])
    run_dir = Path(values["output_dir"])
    message = str(caught.value)
    assert message.startswith("the training loss is nan at step 8: training stopped before that step")
    assert str(run_dir / "checkpoint-5") in message and "\n" not in message
    assert not (run_dir / "all_results.json").exists() and not (run_dir / "model.safetensors").exists()
    resumed = Recipe.from_dict(values, [*CHECKPOINTING, "training.resume=true"]).run()
    assert_same_run(resumed, run_dir, *straight)  # the last good checkpoint is the uninterrupted run's


def test_a_model_with_non_finite_weights_is_never_saved_as_the_result(recipe_values):
    """NaN in the padding token's embedding leaves the loss finite (padding is masked out), so only the check of
    the finished model catches it."""
    values = copy.deepcopy(recipe_values)
    with pytest.raises(HubtuneError, match="weights that are not finite numbers .*not saved as the run's result"):
        Recipe.from_dict(values, CHECKPOINTING).run(callbacks=[Diverge(7, "bert.embeddings.word_embeddings.weight")])
    assert not (Path(values["output_dir"]) / "model.safetensors").exists()


def test_resume_of_a_finished_run_says_so_and_changes_nothing(finished_run, recipe_values):
    before = snapshot(finished_run)
    with pytest.raises(HubtuneError, match="holds a finished run .* nothing to resume; set 'overwrite=true'"):
        Recipe.from_dict(copy.deepcopy(recipe_values), [*CHECKPOINTING, "training.resume=true"]).run()
    assert snapshot(finished_run) == before


def test_kill_9_while_saving_a_checkpoint_resumes_from_the_last_complete_one(straight, recipe_values, tmp_path, caplog):
    values, completed = _run_worker("crash.py", 15, recipe_values, tmp_path)
    assert completed.returncode == -9, completed.stderr[-2000:]
    run_dir = Path(values["output_dir"])
    partial = run_dir / "checkpoint-15"
    assert partial.is_dir() and not (partial / "trainer_state.json").exists()
    resumed = Recipe.from_dict(values, ["training.resume=true"]).run()
    assert "checkpoint-15' is incomplete" in caplog.text
    assert_same_run(resumed, run_dir, *straight)


def test_cli_ctrl_c_exits_130_with_one_line_and_no_traceback(recipe_values, tmp_path, monkeypatch, capsys):
    from transformers import Trainer

    def interrupted_train(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "train", interrupted_train)
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe_values))
    assert main(["train", str(recipe_path)]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hubtune: interrupted: training stopped before its first checkpoint")
    assert "Traceback" not in err[0]
    # Nothing to resume from was kept, so the same command simply starts over.
    assert not Path(recipe_values["output_dir"]).exists()


def test_best_checkpoint_is_found_after_the_swap(finished_run, recipe_values):
    overrides = [
        "overwrite=true",
        "training.num_train_epochs=2",
        "training.save_strategy=epoch",
        "training.load_best_model_at_end=true",
        "training.metric_for_best_model=accuracy",
    ]
    Recipe.from_dict(copy.deepcopy(recipe_values), overrides).run()
    states = [finished_run / "trainer_state.json", *finished_run.glob("checkpoint-*/trainer_state.json")]
    best = {json.loads(path.read_text())["best_model_checkpoint"] for path in states}
    assert len(best) == 1 and Path(best.pop()).parent == finished_run
