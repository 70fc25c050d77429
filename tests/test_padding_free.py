"""Padding-free token classification: a packed batch gives the padded batch's loss and logits on a model whose
attention keeps packed sentences apart (a causal-mask architecture, Qwen2, under sdpa on CPU), and a model whose
attention does not (BERT under sdpa) is refused before the run folder is touched."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from helpers.ner import build_tiny_ner_bert, make_sentence, ner_recipe_values, vocabulary, write_conll
from transformers import (
    BertTokenizerFast,
    DataCollatorForTokenClassification,
    Qwen2Config,
    Qwen2ForTokenClassification,
    RobertaConfig,
    RobertaForTokenClassification,
)

from pipelines import Recipe
from pipelines.compat import attention_implementation
from pipelines.data.padding_free import TokenFlattening, _position_start, check_packing
from pipelines.errors import HubtuneError


def tiny_qwen2(num_labels: int = 5) -> Qwen2ForTokenClassification:
    config = Qwen2Config(
        vocab_size=len(vocabulary()),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=num_labels,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    return Qwen2ForTokenClassification(config)


def build_tiny_ner_qwen2(folder: Path) -> Path:
    # The tokenizer need not match the architecture: a WordPiece one gives the word ids NER alignment reads.
    BertTokenizerFast(vocab={word: i for i, word in enumerate(vocabulary())}).save_pretrained(folder)
    tiny_qwen2().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def ner_world(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("padding-free")
    files = {
        s: str(write_conll(root / f"{s}.conll", n, seed))
        for s, n, seed in (("train", 120, 0), ("validation", 30, 1), ("test", 30, 2))
    }
    return {"root": root, "files": files}


def examples(n: int = 6) -> list[dict]:
    """Tokenised sentences of different lengths, with real tags on word starts and -100 elsewhere."""
    tokenizer = BertTokenizerFast(vocab={word: i for i, word in enumerate(vocabulary())})
    rng = random.Random(3)
    rows = []
    for _ in range(n):
        words, _ = make_sentence(rng)
        encoded = tokenizer(words, is_split_into_words=True)
        labels = [-100 if w is None else rng.randrange(5) for w in encoded.word_ids()]
        rows.append({"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"], "labels": labels})
    assert len({len(row["input_ids"]) for row in rows}) > 1  # padding is really needed
    return rows


def test_packed_batch_gives_the_padded_batch_loss_and_logits():
    model = tiny_qwen2()
    start = check_packing(model)
    assert start == 0
    rows = examples()
    tokenizer = BertTokenizerFast(vocab={word: i for i, word in enumerate(vocabulary())})
    padded = DataCollatorForTokenClassification(tokenizer)(rows)
    packed = TokenFlattening(position_ids_start=start)(rows)
    assert packed["input_ids"].shape == (1, sum(len(row["input_ids"]) for row in rows))
    assert "attention_mask" not in packed
    model.eval()
    with torch.no_grad():
        padded_out = model(**padded)
        packed_out = model(**packed)
    assert torch.allclose(packed_out.loss, padded_out.loss, atol=1e-5)
    offset = 0
    for i, row in enumerate(rows):
        length = len(row["input_ids"])
        assert torch.allclose(packed_out.logits[0, offset : offset + length], padded_out.logits[i, :length], atol=1e-5)
        offset += length


def test_every_token_keeps_its_label():
    # transformers' collator would blank each sentence's first label (a causal LM's shift); a tagger needs them all.
    rows = [{"input_ids": [5, 6, 7], "labels": [1, 2, 3]}, {"input_ids": [8, 9], "labels": [4, -100]}]
    batch = TokenFlattening()(rows)
    assert batch["labels"].tolist() == [[1, 2, 3, 4, -100]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]


def test_bert_under_sdpa_is_refused(tmp_path):
    from transformers import AutoModelForTokenClassification

    model = AutoModelForTokenClassification.from_pretrained(build_tiny_ner_bert(tmp_path / "bert"))
    assert attention_implementation(model.config) == "sdpa"  # transformers 5's default
    with pytest.raises(HubtuneError, match="flash_attention_2"):
        check_packing(model)


def test_roberta_positions_start_after_the_padding_index():
    # RoBERTa numbers positions from padding_idx + 1; packed sentences must restart there, not at 0.
    config = RobertaConfig(
        vocab_size=60, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, pad_token_id=1
    )
    model = RobertaForTokenClassification(config).eval()
    with torch.no_grad():
        assert _position_start(model) == 2


def test_padding_free_run_trains_and_records_it(ner_world):
    checkpoint = build_tiny_ner_qwen2(ner_world["root"] / "tiny-ner-qwen2")
    run_dir = ner_world["root"] / "run"
    values = ner_recipe_values(checkpoint, ner_world["files"], run_dir)
    values["data"]["padding_free"] = True
    values["training"]["num_train_epochs"] = 1
    results = Recipe.from_dict(values).run()
    assert results["speed_settings"]["padding_free"] is True
    assert results["train_loss"] > 0 and "test_f1" in results  # evaluation ran on padded per-sentence batches


def test_refused_model_leaves_no_run_folder(ner_world):
    checkpoint = build_tiny_ner_bert(ner_world["root"] / "tiny-ner-bert")
    run_dir = ner_world["root"] / "refused"
    values = ner_recipe_values(checkpoint, ner_world["files"], run_dir)
    values["data"]["padding_free"] = True
    with pytest.raises(HubtuneError, match="data.padding_free"):
        Recipe.from_dict(values).run()
    assert not run_dir.exists()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"task": "text-classification", "data": {"padding_free": True}}, "belongs to task token-classification"),
        ({"data": {"padding_free": True, "pad_to_max_length": True}}, "contradict"),
        ({"data": {"padding_free": True}, "adapt": {"strategy": "freeze_backbone", "feature_cache": True}}, "keep one"),
    ],
)
def test_recipe_keys_refused_at_load(ner_world, values, message):
    recipe = ner_recipe_values(Path("/unused"), ner_world["files"], ner_world["root"] / "unused")
    for section, keys in values.items():
        recipe[section] = {**recipe.get(section, {}), **keys} if isinstance(keys, dict) else keys
    with pytest.raises(HubtuneError, match=message):
        Recipe.from_dict(recipe)
