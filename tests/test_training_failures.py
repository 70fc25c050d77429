"""Failures during training (any unexpected error) end in one line naming the cause and the last
complete checkpoint; what they cut short is deleted, and the run folder either resumes with training.resume=true
to the uninterrupted run or, holding no complete checkpoint, is removed."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from helpers.runs import assert_same_run
from transformers import TrainerCallback

from pipelines import Recipe
from pipelines.commands.cli import main
from pipelines.errors import RunFailed

# Trains models for seconds each: `make test-fast` leaves this module out.
pytestmark = pytest.mark.slow

CHECKPOINTING = {"save_strategy": "steps", "save_steps": 5, "num_train_epochs": 2}  # 30 steps


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
