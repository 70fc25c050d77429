"""What users of classifiers expect: decoder checkpoints as classifiers, byte-level BPE words with their running-
text pieces, model-config overrides, early stopping that keeps the best checkpoint."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from conftest import POSITIVE, make_sentence
from safetensors.torch import load_file

from pipelines import HubtuneError, Recipe, load_recipe_config
from pipelines.serving.predictor import Predictor
from pipelines.tasks import PreparedData
from pipelines.tasks.text_classification import TextClassification
from pipelines.tasks.token_classification import TokenClassification

END = "<|endoftext|>"


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory) -> Path:
    """A 2-layer GPT-2 language model with a byte-level BPE tokenizer that, like GPT-2's, has no pad token."""
    from tokenizers import ByteLevelBPETokenizer, Tokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    rng = random.Random(0)
    texts = [make_sentence(rng, label) for label in ("positive", "negative") for _ in range(100)]
    texts += ["Angela Merkel visited Paris", "John Smith met Maria in Berlin"] * 10
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=400, min_frequency=1, special_tokens=[END])
    tokenizer = GPT2TokenizerFast(
        tokenizer_object=Tokenizer.from_str(bpe.to_str()), eos_token=END, bos_token=END, unk_token=END
    )
    assert tokenizer.pad_token is None and not tokenizer.add_prefix_space
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_a_decoder_checkpoint_without_pad_token_classifies(recipe_values, tiny_gpt2, tmp_path):
    recipe_values["model"]["checkpoint"] = str(tiny_gpt2)
    results = Recipe.from_dict(recipe_values, ["training.learning_rate=3e-3"]).run()
    assert results["test_accuracy"] >= 0.9
    run = Path(recipe_values["output_dir"])
    # The pad token (GPT-2's end-of-text) is in the run's tokenizer and config, so the run folder reloads alone.
    assert json.loads((run / "config.json").read_text())["pad_token_id"] == 0
    predictor = Predictor(run)
    assert predictor.processor.pad_token == END
    texts = [f"the film was {cue}" for cue in POSITIVE[:2]] + ["a dull boring movie"]
    assert [p["label"] for p in predictor.predict(texts)] == ["positive", "positive", "negative"]


def test_presplit_words_get_their_running_text_pieces(tiny_gpt2, tmp_path):
    values = {
        "name": "bpe-ner",
        "task": "token-classification",
        "model": {"checkpoint": str(tiny_gpt2)},
        "data": {"files": {"train": str(tmp_path / "unused.jsonl")}, "labels": ["O", "B-PER", "I-PER"]},
    }
    tokenizer = TokenClassification(load_recipe_config(values=values)).load_processor()
    words = ["Angela", "Merkel", "visited", "Paris"]
    presplit = tokenizer(words, is_split_into_words=True, add_special_tokens=False).tokens()
    running = tokenizer(" ".join(words), add_special_tokens=False).tokens()
    # Every word's first piece carries its leading space, as in running text (not 'Mer' against 'ĠMer').
    assert presplit == running
    assert sum(piece.startswith("Ġ") for piece in presplit) == len(words)


def test_config_overrides_reach_the_model_and_a_misspelt_one_is_named(recipe_values, tiny_bert):
    overrides = ["model.config_overrides={hidden_dropout_prob: 0.3, attention_probs_dropout_prob: 0.2}"]
    config = load_recipe_config(values=recipe_values, overrides=overrides)
    task = TextClassification(config)
    labelled = PreparedData({}, task.load_processor(), ["negative", "positive"])
    model = task.build_model(labelled)
    assert (model.config.hidden_dropout_prob, model.config.attention_probs_dropout_prob) == (0.3, 0.2)
    assert model.bert.encoder.layer[0].output.dropout.p == 0.3
    scratch = load_recipe_config(values=recipe_values, overrides=[*overrides, "model.from_scratch=true"])
    assert TextClassification(scratch).build_model(labelled).config.hidden_dropout_prob == 0.3
    recipe = Recipe.from_dict(recipe_values, ["model.config_overrides={hiden_dropout_prob: 0.3}"])
    with pytest.raises(
        HubtuneError,
        match=r"'model.config_overrides.hiden_dropout_prob' is not a field.*"
        r"did you mean 'model.config_overrides.hidden_dropout_prob'",
    ):
        recipe.run()
    assert not Path(recipe_values["output_dir"]).exists()


EARLY = [
    "training.early_stopping_patience=1",
    "training.early_stopping_threshold=1.0",  # no evaluation can improve accuracy by 1: stop at the second one
    "training.metric_for_best_model=accuracy",
    "training.save_strategy=epoch",
]


def test_early_stopping_stops_and_keeps_the_best_checkpoint(recipe_values):
    results = Recipe.from_dict(recipe_values, [*EARLY, "training.save_total_limit=4"]).run()
    run = Path(recipe_values["output_dir"])
    state = json.loads((run / "trainer_state.json").read_text())
    steps_per_epoch = 240 // 16
    assert state["global_step"] == 2 * steps_per_epoch < 4 * steps_per_epoch  # 2 of the 4 epochs
    assert Path(state["best_model_checkpoint"]) == run / f"checkpoint-{steps_per_epoch}"
    saved, best = (
        load_file(run / "model.safetensors"),
        load_file(run / f"checkpoint-{steps_per_epoch}" / "model.safetensors"),
    )
    assert saved.keys() == best.keys() and all(torch.equal(saved[name], best[name]) for name in saved)
    assert results["eval_accuracy"] == pytest.approx(state["best_metric"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["training.early_stopping_patience=2"], "set 'training.metric_for_best_model'"),
        ([*EARLY, "training.eval_strategy=no"], "needs evaluations: set 'training.eval_strategy'"),
        ([*EARLY, "training.save_strategy=no"], r"'training.save_strategy' \(no\) must equal"),
        (["training.early_stopping_threshold=0.1"], "needs 'training.early_stopping_patience'"),
        (["training.early_stopping_patience=0"], "must be at least 1, got 0"),
        (["training.early_stopping_patience=two"], "'training.early_stopping_patience' must be int"),
    ],
)
def test_early_stopping_needs_what_it_watches(recipe_values, overrides, message):
    with pytest.raises(HubtuneError, match=message):
        load_recipe_config(values=recipe_values, overrides=overrides)
