"""Multi-process runs through `accelerate launch` on CPU: 2-process gloo DDP against one process, 2-process FSDP2
leaving a loadable run folder; and the order ZeRO-3 needs (TrainingArguments before the model)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import soundfile
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
    # use_configured_state: the Trainer keeps the distributed state workers/fsdp.py set up (see there why). fp32 on
    # every CPU: FSDP holds mixed precision in its sharded parameters' dtype, which the final test pass keeps, and
    # the reload below is compared in fp32 (docs/distributed.md).
    values["training"] = dict(
        values["training"],
        per_device_train_batch_size=8,
        accelerator_config={"use_configured_state": True},
        bf16=False,
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
    # The test stream is scored once over: its last batch's padding is not counted (evaluation loaders dispatch).
    assert ranks[0]["results"]["test_samples"] == 60
    assert ranks[0]["wrote"] and not ranks[1]["wrote"]


def test_two_processes_each_read_their_own_share_of_streamed_audio(tmp_path):
    """`data.streaming` of the three speech tasks under 2 gloo processes (one launch, the runs in turn): the ranks
    decode disjoint halves of each training stream, which together cover it."""
    from helpers.speech import (
        TONES,
        faster_whisper_tokenizer,
        tiny_wav2vec2_folder,
        tiny_whisper,
        tone,
        write_ct2_whisper,
        write_spelled_split,
        write_tone_folder,
    )

    from pipelines.commands.cli import main
    from pipelines.data.audio import load_audio_data_file

    steps, batch = 3, 4  # 2 ranks x 3 steps x 4 = 24 examples: each training stream's 24 rows, read once
    training = {"max_steps": steps, "per_device_train_batch_size": batch, "save_strategy": "no", "warmup_steps": 0}
    training.update(eval_strategy="no", disable_tqdm=True, learning_rate=1e-3)
    data = {"streaming": True, "validation_split": None, "max_duration_s": 2}
    tones = {
        split: str(write_tone_folder(tmp_path / "tones" / split, n, seed))
        for split, n, seed in (("train", 8, 0), ("test", 2, 1))
    }
    spelled = {
        split: str(write_spelled_split(tmp_path / "spelled" / split, n, seed))
        for split, n, seed in (("train", 24, 0), ("test", 4, 1))
    }
    words = tmp_path / "words"
    words.mkdir()
    rng = random.Random(0)
    lines = {"train": [], "test": []}
    for i in range(30):
        word = list(TONES)[i % 3]
        soundfile.write(words / f"w{i}.wav", tone(TONES[word], 0.5, 16000, rng), 16000)
        lines["train" if i < 24 else "test"].append(json.dumps({"audio": f"w{i}.wav", "text": word}) + "\n")
    for split, rows in lines.items():
        (words / f"{split}.jsonl").write_text("".join(rows))
    whisper = tmp_path / "whisper"
    assert (
        main(
            [
                "import-ct2",
                str(write_ct2_whisper(tiny_whisper(), tmp_path / "ct2", faster_whisper_tokenizer())),
                str(whisper),
            ]
        )
        == 0
    )
    # wav2vec2 drops whole layers at random in training (its config's layerdrop, 0.1 by default): DDP must look for
    # the parameters a step left unused (docs/distributed.md).
    unused = {"ddp_find_unused_parameters": True}
    recipes = [
        ("audio-classification", tiny_wav2vec2_folder(tmp_path / "w2v"), tones, {"labels": sorted(TONES)}, unused),
        ("speech-recognition-ctc", tiny_wav2vec2_folder(tmp_path / "w2v-ctc", "Wav2Vec2Model"), spelled, {}, unused),
        (
            "speech-recognition-seq2seq",
            whisper,
            {s: str(words / f"{s}.jsonl") for s in lines},
            {},
            {"generation_max_length": 4},
        ),
    ]
    values = [
        {
            "name": task,
            "task": task,
            "output_dir": str(tmp_path / f"run-{task}"),
            "model": {"checkpoint": str(checkpoint)},
            "data": {"files": files, **data, **extra},
            "training": {**training, **extra_training},
        }
        for task, checkpoint, files, extra, extra_training in recipes
    ]
    recipes_path = tmp_path / "recipes.yaml"
    recipes_path.write_text(yaml.safe_dump(values))
    records = _launch("cpu_2proc.yaml", "workers/audio_stream.py", recipes_path, tmp_path)
    ranks = [json.loads((records / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [rank["world_size"] for rank in ranks] == [2, 2]
    for index, (task, _, files, _, _) in enumerate(recipes):
        train = load_audio_data_file(Path(files["train"]), "audio", "label")["audio"]
        # The collators' first batches are training batches (the final scoring comes after).
        seen = [[clip for batch in rank["runs"][index]["batches"][:steps] for clip in batch] for rank in ranks]
        assert [len(set(clips)) for clips in seen] == [steps * batch, steps * batch], task
        assert not set(seen[0]) & set(seen[1]), task
        assert set(seen[0]) | set(seen[1]) == set(train), task
        results = ranks[0]["runs"][index]["results"]
        # Scored on 2 ranks, each test example counts once: evaluation loaders are read by the main process.
        test = len(load_audio_data_file(Path(files["test"]), "audio", "label"))
        assert results["train_samples"] == 2 * steps * batch and results["test_samples"] == test, task
