"""Failures during training (a full disk, any unexpected error) end in one line naming the cause and the last
complete checkpoint; what they cut short is deleted, and the run folder either resumes with training.resume=true
to the uninterrupted run or, holding no complete checkpoint, is removed."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers.disk import FINAL, fill_disk_at
from helpers.runs import assert_same_run
from transformers import TrainerCallback

from pipelines import HubtuneError, Recipe
from pipelines.commands.cli import main
from pipelines.errors import RunFailed
from pipelines.runs.guard import foreign_entries, staging_dir

# Trains models for seconds each: `make test-fast` leaves this module out.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTING = {"save_strategy": "steps", "save_steps": 5, "num_train_epochs": 2}  # 30 steps


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def checkpointing(values: dict) -> dict:
    values = copy.deepcopy(values)
    values["training"].update(CHECKPOINTING)
    return values


@pytest.fixture(scope="module")
def straight(tiny_bert, sentiment_files, tmp_path_factory):
    """The uninterrupted run that failed and resumed runs must reproduce."""
    from conftest import make_recipe_values

    run_dir = tmp_path_factory.mktemp("straight") / "run"
    values = checkpointing(make_recipe_values(tiny_bert, sentiment_files, run_dir))
    return Recipe.from_dict(values).run(), run_dir


class FailAt(TrainerCallback):
    """An unexpected error (a library's bug, say) right after the given optimizer step."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise RuntimeError(f"the test's failure at step {self.step}")


def train_on_a_filling_disk(values: dict, folder: Path, save: str, *overrides: str) -> tuple[int, str]:
    """`hubtune train` in a process of its own whose disk fills up at `save` (tests/workers/disk_full.py); its
    exit code and its one error line, which must be the last line it wrote."""
    recipe_path = folder / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(values))
    completed = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "workers" / "disk_full.py"), save, str(recipe_path), *overrides],
        env=dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [line for line in completed.stderr.splitlines() if line.startswith("hubtune:")]
    assert len(errors) == 1 and completed.stderr.rstrip("\n").splitlines()[-1] == errors[0], completed.stderr[-3000:]
    assert "Traceback" not in completed.stderr
    return completed.returncode, errors[0]


def test_a_full_disk_while_saving_a_checkpoint_keeps_the_last_complete_one_and_resumes(
    straight, recipe_values, tmp_path
):
    values = checkpointing(recipe_values)
    run_dir = Path(values["output_dir"])
    code, line = train_on_a_filling_disk(values, tmp_path, "checkpoint-15")
    assert code == 2
    assert line == (
        f"hubtune: error: no space left on the device holding '{run_dir}' while saving 'checkpoint-15'; the partial "
        f"files were deleted and the last complete checkpoint is '{run_dir / 'checkpoint-10'}': continue it with the "
        "same command and 'training.resume=true' once space is freed"
    )
    assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-5"]
    assert not (run_dir / "model.safetensors").exists()
    resumed = Recipe.from_dict(values, ["training.resume=true"]).run()
    assert_same_run(resumed, run_dir, *straight)


def test_a_full_disk_at_the_final_save_of_an_overwrite_keeps_the_old_run_and_removes_the_new(recipe_values, tmp_path):
    run_dir = Path(recipe_values["output_dir"])
    Recipe.from_dict(copy.deepcopy(recipe_values), ["training.num_train_epochs=1"]).run()
    before = snapshot(run_dir)
    code, line = train_on_a_filling_disk(
        recipe_values, tmp_path, FINAL, "overwrite=true", "training.num_train_epochs=1"
    )
    assert code == 2
    assert line == (
        f"hubtune: error: no space left on the device holding '{run_dir}' while saving the trained run; the partial "
        f"files were deleted and no checkpoint was complete, so the run folder was removed; '{run_dir}' is as it "
        "was: run the same command again once space is freed"
    )
    assert snapshot(run_dir) == before
    assert not staging_dir(run_dir).exists()  # the hidden staging folder no longer fills the disk
    assert sorted(p.name for p in run_dir.parent.iterdir()) == sorted(["recipe.yaml", run_dir.name])


def test_a_full_disk_at_the_final_save_deletes_that_save_and_resume_finishes_the_run(
    straight, recipe_values, monkeypatch
):
    import transformers.modeling_utils as modeling_utils

    values = checkpointing(recipe_values)
    run_dir = Path(values["output_dir"])
    monkeypatch.setattr(modeling_utils, "safe_save_file", modeling_utils.safe_save_file)  # restored by undo()
    fill_disk_at(FINAL)
    with pytest.raises(HubtuneError) as caught:
        Recipe.from_dict(values).run()
    assert str(caught.value).startswith(f"no space left on the device holding '{run_dir}' while saving the trained")
    assert f"the last complete checkpoint is '{run_dir / 'checkpoint-30'}'" in str(caught.value)
    assert foreign_entries(run_dir) == []  # nothing of the final save is left, only checkpoints and logs
    monkeypatch.undo()
    resumed = Recipe.from_dict(values, ["training.resume=true"]).run()
    assert_same_run(resumed, run_dir, *straight)


def test_an_unexpected_error_names_its_step_and_the_checkpoint_and_the_run_resumes(straight, recipe_values):
    values = checkpointing(recipe_values)
    run_dir = Path(values["output_dir"])
    with pytest.raises(RunFailed) as caught:
        Recipe.from_dict(values).run(callbacks=[FailAt(12)])
    assert str(caught.value) == (
        "training failed at step 12: RuntimeError: the test's failure at step 12; the last complete checkpoint is "
        f"'{run_dir / 'checkpoint-10'}': continue it with the same command and 'training.resume=true' once the "
        "cause is fixed"
    )
    assert isinstance(caught.value.__cause__, RuntimeError)  # the traceback stays with the error
    resumed = Recipe.from_dict(values, ["training.resume=true"]).run()
    assert_same_run(resumed, run_dir, *straight)


def test_an_unexpected_error_before_the_run_folder_is_written_says_nothing_was_saved(recipe_values, monkeypatch):
    from pipelines.runner import recipe

    def failing_look(*args, **kwargs):
        raise RuntimeError("the test's failure while setting up training")

    monkeypatch.setattr(recipe, "fit_last_batch", failing_look)
    with pytest.raises(RunFailed) as caught:
        Recipe.from_dict(copy.deepcopy(recipe_values)).run()
    assert str(caught.value) == (
        "training failed before the first training step: RuntimeError: the test's failure while setting up "
        "training; nothing was saved to resume from: run the same command again once the cause is fixed"
    )
    assert not Path(recipe_values["output_dir"]).exists()


def test_cli_an_unexpected_error_is_one_line_exit_1_with_the_traceback_in_a_file(
    recipe_values, tmp_path, monkeypatch, capsys
):
    from pipelines.training.trainer import HubtuneTrainer

    step = HubtuneTrainer.training_step

    def failing_step(self, model, inputs, num_items_in_batch=None):
        if self.state.global_step == 2:
            raise RuntimeError("the test's failure in step 3")
        return step(self, model, inputs, num_items_in_batch)

    monkeypatch.setattr(HubtuneTrainer, "training_step", failing_step)
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe_values))
    assert main(["train", str(recipe_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    message, traceback_file = err[0].removesuffix(")").split(" (full traceback: ")
    assert message == (
        "hubtune: error: training failed at step 3: RuntimeError: the test's failure in step 3; no checkpoint was "
        "complete, so the run folder was removed: run the same command again once the cause is fixed"
    )
    written = Path(traceback_file).read_text()
    Path(traceback_file).unlink()
    assert "Traceback (most recent call last)" in written and "in failing_step" in written
    assert not Path(recipe_values["output_dir"]).exists()


def _raised(error: Exception, cause: Exception) -> Exception:
    """`error` raised from `cause`, as a library that wraps an OSError raises it."""
    try:
        raise error from cause
    except Exception as caught:
        return caught


SAFETENSORS_FULL = (
    'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
)
TORCH_FULL = "[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"


@pytest.mark.parametrize(
    ("error", "free_bytes", "full"),
    [
        (OSError(28, "No space left on device"), 10**12, True),
        (_raised(RuntimeError("saving failed"), OSError(28, "No space left on device")), 10**12, True),
        (RuntimeError(SAFETENSORS_FULL), 10**12, True),
        (RuntimeError(TORCH_FULL), 2**20, True),  # torch's writer names no cause: the device's free space does
        (RuntimeError(TORCH_FULL), 10**12, False),
        (RuntimeError("CUDA error: an illegal memory access was encountered"), 0, False),
    ],
    ids=["oserror", "oserror-as-cause", "safetensors", "torch-nearly-full", "torch-with-space", "other"],
)
def test_a_full_disk_is_recognised_however_the_writer_reports_it(error, free_bytes, full, tmp_path, monkeypatch):
    import shutil
    from types import SimpleNamespace

    from pipelines.runner.failure import _disk_full

    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(free=free_bytes))
    assert _disk_full(error, tmp_path / "run") is full
