"""Layer-wise LR decay, head LR scale, gradual unfreezing (LR-gated) and LP-FT, checked by what moved and
which learning rate each layer group saw."""

from __future__ import annotations

import math

import pytest
import torch
from helpers.runs import StopAt, losses, quality
from safetensors.torch import load_file
from transformers import BertForSequenceClassification, TrainerCallback

from pipelines import HubtuneError, Recipe
from pipelines.errors import RunFailed

# Trains models for seconds each: `make test-fast` leaves this module out.
pytestmark = pytest.mark.slow

BASE_LR = 1e-3


class RecordLearningRates(TrainerCallback):
    """The learning rate of every optimizer param group (by layer group) after each optimizer step."""

    def __init__(self):
        self.by_step: list[dict[str, float]] = []
        self.weight_decay: dict[tuple[str, float], int] = {}

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        rates = {}
        for group in optimizer.param_groups:
            rates[group["layer_group"]] = group["lr"]
            key = (group["layer_group"], group["weight_decay"])
            self.weight_decay[key] = self.weight_decay.get(key, 0) + 1
        self.by_step.append(rates)


class SnapshotAtEpochEnd(TrainerCallback):
    def __init__(self):
        self.snapshots: list[dict[str, torch.Tensor]] = []

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        self.snapshots.append({n: p.detach().clone() for n, p in model.named_parameters()})


def test_layer_decay_and_head_scale_set_each_groups_learning_rate(recipe_values):
    recorder = RecordLearningRates()
    recipe = Recipe.from_dict(
        recipe_values,
        [
            "adapt.layer_decay=0.5",
            "adapt.head_lr_scale=10",
            f"training.learning_rate={BASE_LR}",
            "training.lr_scheduler_type=constant",
            "training.weight_decay=0.01",
            "training.num_train_epochs=1",
        ],
    )
    results = recipe.run(callbacks=[recorder])
    first = recorder.by_step[0]
    # Two blocks: embeddings are 3 levels below the head, block.0 two, block.1 one; neck at the top.
    assert first["embeddings"] == pytest.approx(BASE_LR * 0.5**3)
    assert first["block.0"] == pytest.approx(BASE_LR * 0.5**2)
    assert first["block.1"] == pytest.approx(BASE_LR * 0.5)
    assert first["neck"] == pytest.approx(BASE_LR)
    assert first["head"] == pytest.approx(BASE_LR * 10)
    # Biases and norms undecayed, matrices decayed, in every group.
    decays = {decay for (_, decay) in recorder.weight_decay}
    assert decays == {0.0, 0.01}
    assert {group for (group, decay) in recorder.weight_decay if decay == 0.0} >= {"embeddings", "block.0", "head"}
    table = {row["group"]: row for row in __import__("json").loads((recipe.output_dir / "parameters.json").read_text())}
    assert table["block.0"]["lr_scale"] == pytest.approx(0.25) and table["head"]["lr_scale"] == pytest.approx(10)
    assert results["test_accuracy"] >= 0.9


def test_top_down_unfreezing_holds_lower_groups_until_their_epoch(recipe_values, tiny_bert):
    recorder, snapshots = RecordLearningRates(), SnapshotAtEpochEnd()
    recipe = Recipe.from_dict(
        recipe_values,
        [
            "adapt.unfreeze_schedule.every=1",
            f"training.learning_rate={BASE_LR}",
            "training.num_train_epochs=4",
            "training.lr_scheduler_type=constant",
        ],
    )
    results = recipe.run(callbacks=[recorder, snapshots])
    steps_per_epoch = 240 // 16
    starts = {"head": 0, "neck": 0, "block.1": 1, "block.0": 2, "embeddings": 3}
    for step, rates in enumerate(recorder.by_step, start=1):
        for group, epoch in starts.items():
            # The LR printed after step s is the one the next step uses.
            open_now = step >= epoch * steps_per_epoch
            assert (rates[group] > 0) == open_now, (group, step, rates[group])
    original = BertForSequenceClassification.from_pretrained(tiny_bert).state_dict()
    after_epoch_1 = snapshots.snapshots[0]
    block0 = [n for n in after_epoch_1 if ".layer.0." in n]
    assert block0 and all(torch.equal(after_epoch_1[n], original[n]) for n in block0)
    after_epoch_3 = snapshots.snapshots[2]
    assert not all(torch.equal(after_epoch_3[n], original[n]) for n in block0)
    embeddings = [n for n in after_epoch_3 if "embeddings" in n]
    assert all(torch.equal(after_epoch_3[n], original[n]) for n in embeddings)
    final = load_file(recipe.output_dir / "model.safetensors")
    assert not all(torch.equal(final[n], original[n]) for n in embeddings)
    assert results["test_accuracy"] >= 0.9


def test_resume_across_an_unfreeze_point_matches_the_uninterrupted_run(recipe_values, tmp_path):
    schedule = [
        "adapt.unfreeze_schedule.unit=step",
        "adapt.unfreeze_schedule.at={block.0: 12, embeddings: 20}",
        "training.save_strategy=steps",
        "training.save_steps=5",
        "training.num_train_epochs=2",
    ]
    straight = Recipe.from_dict(dict(recipe_values, output_dir=str(tmp_path / "straight")), schedule)
    straight_results = straight.run()
    stopped_dir = str(tmp_path / "stopped")
    stopper = StopAt(10)
    with pytest.raises(RunFailed, match="SimulatedCrash: the test's crash after step"):
        Recipe.from_dict(dict(recipe_values, output_dir=stopped_dir), schedule).run(callbacks=[stopper])
    assert stopper.stopped_at == 10
    resumed = Recipe.from_dict(dict(recipe_values, output_dir=stopped_dir), [*schedule, "training.resume=true"])
    resumed_results = resumed.run()
    for key, value in quality(straight_results).items():
        assert math.isclose(resumed_results[key], value, rel_tol=1e-5, abs_tol=1e-7), key
    straight_losses, resumed_losses = losses(straight.output_dir), losses(resumed.output_dir)
    for step in (15, 20, 25, 30):
        assert math.isclose(resumed_losses[step], straight_losses[step], rel_tol=1e-5), step


def test_unknown_group_in_the_schedule_is_an_error_before_anything_is_written(recipe_values):
    recipe = Recipe.from_dict(recipe_values, ["adapt.unfreeze_schedule.at={block.9: 1}"])
    with pytest.raises(HubtuneError, match="adapt.unfreeze_schedule.at.block.9"):
        recipe.run()
    assert not recipe.output_dir.exists()


def test_lp_ft_probes_the_head_then_fine_tunes_from_it(recipe_values, tiny_bert):
    class HeadAtStart(TrainerCallback):
        head = None
        backbone = None

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.head = model.classifier.weight.detach().clone()
            self.backbone = model.bert.encoder.layer[0].output.dense.weight.detach().clone()

    start = HeadAtStart()
    recipe = Recipe.from_dict(
        recipe_values, ["adapt.strategy=lp_ft", "adapt.lp_ft.probe_epochs=2", "adapt.lp_ft.probe_learning_rate=5e-3"]
    )
    results = recipe.run(callbacks=[start])
    assert results["probe_eval_accuracy"] >= 0.9 and results["test_accuracy"] >= 0.9
    assert (recipe.output_dir / "linear_probe" / "all_results.json").is_file()
    assert results["trainable_share"] == 1.0  # the fine-tuning stage trains everything
    # The fine-tuning stage starts from the probed head on the untouched pretrained backbone.
    original = BertForSequenceClassification.from_pretrained(tiny_bert)
    assert torch.equal(start.backbone, original.bert.encoder.layer[0].output.dense.weight)
    fresh = Recipe.from_dict(recipe_values)
    from transformers import set_seed

    from pipelines.tasks import PreparedData
    from pipelines.tasks.text_classification import TextClassification

    task = TextClassification(fresh.config)
    # The tokenizer too: text classification sizes the embeddings and pad id from it.
    labelled = PreparedData({}, task.load_processor(), ["negative", "positive"])
    set_seed(fresh.config.seed)
    initial_head = task.build_model(labelled).classifier.weight
    assert not torch.equal(start.head, initial_head)
