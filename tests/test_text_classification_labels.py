"""Labels beyond one class per example: multi-label and regression classifiers (text and image), class weights,
a class-balanced sampler and a validation split carved by class."""

from __future__ import annotations

import csv
import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FILLER, NEGATIVE, POSITIVE
from PIL import Image
from sklearn.metrics import f1_score
from sklearn.utils.class_weight import compute_class_weight
from torch.nn import functional

from pipelines import HubtuneError, Recipe, load_recipe_config
from pipelines.data.splits import load_splits
from pipelines.serving.predictor import Predictor
from pipelines.tasks import get_task
from pipelines.training.trainer import build_trainer, training_arguments

# Trains models for seconds each: `make test-fast` leaves this module out.
pytestmark = pytest.mark.slow

# Each topic is signalled by its own cue words; a text carries one to three topics.
TOPICS = {"praise": POSITIVE, "complaint": NEGATIVE, "acting": ["acting", "cast"], "plot": ["plot", "story"]}
NEUTRAL = [word for word in FILLER if not any(word in cues for cues in TOPICS.values())]


def topic_text(rng: random.Random, topics: list[str]) -> str:
    words = rng.sample(NEUTRAL, 4)
    for topic in topics:
        words.insert(rng.randrange(len(words) + 1), rng.choice(TOPICS[topic]))
    return " ".join(words)


def write_topics(folder: Path, separator: str | None) -> dict[str, str]:
    """jsonl files with a list column of topics, or csv files with the topics joined by `separator`."""
    files = {}
    for split, n, seed in (("train", 320, 0), ("validation", 60, 1), ("test", 80, 2)):
        rng = random.Random(seed)
        rows = []
        for _ in range(n):
            topics = sorted(rng.sample(list(TOPICS), rng.randint(1, 3)))
            rows.append({"text": topic_text(rng, topics), "label": topics})
        if separator is None:
            path = folder / f"{split}.jsonl"
            path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        else:
            path = folder / f"{split}.csv"
            with path.open("w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["text", "label"])
                writer.writerows([row["text"], separator.join(row["label"])] for row in rows)
        files[split] = str(path)
    return files


def score_text(rng: random.Random) -> tuple[str, float]:
    """A text whose target is (positive cues - negative cues), from -2 to 2."""
    positive, negative = rng.randint(0, 2), rng.randint(0, 2)
    words = rng.sample(FILLER, 4)
    for cue in [rng.choice(POSITIVE) for _ in range(positive)] + [rng.choice(NEGATIVE) for _ in range(negative)]:
        words.insert(rng.randrange(len(words) + 1), cue)
    return " ".join(words), float(positive - negative)


def write_scores(folder: Path) -> dict[str, str]:
    files = {}
    for split, n, seed in (("train", 320, 0), ("validation", 60, 1), ("test", 80, 2)):
        rng = random.Random(seed)
        path = folder / f"{split}.csv"
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "score"])
            writer.writerows(score_text(rng) for _ in range(n))
        files[split] = str(path)
    return files


def text_recipe(tiny_bert: Path, files: dict[str, str], run: Path, **data) -> dict:
    return {
        "name": "labels",
        "output_dir": str(run),
        "model": {"checkpoint": str(tiny_bert)},
        "data": {"files": files, "max_length": 32, **data},
        "training": {
            "num_train_epochs": 6,
            "learning_rate": 5e-3,
            "per_device_train_batch_size": 16,
            "logging_steps": 5,
            "save_strategy": "no",
            "disable_tqdm": True,
        },
    }


@pytest.fixture(scope="module")
def topic_bert(tiny_bert, tmp_path_factory) -> Path:
    """A 2-layer BERT of hidden size 128 on the shared tokenizer, "pretrained" on topics (other sentences than
    the tests use), as the shared tiny one is on sentiment.

    Telling four word groups apart at once needs more width than the shared hidden-32 model has: trained on
    these topics from scratch in a plain PyTorch loop, it plateaus at a BCE of 0.52 (0.25 at hidden 64, 0.01 at
    128), so fine-tuned it stays at the all-topics baseline (micro-F1 0.66).
    """
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    tokenizer = BertTokenizerFast.from_pretrained(tiny_bert)
    names = sorted(TOPICS)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        max_position_embeddings=64,
        num_labels=len(names),
        problem_type="multi_label_classification",
    )
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    rng = random.Random(100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(200):
        topics = [sorted(rng.sample(names, rng.randint(1, 3))) for _ in range(32)]
        batch = tokenizer([topic_text(rng, t) for t in topics], padding=True, return_tensors="pt")
        labels = torch.tensor([[float(name in t) for name in names] for t in topics])
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    folder = tmp_path_factory.mktemp("topic-bert")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_multi_label_text_learns_its_topics_and_reloads(topic_bert, tmp_path):
    files = write_topics(tmp_path, separator=None)
    run = tmp_path / "run"
    values = text_recipe(topic_bert, files, run, problem_type="multi_label")
    results = Recipe.from_dict(values, ["training.learning_rate=1e-3"]).run()
    assert results["test_f1_micro"] >= 0.9, results
    assert {"test_f1_macro", "test_f1_samples", "test_subset_accuracy", "test_f1_acting"} <= results.keys()
    thresholds = results["eval_best_thresholds"]
    assert sorted(thresholds) == sorted(TOPICS) and all(0 < t < 1 for t in thresholds.values())
    assert json.loads((run / "all_results.json").read_text())["eval_best_thresholds"] == thresholds
    assert json.loads((run / "config.json").read_text())["problem_type"] == "multi_label_classification"

    predictor = Predictor(run)
    assert predictor.evaluate("test")["test_f1_micro"] == pytest.approx(results["test_f1_micro"])
    [both, one] = predictor.predict(["the film was good and dull", "a really quite lovely movie"])
    assert sorted(both["labels"]) == ["complaint", "praise"] and one["labels"] == ["praise"]
    assert set(both["scores"]) == set(TOPICS)
    assert predictor.format_prediction(one).startswith("praise 0.")


def test_tuned_thresholds_score_the_test_split_and_predict(topic_bert, tmp_path):
    """`data.tune_thresholds`: each class's best-F1 validation threshold is kept with the model and decides the
    test scores, `hubtune evaluate` and predict (a short run, so that its probabilities sit away from 0.5)."""
    files = write_topics(tmp_path, separator=None)
    run = tmp_path / "run"
    values = text_recipe(topic_bert, files, run, problem_type="multi_label", tune_thresholds=True)
    results = Recipe.from_dict(values, ["training.num_train_epochs=1", "training.learning_rate=2e-4"]).run()
    tuned = results["eval_best_thresholds"]
    assert json.loads((run / "config.json").read_text())["hubtune_thresholds"] == tuned

    predictor = Predictor(run)
    texts = [json.loads(line)["text"] for line in Path(files["test"]).read_text().splitlines()]
    truth = [json.loads(line)["label"] for line in Path(files["test"]).read_text().splitlines()]
    predictions = predictor.predict(texts)
    for prediction in predictions:
        assert set(prediction["labels"]) == {name for name, p in prediction["scores"].items() if p >= tuned[name]}
    names = sorted(TOPICS)
    predicted = np.array([[name in p["labels"] for name in names] for p in predictions])
    reference = np.array([[name in t for name in names] for t in truth])
    assert results["test_f1_micro"] == pytest.approx(f1_score(reference, predicted, average="micro"), abs=1e-6)
    assert predictor.evaluate("test")["test_f1_micro"] == pytest.approx(results["test_f1_micro"])
    at_half = np.array([[p["scores"][name] >= 0.5 for name in names] for p in predictions])
    assert (at_half != predicted).any(), "tuned thresholds changed no decision: the test proves nothing"


def test_multi_label_reads_labels_joined_by_a_separator(topic_bert, tmp_path):
    files = write_topics(tmp_path, separator="|")
    values = text_recipe(topic_bert, files, tmp_path / "run", problem_type="multi_label", label_separator="|")
    results = Recipe.from_dict(values, ["training.num_train_epochs=4", "training.learning_rate=1e-3"]).run()
    assert results["test_f1_micro"] >= 0.85, results


@pytest.mark.parametrize("scale", [False, True])
def test_regression_text_learns_a_score_and_reloads(tiny_bert, tmp_path, scale):
    files = write_scores(tmp_path)
    run = tmp_path / "run"
    values = text_recipe(tiny_bert, files, run, problem_type="regression", label_column="score", scale_targets=scale)
    results = Recipe.from_dict(values).run()
    assert results["test_pearson"] >= 0.9 and results["test_spearman"] >= 0.85, results
    assert results["test_mse"] < 0.5, results  # the targets' variance is about 1.3
    saved = json.loads((run / "config.json").read_text())
    assert saved["problem_type"] == "regression" and len(saved["id2label"]) == 1
    assert ("hubtune_target_scaling" in saved) == scale

    predictor = Predictor(run)
    assert predictor.evaluate("test")["test_mse"] == pytest.approx(results["test_mse"], rel=1e-4)
    [high, low] = predictor.predict(["good great film", "dull awful boring plot"])
    assert high["value"] > 1.0 and low["value"] < -1.0  # in the data's units, scaled or not
    assert predictor.format_prediction(high).endswith("\tgood great film")


def test_image_regression_learns_brightness_and_reloads(tmp_path):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    checkpoint = tmp_path / "vit"
    torch.manual_seed(0)
    config = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    ViTForImageClassification(config).save_pretrained(checkpoint)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(checkpoint)
    rng = np.random.default_rng(0)
    files = {}
    for split, n in (("train", 96), ("validation", 24), ("test", 32)):
        folder = tmp_path / split
        folder.mkdir()
        rows = []
        for i in range(n):
            brightness = float(rng.uniform(0, 1))
            pixels = np.clip(brightness * 255 + rng.integers(-10, 11, size=(32, 32, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
            rows.append((f"{split}/{i}.png", brightness))
        path = tmp_path / f"{split}.csv"
        with path.open("w", newline="") as handle:
            csv.writer(handle).writerows([("image", "brightness"), *rows])
        files[split] = str(path)
    values = {
        "name": "brightness",
        "task": "image-classification",
        "output_dir": str(tmp_path / "run"),
        "model": {"checkpoint": str(checkpoint)},
        "data": {
            "files": files,
            "label_column": "brightness",
            "problem_type": "regression",
            "scale_targets": True,
            "image_augment": False,
        },
        "training": {
            "num_train_epochs": 8,
            "learning_rate": 3e-3,
            "per_device_train_batch_size": 16,
            "save_strategy": "no",
            "disable_tqdm": True,
        },
    }
    results = Recipe.from_dict(values).run()
    assert results["test_pearson"] >= 0.9, results
    predictor = Predictor(tmp_path / "run")
    assert predictor.evaluate("test")["test_pearson"] == pytest.approx(results["test_pearson"], rel=1e-4)
    [dark] = predictor.predict([str(tmp_path / "test" / "0.png")])
    assert isinstance(dark["value"], float)


def write_imbalanced(path: Path, n: int = 200, minority_every: int = 10) -> Path:
    """Sentiment rows with one positive for every `minority_every - 1` negatives."""
    rng = random.Random(0)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for i in range(n):
            label = "positive" if i % minority_every == 0 else "negative"
            writer.writerow([topic_text(rng, ["praise" if label == "positive" else "complaint"]), label])
    return path


def trainer_for(values: dict, overrides: list[str], tmp_path: Path):
    config = load_recipe_config(values=values, overrides=overrides)
    task = get_task(config.task)(config)
    splits = load_splits(config.data, config.seed, task.load_data_file)
    prepared = task.prepare(splits, task.load_processor())
    model = task.build_model(prepared)
    args = training_arguments(config, tmp_path / "trainer", "validation" in prepared)
    return build_trainer(task, model, prepared, args), prepared


def test_class_weights_weigh_the_cross_entropy(tiny_bert, tmp_path):
    train = write_imbalanced(tmp_path / "train.csv")
    values = text_recipe(tiny_bert, {"train": str(train)}, tmp_path / "run", validation_split=None, test_split=None)
    trainer, prepared = trainer_for(values, ["training.class_weights=balanced"], tmp_path)
    labels = np.array(prepared.train_labels)
    expected = compute_class_weight("balanced", classes=np.array([0, 1]), y=labels)
    assert prepared.class_weights == pytest.approx(expected.tolist())  # negative 0.56, positive 5.0
    batch = next(batch for batch in trainer.get_train_dataloader() if batch["labels"].unique().numel() == 2)
    trainer.model.eval()  # no dropout: the two forwards below see the same logits
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, dict(batch))
        logits = trainer.model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    weights = torch.tensor(expected, dtype=torch.float32)[batch["labels"]]
    by_hand = (functional.cross_entropy(logits, batch["labels"], reduction="none") * weights).sum() / weights.sum()
    assert float(loss) == pytest.approx(float(by_hand), rel=1e-5)

    trainer, prepared = trainer_for(values, ["training.class_weights=[1, 3]"], tmp_path)
    assert prepared.class_weights == [1.0, 3.0]


def test_token_classification_weights_ignore_unlabelled_positions():
    from pipelines.tasks.classifier import class_weights, weighted_cross_entropy

    labels = torch.tensor([[0, 1, -100, 2], [-100, 0, 0, 1]])
    logits = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(0))
    weights = class_weights("balanced", ["O", "B-X", "I-X"], labels.flatten().tolist())
    kept = labels.flatten() != -100
    counts = torch.bincount(labels.flatten()[kept], minlength=3).float()
    assert weights == pytest.approx((kept.sum() / (3 * counts)).tolist())
    loss = weighted_cross_entropy(weights)(logits, labels)
    per_token = functional.cross_entropy(logits.view(-1, 3)[kept], labels.flatten()[kept], reduction="none")
    w = torch.tensor(weights)[labels.flatten()[kept]]
    assert float(loss) == pytest.approx(float((per_token * w).sum() / w.sum()), rel=1e-5)


def test_balanced_sampler_draws_classes_about_evenly(tiny_bert, tmp_path):
    train = write_imbalanced(tmp_path / "train.csv", n=400)
    values = text_recipe(tiny_bert, {"train": str(train)}, tmp_path / "run", validation_split=None, test_split=None)
    trainer, prepared = trainer_for(values, ["data.sampler=balanced"], tmp_path)
    assert Counter(prepared.train_labels) == {0: 360, 1: 40}
    drawn = Counter(int(y) for batch in trainer.get_train_dataloader() for y in batch["labels"])
    assert sum(drawn.values()) == 400
    assert 0.4 <= drawn[1] / 400 <= 0.6, drawn  # uniform sampling would give 0.1
    # Every rank draws the same sequence for an epoch (accelerate then shards its batches); epochs differ.
    sampler = trainer.training_sampler()
    sampler.set_epoch(0)
    first = list(sampler)
    sampler.set_epoch(0)
    assert list(sampler) == first
    sampler.set_epoch(1)
    assert list(sampler) != first


def test_validation_carved_by_class_keeps_the_ratio_and_file_rows(tiny_bert, tmp_path):
    train = write_imbalanced(tmp_path / "train.csv", n=400)
    values = text_recipe(tiny_bert, {"train": str(train)}, tmp_path / "run", validation_split="validation")
    values["data"].update(validation_fraction=0.1, test_split=None)
    config = load_recipe_config(values=values)
    splits = load_splits(config.data, config.seed, get_task(config.task)(config).load_data_file)
    assert Counter(splits["validation"]["label"]) == {"negative": 36, "positive": 4}
    assert Counter(splits["train"]["label"]) == {"negative": 324, "positive": 36}
    # Rows are named as in the file: file row r (1-based, after the header) is positive when (r - 1) % 10 == 0.
    locate = splits.locate("validation")
    for position, label in enumerate(splits["validation"]["label"]):
        row = int(locate(position).rsplit("row ", 1)[1])
        assert (label == "positive") == ((row - 1) % 10 == 0)


def test_bad_labels_are_one_line_naming_the_row_or_key(tiny_bert, tmp_path):
    files = write_topics(tmp_path, separator=None)
    run = tmp_path / "run"
    values = text_recipe(tiny_bert, files, run, problem_type="multi_label", labels=["acting", "complaint", "praise"])
    with pytest.raises(HubtuneError, match=r"train\.jsonl', row \d+: label 'plot' in column 'label' is not in"):
        Recipe.from_dict(values).run()

    scores = write_scores(tmp_path)
    bad = Path(scores["train"]).read_text().splitlines()
    bad[5] = "good film,about three"
    Path(scores["train"]).write_text("\n".join(bad) + "\n")
    values = text_recipe(tiny_bert, scores, run, problem_type="regression", label_column="score")
    with pytest.raises(HubtuneError, match=r"train\.csv', row 5: column 'score' holds 'about three', not a number"):
        Recipe.from_dict(values).run()

    values = text_recipe(tiny_bert, files, run)
    values["data"]["problem_type"] = "multi_label"
    with pytest.raises(HubtuneError, match="'data.sampler: balanced' balances classes of single-label data"):
        load_recipe_config(values=values, overrides=["data.sampler=balanced"])
    with pytest.raises(HubtuneError, match="'training.class_weights' weights a cross-entropy"):
        load_recipe_config(values=values, overrides=["training.class_weights=balanced"])
    with pytest.raises(HubtuneError, match="'data.tune_thresholds' tunes on the validation split"):
        load_recipe_config(values=values, overrides=["data.tune_thresholds=true", "data.validation_split=null"])
    single = text_recipe(tiny_bert, files, run)
    with pytest.raises(HubtuneError, match="'data.tune_thresholds' needs 'data.problem_type: multi_label'"):
        load_recipe_config(values=single, overrides=["data.tune_thresholds=true"])

    train = write_imbalanced(tmp_path / "imbalanced.csv")
    values = text_recipe(tiny_bert, {"train": str(train)}, run, validation_split=None, test_split=None)
    with pytest.raises(HubtuneError, match=r"'training.class_weights' has 3 weights for 2 classes") as error:
        Recipe.from_dict(values, ["training.class_weights=[1, 2, 3]"]).run()
    assert "\n" not in str(error.value) and not run.exists()
