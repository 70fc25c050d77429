"""Helpers for tests that interrupt, resume and compare runs. Not a test module (no `test_` prefix)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import yaml
from transformers import TrainerCallback


class SimulatedCrash(Exception):
    """What `StopAt` raises: a run that dies, leaving its checkpoints and an unfinished run folder."""


class StopAt(TrainerCallback):
    """Simulates a crash: training dies right after the checkpoint of the given optimizer step is saved. (Stopping
    training cleanly instead would finish the run, and a finished run is not resumed.)"""

    def __init__(self, step: int):
        self.step = step
        self.stopped_at = None

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            self.stopped_at = state.global_step
            raise SimulatedCrash(f"the test's crash after step {self.step}")


def losses(run_dir: Path) -> dict[int, float]:
    """The logged training loss at each step of a run folder's `trainer_state.json`."""
    state = json.loads((Path(run_dir) / "trainer_state.json").read_text())
    return {entry["step"]: entry["loss"] for entry in state["log_history"] if "loss" in entry}


def quality(results: dict) -> dict[str, float]:
    """The test metrics of a run's results, without the timing ones."""
    return {k: v for k, v in results.items() if k.startswith("test_") and not k.endswith(("runtime", "per_second"))}


def assert_same_run(resumed: dict, resumed_dir: Path, straight: dict, straight_dir: Path) -> None:
    """A resumed run ends with the uninterrupted run's test metrics and per-step losses."""
    for key, value in quality(straight).items():
        assert math.isclose(resumed[key], value, rel_tol=1e-5, abs_tol=1e-7), key
    straight_losses, resumed_losses = losses(straight_dir), losses(resumed_dir)
    assert sorted(resumed_losses) == sorted(straight_losses)
    for step, loss in straight_losses.items():
        assert math.isclose(resumed_losses[step], loss, rel_tol=1e-5), step


def without_its_data(run_dir: Path, copy_to: Path) -> Path:
    """A copy of a run folder whose recipe.yaml names data files that are no longer there, as after the data moved.
    A copy, so that a shared run fixture's data stays where the other tests read it."""
    shutil.copytree(run_dir, copy_to)
    recipe = yaml.safe_load((copy_to / "recipe.yaml").read_text())
    gone = copy_to.parent / "moved-away"
    recipe["data"]["files"] = {split: str(gone / Path(path).name) for split, path in recipe["data"]["files"].items()}
    (copy_to / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return copy_to


def assert_export_checked_on_made_up_inputs(run_dir: Path, tmp_path: Path) -> dict:
    """`export` of the run, its data gone: checked on made-up inputs, the exported model equal to the run's."""
    from pipelines.serving.export import export_run

    check = export_run(without_its_data(run_dir, tmp_path / "data-gone"), tmp_path / "export", merge=False)
    assert check["probe"] == "made-up inputs"
    assert check["max_abs_logit_difference"] <= 1e-4 and check["probe_examples"] == 8
    return check
