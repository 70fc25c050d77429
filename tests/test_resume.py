"""Resuming an interrupted run gives exactly the uninterrupted run; run folders are never clobbered silently."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from helpers.runs import StopAt, losses, quality
from safetensors.torch import load_file
from transformers import TrainerCallback

from pipelines import HubtuneError, Recipe
from pipelines.errors import RunFailed

# Trains models for seconds each: `make test-fast` leaves this module out.
pytestmark = pytest.mark.slow

STOP_AT = 10
EPOCHS = 2
STEPS = EPOCHS * 240 // 16  # 30
CHECKPOINTING = ["training.save_strategy=steps", "training.save_steps=5", f"training.num_train_epochs={EPOCHS}"]


class Steps(TrainerCallback):
    """Records the optimizer steps a run actually takes."""

    def __init__(self):
        self.steps: list[int] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


@pytest.fixture(scope="module")
def resumed(tiny_bert, sentiment_files, tmp_path_factory):
    from conftest import make_recipe_values

    root = tmp_path_factory.mktemp("resume")
    straight_dir, resumed_dir = root / "straight", root / "resumed"
    straight = Recipe.from_dict(make_recipe_values(tiny_bert, sentiment_files, straight_dir), CHECKPOINTING).run()

    stop = StopAt(STOP_AT)
    with pytest.raises(RunFailed, match="SimulatedCrash: the test's crash after step"):
        Recipe.from_dict(make_recipe_values(tiny_bert, sentiment_files, resumed_dir), CHECKPOINTING).run(
            callbacks=[stop]
        )
    interrupted = {
        "stopped_at": stop.stopped_at,
        "global_step": json.loads((resumed_dir / f"checkpoint-{STOP_AT}" / "trainer_state.json").read_text())[
            "global_step"
        ],
        "checkpoints": sorted(p.name for p in resumed_dir.glob("checkpoint-*")),
    }
    # A new Recipe object on the same folder, as after a crash and a fresh `hubtune train ... training.resume=true`.
    steps = Steps()
    final = Recipe.from_dict(
        make_recipe_values(tiny_bert, sentiment_files, resumed_dir), CHECKPOINTING + ["training.resume=true"]
    ).run(callbacks=[steps])
    return {
        "straight_dir": straight_dir,
        "straight": straight,
        "resumed_dir": resumed_dir,
        "resumed": final,
        "interrupted": interrupted,
        "resumed_steps": steps.steps,
    }


def test_interruption_really_happened(resumed):
    interrupted = resumed["interrupted"]
    assert interrupted["stopped_at"] == STOP_AT
    assert interrupted["global_step"] == STOP_AT
    assert f"checkpoint-{STOP_AT}" in interrupted["checkpoints"]
    assert f"checkpoint-{STOP_AT + 5}" not in interrupted["checkpoints"]
    # The continuation really started from checkpoint-10 (a restart from scratch would also end equal).
    assert resumed["resumed_steps"] == list(range(STOP_AT + 1, STEPS + 1))
    state = json.loads((resumed["resumed_dir"] / "trainer_state.json").read_text())
    assert state["global_step"] == STEPS


def test_resumed_run_matches_uninterrupted_run(resumed):
    straight, final = quality(resumed["straight"]), quality(resumed["resumed"])
    assert straight.keys() == final.keys() and "test_loss" in straight
    for key in straight:
        assert math.isclose(final[key], straight[key], rel_tol=1e-5), (key, final[key], straight[key])

    straight_losses, resumed_losses = losses(resumed["straight_dir"]), losses(resumed["resumed_dir"])
    after = [step for step in straight_losses if step > STOP_AT]
    assert after == [15, 20, 25, 30]
    assert [step for step in resumed_losses if step > STOP_AT] == after
    for step in after:
        assert math.isclose(resumed_losses[step], straight_losses[step], rel_tol=1e-5), step


def test_resumed_weights_match(resumed):
    straight = load_file(str(resumed["straight_dir"] / "model.safetensors"))
    final = load_file(str(resumed["resumed_dir"] / "model.safetensors"))
    assert straight.keys() == final.keys()
    for name in straight:
        assert torch.allclose(straight[name], final[name], rtol=1e-5, atol=1e-7), name


def test_resumed_run_folder_is_complete(resumed):
    saved = json.loads((resumed["resumed_dir"] / "all_results.json").read_text())
    assert saved["test_accuracy"] == resumed["resumed"]["test_accuracy"]
    assert (resumed["resumed_dir"] / "recipe.yaml").is_file()


def test_resume_without_checkpoint_is_an_error(recipe_values, tmp_path):
    # A folder that does not exist ...
    with pytest.raises(HubtuneError, match="no complete checkpoint-\\* folder") as caught:
        Recipe.from_dict(copy.deepcopy(recipe_values), ["training.resume=true"]).run()
    assert recipe_values["output_dir"] in str(caught.value)
    # ... and one that holds files but no checkpoint.
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "all_results.json").write_text("{}")
    with pytest.raises(HubtuneError, match="no complete checkpoint-\\* folder"):
        Recipe.from_dict(copy.deepcopy(recipe_values), ["training.resume=true"]).run()
    assert [p.name for p in run_dir.iterdir()] == ["all_results.json"]


def snapshot(folder) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    }


def test_existing_run_folder_is_refused_and_untouched(recipe_values, tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoint-3").mkdir(parents=True)
    (run_dir / "all_results.json").write_text('{"test_accuracy": 0.5}')
    (run_dir / "checkpoint-3" / "trainer_state.json").write_text("{}")
    before = snapshot(run_dir)
    with pytest.raises(HubtuneError) as caught:
        Recipe.from_dict(copy.deepcopy(recipe_values)).run()
    message = str(caught.value)
    assert str(run_dir) in message and "already exists" in message
    assert "resume" in message and "overwrite" in message
    assert snapshot(run_dir) == before


def test_empty_existing_folder_is_fine(recipe_values, tmp_path):
    (tmp_path / "run").mkdir()
    results = Recipe.from_dict(copy.deepcopy(recipe_values), ["training.num_train_epochs=1"]).run()
    assert (tmp_path / "run" / "all_results.json").is_file()
    assert results["test_samples"] == 60


def test_overwrite_replaces_a_run_folder_hubtune_wrote(recipe_values, tmp_path):
    run_dir = tmp_path / "run"
    Recipe.from_dict(copy.deepcopy(recipe_values), ["training.num_train_epochs=1", "training.learning_rate=1e-9"]).run()
    assert json.loads((run_dir / "all_results.json").read_text())["test_accuracy"] < 0.9
    (run_dir / "checkpoint-7").mkdir()  # a checkpoint the old run was saving when it stopped
    Recipe.from_dict(copy.deepcopy(recipe_values), ["overwrite=true", "training.num_train_epochs=1"]).run()
    assert not (run_dir / "checkpoint-7").exists()
    saved = json.loads((run_dir / "all_results.json").read_text())
    assert saved["test_accuracy"] >= 0.9
    assert (run_dir / "recipe.yaml").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging or retired folder left behind


def test_overwrite_with_invalid_training_section_keeps_the_old_folder(recipe_values, tmp_path):
    """Bad input must be refused before the old run is deleted, also with overwrite=true."""
    from pipelines.runs.guard import finish_run, start_run

    run_dir = tmp_path / "run"
    start_run(run_dir)
    (run_dir / "all_results.json").write_text('{"test_accuracy": 0.5}')
    finish_run(run_dir)
    before = snapshot(run_dir)
    with pytest.raises(HubtuneError, match="eval_strategy|bogus"):
        Recipe.from_dict(copy.deepcopy(recipe_values), ["overwrite=true", "training.eval_strategy=bogus"]).run()
    assert snapshot(run_dir) == before
