"""A tiny NER world for the token-classification tests: a WordPiece tokenizer on which several names split
into pieces, a 2-layer BERT token classifier saved offline, and sentences whose tags are learnable."""

from __future__ import annotations

import json
import random
from pathlib import Path

FIRST_NAMES = ["anna", "john", "maria", "peter", "angela"]
LAST_NAMES = ["smith", "merkel", "jones", "keller"]  # merkel, keller: two pieces each
CITIES = ["berlin", "paris", "london", "rome", "madrid"]  # berlin, paris, london, madrid: two pieces each
FILLER = ["the", "visited", "met", "in", "today", "and", "saw", "a", "friend", "from", "said", "was", "."]
# Names are absent from the vocabulary on purpose: they split into these pieces.
PIECES = ["mer", "##kel", "kel", "##ler", "ber", "##lin", "par", "##is", "lon", "##don", "mad", "##rid"]
TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def vocabulary() -> list[str]:
    whole = [
        w
        for w in FIRST_NAMES + LAST_NAMES + CITIES
        if w not in {"merkel", "keller", "berlin", "paris", "london", "madrid"}
    ]
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "new", "york"] + whole + PIECES + FILLER


def make_sentence(rng: random.Random) -> tuple[list[str], list[str]]:
    words, tags = [], []
    for _ in range(rng.randint(1, 3)):
        words += rng.sample(FILLER, rng.randint(1, 3))
        tags += ["O"] * (len(words) - len(tags))
        if rng.random() < 0.5:
            person = [rng.choice(FIRST_NAMES)] + ([rng.choice(LAST_NAMES)] if rng.random() < 0.6 else [])
            words += person
            tags += ["B-PER"] + ["I-PER"] * (len(person) - 1)
        else:
            city = ["new", "york"] if rng.random() < 0.2 else [rng.choice(CITIES)]
            words += city
            tags += ["B-LOC"] + ["I-LOC"] * (len(city) - 1)
    return words, tags


def write_conll(path: Path, n: int, seed: int) -> Path:
    """CoNLL-2003 layout: token, POS, chunk, NER tag; -DOCSTART- lines between documents."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        if i % 20 == 0:
            lines += ["-DOCSTART- -X- -X- O", ""]
        words, tags = make_sentence(rng)
        lines += [f"{w} NN B-NP {t}" for w, t in zip(words, tags)] + [""]
    path.write_text("\n".join(lines))
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def build_tiny_ner_bert(folder: Path) -> Path:
    import torch
    from transformers import BertConfig, BertForTokenClassification, BertTokenizerFast

    words = vocabulary()
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
    BertForTokenClassification(config).save_pretrained(folder)
    return folder


def ner_recipe_values(checkpoint: Path, files: dict[str, str], output_dir: Path) -> dict:
    return {
        "name": "tiny-ner",
        "task": "token-classification",
        "output_dir": str(output_dir),
        "model": {"checkpoint": str(checkpoint)},
        "data": {"files": dict(files), "tags_column": "ner_tags", "conll_tag_column": 3, "max_length": 48},
        "training": {
            "num_train_epochs": 6,
            "learning_rate": 5e-3,
            "per_device_train_batch_size": 16,
            "logging_steps": 10,
            "save_strategy": "no",
            "disable_tqdm": True,
        },
    }
