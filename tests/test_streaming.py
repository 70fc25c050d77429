"""`data.streaming`: splits read as streams (datasets' IterableDataset), tokenised as training reads them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines import HubtuneError, Recipe, load_recipe_config
from pipelines.serving.predictor import Predictor

# Trains models for seconds each: `make test-fast` leaves this module out.
pytestmark = pytest.mark.slow

STREAMING = ["data.streaming=true", "data.labels=[negative,positive]", "training.max_steps=40"]


def test_a_streamed_text_run_trains_scores_and_reloads(recipe_values):
    results = Recipe.from_dict(recipe_values, STREAMING).run()
    run = Path(recipe_values["output_dir"])
    state = json.loads((run / "trainer_state.json").read_text())
    assert state["global_step"] == 40
    # Batches of 16 over 40 steps: more than the 240 training rows, read again from the start of the stream.
    assert results["train_samples"] == 40 * 16
    assert results["test_samples"] == 60 and results["eval_samples"] == 60
    assert results["test_accuracy"] >= 0.9
    # The run folder is an ordinary one: its model reloads and scores the test file alike.
    assert Predictor(run).evaluate("test")["test_accuracy"] == pytest.approx(results["test_accuracy"], abs=1e-6)


def test_streaming_needs_max_steps_and_label_names(recipe_values):
    with pytest.raises(HubtuneError, match="'data.streaming' needs 'training.max_steps'"):
        load_recipe_config(values=recipe_values, overrides=["data.streaming=true"])
    recipe_values["data"].pop("labels", None)
    recipe = Recipe.from_dict(recipe_values, ["data.streaming=true", "training.max_steps=5"])
    with pytest.raises(HubtuneError, match="with 'data.streaming' the label names must be listed in 'data.labels'"):
        recipe.run()
    assert not Path(recipe_values["output_dir"]).exists()
    with pytest.raises(HubtuneError, match="'data.validation_fraction' draws rows at random"):
        load_recipe_config(
            values=recipe_values, overrides=[*STREAMING, "data.validation_fraction=0.2", "data.validation_split=null"]
        )


def test_a_bad_label_deep_in_a_stream_names_its_row(recipe_values, tmp_path):
    lines = Path(recipe_values["data"]["files"]["train"]).read_text().splitlines()
    text, _ = lines[200].rsplit(",", 1)
    lines[200] = f"{text},neutral"
    train = tmp_path / "train.csv"
    train.write_text("\n".join(lines) + "\n")
    recipe_values["data"]["files"]["train"] = str(train)
    recipe = Recipe.from_dict(recipe_values, [*STREAMING, "training.max_steps=20"])
    with pytest.raises(
        HubtuneError, match=rf"data file '{train}', row 200: label 'neutral' in column 'label' is not in"
    ):
        recipe.run()


def test_a_streamed_ner_run_trains_and_names_bad_rows(tmp_path):
    import random

    from helpers.ner import TAGS, build_tiny_ner_bert, make_sentence, ner_recipe_values, write_jsonl

    checkpoint = build_tiny_ner_bert(tmp_path / "tiny-ner-bert")
    rng = random.Random(0)
    files = {}
    for split, n in (("train", 300), ("validation", 40), ("test", 40)):
        rows = [dict(zip(("tokens", "ner_tags"), make_sentence(rng))) for _ in range(n)]
        files[split] = str(write_jsonl(tmp_path / f"{split}.jsonl", rows))
    values = ner_recipe_values(checkpoint, files, tmp_path / "run")
    overrides = ["data.streaming=true", f"data.labels=[{','.join(TAGS)}]", "training.max_steps=100"]
    results = Recipe.from_dict(values, overrides).run()
    assert results["test_samples"] == 40 and results["test_f1"] >= 0.8
    assert Predictor(tmp_path / "run").evaluate("test")["test_f1"] == pytest.approx(results["test_f1"], abs=1e-6)

    conll = tmp_path / "train.conll"
    conll.write_text("anna B-PER\n")
    values["data"]["files"]["train"] = str(conll)
    with pytest.raises(HubtuneError, match=r"'data.streaming' reads .*\.jsonl.* or Hub datasets, not '\.conll'"):
        Recipe.from_dict(values, [*overrides, "overwrite=true"]).run()
