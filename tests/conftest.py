"""Fixtures: a tiny BERT checkpoint and tokenizer built offline, and sentiment files with a learnable signal."""

from __future__ import annotations

import csv
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The suite runs as on a CPU without AMX, in this process and the hubtune processes it starts: oneDNN held to
# AVX-512, and so hubtune's runs in fp32 (pipelines/training/speed.py), on every machine alike. On an AMX CPU the
# bf16 default moves a 2-layer test model's few high-rate steps enough to cross a learning test's threshold.
# tests/test_speed.py fakes AMX on and off and runs the bf16 path for real.
os.environ["ONEDNN_MAX_CPU_ISA"] = "AVX512_CORE_BF16"

# The test models are tiny: a second intra-op thread gains nothing, and on a 2-core machine shared with another
# busy process a 2-thread pool stalls at every op (a 60-step run took ~20 s instead of ~1 s). One thread keeps
# the suite fast and its timing stable.
torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`gpu` tests need a CUDA device: on a machine without one they are skipped, saying so."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (marker 'gpu'); this machine has none")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)


POSITIVE = ["good", "great", "excellent", "wonderful", "superb", "lovely"]
NEGATIVE = ["bad", "awful", "terrible", "dull", "boring", "poor"]
FILLER = ["the", "film", "was", "plot", "acting", "story", "really", "quite", "a", "and", "movie", "cast"]


def make_sentence(rng: random.Random, label: str) -> str:
    cue = rng.choice(POSITIVE if label == "positive" else NEGATIVE)
    words = rng.sample(FILLER, 5)
    words.insert(rng.randrange(len(words) + 1), cue)
    return " ".join(words)


def write_sentiment_csv(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for i in range(n):
            label = "positive" if i % 2 else "negative"
            writer.writerow([make_sentence(rng, label), label])
    return path


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer BERT (hidden 32) with a WordPiece tokenizer, saved as a checkpoint folder.

    It is "pretrained" on a source task (cue words -> class, other sentences than the tests use), so
    that, like a real checkpoint, its frozen features carry the signal and head-only training can learn.
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = special + POSITIVE + NEGATIVE + FILLER + ["what", "to", "too", "long", "#", "##s"]
    tokenizer = BertTokenizerFast(vocab={word: i for i, word in enumerate(words)})
    tokenizer.save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(words),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    rng = random.Random(100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(40):
        labels = [rng.randrange(2) for _ in range(32)]
        batch = tokenizer(
            [make_sentence(rng, ["negative", "positive"][y]) for y in labels], padding=True, return_tensors="pt"
        )
        loss = model(**batch, labels=torch.tensor(labels)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def sentiment_files(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("sentiment")
    return {
        split: str(write_sentiment_csv(folder / f"{split}.csv", n, seed))
        for split, n, seed in (("train", 240, 0), ("validation", 60, 1), ("test", 60, 2))
    }


def make_recipe_values(tiny_bert: Path, sentiment_files: dict[str, str], output_dir: Path) -> dict:
    """The fast text-classification recipe of `recipe_values`, for any run folder (usable by wider-scoped fixtures)."""
    return {
        "name": "tiny-sentiment",
        "output_dir": str(output_dir),
        "model": {"checkpoint": str(tiny_bert)},
        "data": {"files": dict(sentiment_files), "labels": ["negative", "positive"], "max_length": 32},
        "training": {
            "num_train_epochs": 4,
            "learning_rate": 5e-3,
            "per_device_train_batch_size": 16,
            "logging_steps": 5,
            "save_strategy": "no",
            "disable_tqdm": True,
        },
    }


@pytest.fixture
def recipe_values(tiny_bert, sentiment_files, tmp_path) -> dict:
    """A fast text-classification recipe on the tiny checkpoint."""
    return make_recipe_values(tiny_bert, sentiment_files, tmp_path / "run")


@dataclass
class TrainedRun:
    """One finished run: its folder, returned results, the in-memory trained model and the Recipe that made it."""

    strategy: str
    run_dir: Path
    results: dict
    model: Any
    recipe: Any


def strategy_overrides(strategy: str) -> list[str]:
    return [f"adapt.strategy={strategy}"] + (["adapt.n=1"] if strategy == "train_last_n" else [])


@pytest.fixture(scope="session")
def trained_run(tiny_bert, sentiment_files, tmp_path_factory):
    """`trained_run(strategy)`: the `recipe_values` recipe with that adapt strategy, trained once per session.

    The model object the Trainer finished with is kept (captured by a callback at the end of training), so
    tests can compare it with what a reload of the run folder gives.
    """
    from transformers import TrainerCallback

    from pipelines import Recipe

    class KeepModel(TrainerCallback):
        model = None

        def on_train_end(self, args, state, control, model=None, **kwargs):
            self.model = model

    runs: dict[str, TrainedRun] = {}

    def train(strategy: str) -> TrainedRun:
        if strategy not in runs:
            run_dir = tmp_path_factory.mktemp(f"run-{strategy}") / "run"
            values = make_recipe_values(tiny_bert, sentiment_files, run_dir)
            recipe = Recipe.from_dict(values, overrides=strategy_overrides(strategy))
            keep = KeepModel()
            results = recipe.run(callbacks=[keep])
            assert keep.model is not None, "the Trainer never reached on_train_end"
            runs[strategy] = TrainedRun(strategy, run_dir, results, keep.model, recipe)
        return runs[strategy]

    return train
