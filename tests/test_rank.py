"""`hubtune rank`: candidates ranked from one frozen forward pass, bad candidates named, LEEP from a source head."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from helpers.ner import build_tiny_ner_bert, ner_recipe_values, write_conll
from helpers.speech import tiny_wav2vec2_folder, write_tone_folder
from helpers.vision import save_tiny_vit
from test_image_classification import image_recipe, save_timm_checkpoint, write_image_folders
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2Model,
    Wav2Vec2Model,
)

from pipelines import HubtuneError, Recipe, load_recipe_config, rank
from pipelines.adapt.strategies.peft import has_default_targets
from pipelines.commands.cli import main
from pipelines.runner.rank import _candidate_config, _prepare, rank_candidate
from pipelines.runner.rank_features import forward_pass
from pipelines.runner.rank_suggestion import suggest
from pipelines.tasks import get_task

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def text_values(recipe_values, tmp_path) -> dict:
    """The tiny sentiment recipe, its feature cache in the test's own folder."""
    return dict(recipe_values, adapt={"feature_cache_dir": str(tmp_path / "features")})


@pytest.fixture(scope="module")
def random_bert(tiny_bert, tmp_path_factory):
    """The tiny BERT's architecture and tokenizer with random weights and a 3-label head whose weights are zero
    and whose bias makes it predict (1/2, 1/4, 1/4) for every input."""
    folder = tmp_path_factory.mktemp("random-bert")
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(folder)
    config = BertConfig.from_pretrained(tiny_bert, num_labels=3)
    torch.manual_seed(1)
    model = BertForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.log(torch.tensor([0.5, 0.25, 0.25])))
    model.save_pretrained(folder)
    return folder


def test_rank_orders_text_candidates_and_names_the_bad_ones(
    text_values, tiny_bert, random_bert, tmp_path, capsys, caplog
):
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps(text_values))
    not_a_model = tmp_path / "notes"
    not_a_model.mkdir()
    (not_a_model / "readme.txt").write_text("not a model")
    vit = save_tiny_vit(tmp_path / "vit")
    out = tmp_path / "ranking"
    candidates = [str(random_bert), str(not_a_model), str(tiny_bert), str(vit), str(tmp_path / "nothing")]
    args = ["rank", str(recipe), "--checkpoints", *candidates, "--samples", "120", "--out", str(out)]
    with caplog.at_level(logging.INFO):
        code = main(args)
    assert code == 3  # some candidates could not be scored; the others are ranked
    printed = capsys.readouterr()
    assert "3 of 5 candidates could not be scored" in printed.err
    report = json.loads((out / "rank.json").read_text())
    ranked = [row["checkpoint"] for row in report["ranked"]]
    # The checkpoint trained on the same cue words carries the labels; the random one does not.
    assert ranked == [str(tiny_bert), str(random_bert)]
    scores = [row["logme"] for row in report["ranked"]]
    assert scores == sorted(scores, reverse=True)
    assert all(row["feature_dim"] == 32 and row["examples"] == 120 for row in report["ranked"])
    reasons = {row["checkpoint"]: row["reason"] for row in report["failed"]}
    assert "holds no config.json" in reasons[str(not_a_model)]
    assert "is a vit model" in reasons[str(vit)] and "text-classification" in reasons[str(vit)]
    assert "does not exist" in reasons[str(tmp_path / "nothing")]
    table = (out / "rank.md").read_text()
    assert table.index(str(tiny_bert)) < table.index(str(random_bert)) and "holds no config.json" in table
    assert f"| 1 | {tiny_bert} |" in printed.out
    # The strategy line: the best candidate, 240 training sentences over 2 classes, and the rule it applied.
    suggestion = report["suggestion"]
    assert suggestion["checkpoint"] == str(tiny_bert) and suggestion["per_class"] == pytest.approx(120)
    assert suggestion["logme_gain"] == pytest.approx(report["ranked"][0]["logme"] - report["ranked"][0]["logme_floor"])
    assert (
        f"suggested: model.checkpoint={tiny_bert} adapt.strategy=" in printed.out
        and "right in 2 of 6 measured cases" in table
    )
    # Both BERT heads read the pooled output, which the feature cache stores: rank went through it.
    assert all(row["feature_cache"] for row in report["ranked"])
    # A second rank replaces its own report folder, and reads the features back from the cache.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pipelines.training.feature_cache"):
        again = rank(recipe, [str(tiny_bert)], samples=120, out_dir=out)
    assert "feature cache hit" in caplog.text
    assert again.best is not None and again.best.logme == pytest.approx(report["ranked"][0]["logme"])
    # A frozen-backbone training run on the same 120 examples reads rank's features instead of running the backbone.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pipelines.training.feature_cache"):
        Recipe.from_dict(
            dict(text_values, output_dir=str(tmp_path / "trained")),
            [
                "adapt.strategy=freeze_backbone",
                "adapt.feature_cache=true",
                "data.max_train_samples=120",
                "training.num_train_epochs=1",
            ],
        ).run()
    assert "feature cache hit for train" in caplog.text


def test_leep_of_a_constant_source_head_is_the_log_of_the_label_frequencies(text_values, random_bert, tiny_bert):
    # Every example gets (1/2, 1/4, 1/4): P(y | z) = P(y) for every source class z, and each example's likelihood is
    # the share of its own label, 1/2 in the whole (balanced) training file: LEEP = NCE = log(1/2).
    config = load_recipe_config(values=text_values)
    score = rank_candidate(config, str(random_bert), samples=240)
    assert score.source_classes == 3
    assert score.leep == pytest.approx(np.log(0.5), abs=1e-6)
    assert score.nce == pytest.approx(np.log(0.5), abs=1e-6)
    # The trained 2-label head of the tiny BERT predicts the sentiment: its LEEP is well above that (the next test
    # recomputes it from the head's own predictions).
    trained = rank_candidate(config, str(tiny_bert), samples=240)
    assert trained.leep is not None and np.log(0.5) < trained.leep <= 0


def test_leep_matches_the_source_heads_own_predictions(text_values, tiny_bert, sentiment_files):
    import csv

    with open(sentiment_files["train"]) as handle:
        rows = list(csv.DictReader(handle))
    config = load_recipe_config(values=text_values, overrides=[f"data.max_train_samples={len(rows)}"])
    score = rank_candidate(config, str(tiny_bert), samples=len(rows))
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert).eval()
    with torch.no_grad():
        batch = tokenizer(
            [row["text"] for row in rows], padding=True, truncation=True, max_length=32, return_tensors="pt"
        )
        theta = model(**batch).logits.softmax(-1).numpy()
    labels = [["negative", "positive"].index(row["label"]) for row in rows]
    # LEEP by its definition, with loops: P(y, z) = mean theta_z [y_i = y], P(y | z) = P(y, z) / P(z).
    joint = np.zeros((2, theta.shape[1]))
    for probabilities, label in zip(theta, labels):
        joint[label] += probabilities / len(labels)
    conditional = joint / joint.sum(axis=0)
    expected = np.mean([np.log(sum(conditional[y, z] * p[z] for z in range(len(p)))) for p, y in zip(theta, labels)])
    assert score.leep == pytest.approx(expected, abs=1e-5)


def test_rank_image_candidates(tmp_path):
    import timm

    files = write_image_folders(tmp_path / "colours")
    vit = save_tiny_vit(tmp_path / "vit")
    torch.manual_seed(0)
    # A timm classifier with its own 10-class head (as an ImageNet checkpoint has its 1000): LEEP and NCE apply.
    resnet = save_timm_checkpoint(timm.create_model("test_resnet", num_classes=10), tmp_path / "timm", 32)
    values = dict(image_recipe(vit, files, tmp_path / "run"), adapt={"feature_cache_dir": str(tmp_path / "features")})
    report = rank(
        load_recipe_config(values=values),
        [str(vit), str(resnet)],
        samples=30,
        out_dir=tmp_path / "rank",
    )
    assert not report.failed
    scores = {score.checkpoint: score for score in report.ranked}
    assert all(score.examples == 30 and np.isfinite(score.logme) for score in report.ranked)
    assert scores[str(vit)].feature_dim == 32 and scores[str(vit)].feature_cache  # ViT's [CLS], through the cache
    timm_score = scores[str(resnet)]
    assert timm_score.feature_dim == 96 and not timm_score.feature_cache  # the classifier's input (pre-logits)
    assert timm_score.source_classes == 10 and timm_score.leep is not None and timm_score.leep <= 0
    stored = json.loads((tmp_path / "rank" / "rank.json").read_text())["ranked"]
    assert [row["checkpoint"] for row in stored] == [score.checkpoint for score in report.ranked]


def test_rank_audio_and_a_text_model_for_it(tmp_path, tiny_bert):
    files = {split: str(write_tone_folder(tmp_path / split, 4, seed)) for split, seed in (("train", 0), ("test", 1))}
    wav2vec2 = tiny_wav2vec2_folder(tmp_path / "wav2vec2")
    values = {
        "name": "tones",
        "task": "audio-classification",
        "model": {"checkpoint": str(wav2vec2)},
        "data": {"files": files, "max_duration_s": 0.5, "validation_split": None},
    }
    report = rank(load_recipe_config(values=values), [str(wav2vec2), str(tiny_bert)], out_dir=tmp_path / "rank")
    assert [score.checkpoint for score in report.ranked] == [str(wav2vec2)]
    assert report.best is not None and report.best.examples == 12 and report.best.feature_dim == 32
    assert [failure.checkpoint for failure in report.failed] == [str(tiny_bert)]
    assert "is a bert model" in report.failed[0].reason
    # Each clip's feature is the mean over frames of the encoder's output, as the classifier pools it.
    candidate = _candidate_config(load_recipe_config(values=values), str(wav2vec2), 500)
    task = get_task(candidate.task)(candidate)
    prepared = _prepare(task, candidate)
    result = forward_pass(task, task.build_model(prepared), prepared, 8, with_source=False)
    encoder, collate = Wav2Vec2Model.from_pretrained(wav2vec2).eval(), task.data_collator(prepared.processor)
    with torch.no_grad():
        for row, feature in zip(prepared["train"], result.features):
            frames = encoder(input_values=collate([row])["input_values"]).last_hidden_state[0]
            assert feature == pytest.approx(frames.mean(dim=0).double().numpy(), abs=1e-5)


def test_rank_ner_scores_first_sub_tokens(tmp_path):
    files = {
        split: str(write_conll(tmp_path / f"{split}.conll", 40, seed)) for split, seed in (("train", 0), ("test", 1))
    }
    checkpoint = build_tiny_ner_bert(tmp_path / "ner-bert")
    values = ner_recipe_values(checkpoint, files, tmp_path / "run")
    values["data"]["validation_split"] = None
    config = load_recipe_config(values=values)
    score = rank_candidate(config, str(checkpoint), samples=40)
    # One row per word: the first sub-token of each, as the task aligns the tags.
    lines = (tmp_path / "train.conll").read_text().splitlines()
    words = sum(1 for line in lines if line.strip() and not line.startswith("-DOCSTART-"))
    assert score.examples == words and score.feature_dim == 32 and np.isfinite(score.logme)
    assert score.source_classes == 2 and score.leep is not None  # the checkpoint's own (untrained) 2-label head


def test_a_decoder_only_text_model_is_read_at_its_last_token(text_values, tiny_bert, tmp_path):
    # GPT-2's sequence classifier reads the last token that is not padding; with right padding in batches of 8, each
    # feature must be what the model gives that sentence alone at its last token.
    folder = tmp_path / "gpt2"
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    tokenizer.save_pretrained(folder)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=64)
    torch.manual_seed(0)
    GPT2Model(config).save_pretrained(folder)
    candidate = _candidate_config(load_recipe_config(values=text_values), str(folder), 20)
    task = get_task(candidate.task)(candidate)
    prepared = _prepare(task, candidate)
    result = forward_pass(task, task.build_model(prepared), prepared, 8, with_source=False)
    assert not result.cached and result.features.shape == (20, 32)
    base = GPT2Model.from_pretrained(folder).eval()
    with torch.no_grad():
        for row, feature in zip(prepared["train"], result.features):
            # The tokenizer's token types go in too: GPT-2 adds their embeddings, as training would.
            inputs = {key: torch.tensor([row[key]]) for key in ("input_ids", "token_type_ids")}
            alone = base(**inputs).last_hidden_state[0, -1]
            assert feature == pytest.approx(alone.double().numpy(), abs=1e-5)


@pytest.mark.parametrize(
    "gain, per_class, overrides",
    [
        (2.0, 5, ["adapt.strategy=freeze_backbone"]),  # too few labels to move a backbone, however good
        (0.1, 5, ["adapt.strategy=freeze_backbone"]),
        (0.8, 50, ["adapt.strategy=freeze_backbone"]),  # features that explain the labels, few labels
        (0.1, 50, ["adapt.strategy=peft", "adapt.peft.method=lora"]),
        (0.8, 500, ["adapt.strategy=train_last_n", "adapt.n=2"]),
        (0.1, 500, ["adapt.strategy=peft", "adapt.peft.method=lora"]),
        (0.1, 5000, ["adapt.strategy=full"]),
    ],
)
def test_suggestion_rule(gain, per_class, overrides, text_values):
    suggestion = suggest("ckpt", gain, per_class)
    assert suggestion.overrides == overrides
    load_recipe_config(values=text_values, overrides=suggestion.overrides)  # each suggestion is a valid recipe


def test_the_suggestion_is_no_lora_where_peft_has_no_default_targets(text_values):
    """A timm CNN: LoRA would fail for want of target modules, so the layers on top are the suggestion instead."""
    assert has_default_targets("bert") and not has_default_targets("timm_wrapper")
    suggestion = suggest("ckpt", 0.1, 50, lora_defaults=False)
    assert suggestion.overrides == ["adapt.strategy=train_last_n", "adapt.n=2"]
    assert "where PEFT has no default LoRA targets" in suggestion.line()


def test_rank_refuses_bad_options_and_a_folder_it_did_not_write(text_values, tiny_bert, tmp_path):
    config = load_recipe_config(values=text_values)
    with pytest.raises(HubtuneError, match="--samples must be at least 2"):
        rank(config, [str(tiny_bert)], samples=1, out_dir=tmp_path / "rank")
    with pytest.raises(HubtuneError, match="at least one candidate"):
        rank(config, [], out_dir=tmp_path / "rank")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    with pytest.raises(HubtuneError, match="refusing to replace"):
        rank(config, [str(tiny_bert)], samples=20, out_dir=mine)
    assert sorted(path.name for path in mine.iterdir()) == ["notes.txt"]
