"""Fixtures: a tiny BERT checkpoint and tokenizer built offline, and sentiment files with a learnable signal."""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

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
    config = BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    rng = random.Random(100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(40):
        labels = [rng.randrange(2) for _ in range(32)]
        batch = tokenizer([make_sentence(rng, ["negative", "positive"][y]) for y in labels], padding=True,
                          return_tensors="pt")
        loss = model(**batch, labels=torch.tensor(labels)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def sentiment_files(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("sentiment")
    return {split: str(write_sentiment_csv(folder / f"{split}.csv", n, seed))
            for split, n, seed in (("train", 240, 0), ("validation", 60, 1), ("test", 60, 2))}


@pytest.fixture
def recipe_values(tiny_bert, sentiment_files, tmp_path) -> dict:
    """A fast text-classification recipe on the tiny checkpoint."""
    return {
        "name": "tiny-sentiment",
        "output_dir": str(tmp_path / "run"),
        "model": {"checkpoint": str(tiny_bert)},
        "data": {"files": dict(sentiment_files), "labels": ["negative", "positive"], "max_length": 32},
        "training": {"num_train_epochs": 4, "learning_rate": 5e-3, "per_device_train_batch_size": 16,
                     "logging_steps": 5, "save_strategy": "no", "disable_tqdm": True},
    }
