"""Multi-process runs through `accelerate launch` on CPU: 2-process gloo DDP against one process, 2-process FSDP2
leaving a loadable run folder; and the order ZeRO-3 needs (TrainingArguments before the model)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from transformers import TrainerCallback

from pipelines import Recipe

pytestmark = pytest.mark.distributed
ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "accelerate_configs").glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_accelerate_configs_load(config):
    from accelerate.commands.config.config_args import load_config_from_file

    loaded = load_config_from_file(str(config))
    assert loaded.num_processes >= 1 and loaded.distributed_type is not None


def test_two_process_ddp_splits_data_writes_once_and_matches_one_process(recipe_values, tmp_path):
    # Global batch 16 in both runs: 2 ranks x 8, or 1 process x 16.
    values = dict(recipe_values, output_dir=str(tmp_path / "ddp-run"))
    values["training"] = dict(values["training"], per_device_train_batch_size=8, eval_strategy="no")
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(values))
    cache = tmp_path / "datasets-cache"
    records = _launch("cpu_2proc.yaml", "workers/ddp.py", recipe_path, tmp_path, datasets_cache=cache)
    ranks = [json.loads((records / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]

    # The data is tokenised once: rank 0 writes each split's cache file, rank 1 then reads the three of them.
    assert ranks[0]["cached_loads"] == 0 and ranks[1]["cached_loads"] == 3
    assert len(list(cache.rglob("cache-*.arrow"))) == 3

    # First epoch: each rank saw half of the training set, and together all of it.
    train_size = ranks[0]["results"]["train_samples"]
    first_epoch = [[tuple(ids) for batch in r["batches"] for ids in batch][: train_size // 2] for r in ranks]
    assert Counter(first_epoch[0]) != Counter(first_epoch[1])
    single = Recipe.from_dict(
        dict(recipe_values, output_dir=str(tmp_path / "single-run")), ["training.eval_strategy=no"]
    )
    single_results = single.run()
    all_train = Counter(tuple(ids) for ids in _tokenized_train(single))
    assert Counter(first_epoch[0]) + Counter(first_epoch[1]) == all_train

    # Only rank 0 wrote the run folder's own files.
    assert ranks[0]["wrote"] and not ranks[1]["wrote"]
    assert (tmp_path / "ddp-run" / "all_results.json").is_file()

    # Same optimisation: the loss is not doubled (transformers' token averaging across devices is off).
    ddp_results = ranks[0]["results"]
    assert ddp_results["test_accuracy"] >= 0.9 and single_results["test_accuracy"] >= 0.9
    assert 0.75 < ddp_results["train_loss"] / single_results["train_loss"] < 1.33
    assert abs(ddp_results["test_loss"] - single_results["test_loss"]) < 0.1


def _launch(config: str, worker: str, recipe_path: Path, tmp_path: Path, datasets_cache: Path | None = None) -> Path:
    """Two processes of `tests/<worker>` under `accelerate launch`; returns the folder their records are in."""
    records = tmp_path / "records"
    records.mkdir()
    accelerate = Path(sys.executable).with_name("accelerate")
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    if datasets_cache is not None:  # a cache of its own: what the run writes there is all this run's
        env["HF_DATASETS_CACHE"] = str(datasets_cache)
    completed = subprocess.run(
        [
            str(accelerate),
            "launch",
            "--config_file",
            str(ROOT / "accelerate_configs" / config),
            str(ROOT / "tests" / worker),
            str(recipe_path),
            str(records),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return records


def test_two_process_fsdp2_shards_and_its_run_folder_holds_the_trained_model(recipe_values, tmp_path):
    import torch
    from accelerate import PartialState
    from transformers import AutoModelForSequenceClassification

    from pipelines.serving.predictor import Predictor

    run_dir = tmp_path / "fsdp-run"
    values = dict(recipe_values, output_dir=str(run_dir))
    # use_configured_state: the Trainer keeps the distributed state workers/fsdp.py set up (see there why).
    values["training"] = dict(
        values["training"], per_device_train_batch_size=8, accelerator_config={"use_configured_state": True}
    )
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(values))
    records = _launch("cpu_fsdp_2proc.yaml", "workers/fsdp.py", recipe_path, tmp_path)
    ranks = [json.loads((records / f"rank{r}.json").read_text()) for r in (0, 1)]
    results = ranks[0]["results"]

    # Really sharded, not DDP in disguise: DTensor parameters, each rank holding its part (about half) of them.
    assert [rank["world_size"] for rank in ranks] == [2, 2]
    assert [rank["parameter_types"] for rank in ranks] == [["DTensor"], ["DTensor"]]
    local = [rank["local_numel"] for rank in ranks]
    assert sum(local) == results["total_parameters"] and max(local) < 0.6 * sum(local)
    assert results["test_accuracy"] >= 0.9

    # The run folder holds the gathered trained weights (the config's sharded state dict type saves none)...
    trained = torch.load(records / "trained.pt")
    loaded = AutoModelForSequenceClassification.from_pretrained(run_dir).state_dict()
    assert loaded.keys() == trained.keys()
    for name, tensor in trained.items():
        torch.testing.assert_close(loaded[name], tensor, rtol=0, atol=0, msg=name)
    # ... and predicts as the run did (the loss in a different summation order over two ranks, in float32). The recipe's
    # use_configured_state makes evaluation want a configured state too: this process's own, not distributed.
    PartialState()
    reloaded = Predictor(run_dir).evaluate("test")
    timing = ("test_runtime", "test_samples_per_second", "test_steps_per_second", "test_model_preparation_time")
    expected = {key: value for key, value in results.items() if key.startswith("test_") and key not in timing}
    expected.pop("test_samples")
    assert {key: value for key, value in reloaded.items() if key not in timing} == pytest.approx(expected, rel=1e-5)


def _tokenized_train(recipe: Recipe) -> list[list[int]]:
    from pipelines.data.splits import load_splits
    from pipelines.tasks.text_classification import TextClassification

    task = TextClassification(recipe.config)
    processor = task.load_processor()
    data = task.prepare(load_splits(recipe.config.data, recipe.config.seed), processor)
    return data["train"]["input_ids"]


def test_the_runs_training_arguments_exist_before_the_model_is_built(recipe_values, monkeypatch):
    # Under DeepSpeed ZeRO-3, from_pretrained loads each rank's shard only while the run's TrainingArguments
    # (which hold the DeepSpeed config transformers reads through a weak reference) exist. DeepSpeed is not
    # installed here, so this checks the order itself: the arguments the run trains with predate build_model.
    import pipelines.runner.recipe as recipe_module
    from pipelines.tasks.text_classification import TextClassification

    made: list = []
    existing_at_build: list = []
    make_arguments, build_model = recipe_module.training_arguments, TextClassification.build_model

    def recording_arguments(*args, **kwargs):
        made.append(make_arguments(*args, **kwargs))
        return made[-1]

    def recording_build(self, data):
        existing_at_build.append(list(made))
        return build_model(self, data)

    class TrainedWith(TrainerCallback):
        arguments = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.arguments = args

    monkeypatch.setattr(recipe_module, "training_arguments", recording_arguments)
    monkeypatch.setattr(TextClassification, "build_model", recording_build)
    trained_with = TrainedWith()
    Recipe.from_dict(recipe_values, ["training.num_train_epochs=1"]).run(callbacks=[trained_with])
    assert len(existing_at_build) == 1 and len(existing_at_build[0]) == 1
    assert existing_at_build[0][0] is trained_with.arguments


def test_two_processes_each_read_their_own_share_of_a_stream(recipe_values, tmp_path):
    """`data.streaming` under 2 gloo processes: the ranks train on different examples of the one stream."""
    steps, batch = 6, 8  # 2 ranks x 6 steps x 8 = 96 examples, fewer than the 240 rows: no pass over the end
    values = dict(recipe_values, output_dir=str(tmp_path / "stream-run"))
    values["data"] = dict(values["data"], streaming=True)
    values["training"] = dict(
        values["training"], per_device_train_batch_size=batch, max_steps=steps, eval_strategy="no"
    )
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(values))
    records = _launch("cpu_2proc.yaml", "workers/ddp.py", recipe_path, tmp_path)
    ranks = [json.loads((records / f"rank{r}.json").read_text()) for r in (0, 1)]
    # The collator's first batches are training batches (the final scoring comes after).
    seen = [Counter(tuple(ids) for batch in rank["batches"][:steps] for ids in batch) for rank in ranks]
    assert [sum(counts.values()) for counts in seen] == [steps * batch, steps * batch]
    single = Recipe.from_dict(dict(recipe_values, output_dir=str(tmp_path / "single")), ["training.eval_strategy=no"])
    all_train = Counter(tuple(ids) for ids in _tokenized_train(single))
    # Between them the ranks read each training row at most once: different shares, not one stream twice.
    assert seen[0] + seen[1] <= all_train and seen[0] != seen[1]
    assert ranks[0]["results"]["train_samples"] == 2 * steps * batch
    assert ranks[0]["wrote"] and not ranks[1]["wrote"]
