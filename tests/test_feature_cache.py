"""Feature cache for frozen backbones: cached == uncached, the saved model is the full model, cache reuse."""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import load_file
from transformers import BertForTokenClassification

from pipelines import HubtuneError, Recipe, load_recipe_config
from pipelines.data.splits import load_splits
from pipelines.serving.predictor import Predictor
from pipelines.tasks.text_classification import TextClassification
from pipelines.training.feature_cache import FeatureCache

TEXTS = ["the film was good", "awful plot", "a superb cast and story", "dull boring acting", "quite lovely"]


def test_cached_head_training_matches_the_uncached_route(recipe_values, tmp_path, tiny_bert, caplog):
    cache_dir = tmp_path / "features"
    common = ["adapt.strategy=freeze_backbone", "training.num_train_epochs=3"]
    plain = Recipe.from_dict(dict(recipe_values, output_dir=str(tmp_path / "plain")), common)
    cached = Recipe.from_dict(
        dict(recipe_values, output_dir=str(tmp_path / "cached")),
        [*common, "adapt.feature_cache=true", f"adapt.feature_cache_dir={cache_dir}"],
    )
    plain_results, cached_results = plain.run(), cached.run()
    assert cached_results["test_accuracy"] == plain_results["test_accuracy"] >= 0.9
    assert cached_results["test_loss"] == pytest.approx(plain_results["test_loss"], abs=1e-3)
    assert len([p for p in cache_dir.iterdir() if p.is_dir()]) == 3  # train, validation, test

    # The run folder holds the full model: the real, untouched backbone plus the trained head.
    saved = load_file(cached.output_dir / "model.safetensors")
    original = load_file(tiny_bert / "model.safetensors")
    backbone = [name for name in saved if name.startswith("bert.")]
    assert backbone and all(torch.equal(saved[name], original[name]) for name in backbone)
    plain_scores = Predictor.from_run(plain.output_dir).predict(TEXTS)
    cached_scores = Predictor.from_run(cached.output_dir).predict(TEXTS)
    for a, b in zip(plain_scores, cached_scores):
        assert a["label"] == b["label"] and a["score"] == pytest.approx(b["score"], abs=1e-3)

    # A second run on the same data reads the cache instead of running the backbone again.
    again = Recipe.from_dict(
        dict(recipe_values, output_dir=str(tmp_path / "again")),
        [*common, "adapt.feature_cache=true", f"adapt.feature_cache_dir={cache_dir}"],
    )
    with caplog.at_level(logging.INFO, logger="pipelines.training.feature_cache"):
        again_results = again.run()
    assert "feature cache hit" in caplog.text and "computing backbone features" not in caplog.text
    assert again_results["test_accuracy"] == cached_results["test_accuracy"]


def test_feature_cache_needs_freeze_backbone(recipe_values):
    with pytest.raises(HubtuneError, match="'adapt.feature_cache' needs 'adapt.strategy: freeze_backbone'"):
        load_recipe_config(values=recipe_values, overrides=["adapt.feature_cache=true", "adapt.strategy=full"])


def test_a_head_that_reads_every_position_is_refused(recipe_values, tiny_bert, tmp_path):
    config = load_recipe_config(values=recipe_values, overrides=[f"adapt.feature_cache_dir={tmp_path}"])
    task = TextClassification(config)
    processor = task.load_processor()
    data = task.prepare(load_splits(config.data, config.seed), processor)
    model = BertForTokenClassification.from_pretrained(tiny_bert, num_labels=2)
    cache = FeatureCache(model, config, task.data_collator(processor))
    with pytest.raises(HubtuneError, match="cannot stand in for BertForTokenClassification"):
        cache.cached({"validation": data["validation"]}, batch_size=32)


def test_random_backbones_of_two_seeds_get_their_own_cache_entries(recipe_values, tmp_path):
    """`model.from_scratch` draws the backbone from the seed: a second seed's run computes its own features (they
    were served the first seed's before, which the cache's check then refused as a head it cannot stand in for)."""
    cache_dir = tmp_path / "features"
    common = [
        "adapt.strategy=freeze_backbone",
        "model.from_scratch=true",
        "training.num_train_epochs=1",
        "adapt.feature_cache=true",
        f"adapt.feature_cache_dir={cache_dir}",
    ]
    for seed in (1, 2):
        values = dict(recipe_values, output_dir=str(tmp_path / f"seed{seed}"))
        assert "test_accuracy" in Recipe.from_dict(values, [*common, f"seed={seed}"]).run()
    assert len([p for p in cache_dir.iterdir() if p.is_dir()]) == 6  # train, validation, test, per seed
