"""hubtune compare: pretrained vs random initialisation, at several sizes, with honest warnings."""

from __future__ import annotations

import json

import pytest
import yaml
from datasets import Dataset
from transformers import AutoTokenizer, BertConfig

from pipelines import Recipe, load_recipe_config
from pipelines.commands.cli import main
from pipelines.data.splits import Splits
from pipelines.runner import compare as compare_module
from pipelines.runner.spread import paired_bootstrap, spread
from pipelines.tasks.text_classification import TextClassification


def _recipe_file(recipe_values, tmp_path) -> str:
    values = dict(recipe_values)
    values["training"] = dict(values["training"], num_train_epochs=3, eval_strategy="no")
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_compare_trains_both_inits_at_each_size_and_writes_the_report(recipe_values, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["compare", _recipe_file(recipe_values, tmp_path), "--sizes", "16,240", "--out", str(out)]) == 0
    report = json.loads((out / "compare.json").read_text())
    assert report["metric"] == "test_accuracy"
    assert sorted((row["train_samples"], row["init"]) for row in report["rows"]) == [
        (16, "pretrained"),
        (16, "scratch"),
        (240, "pretrained"),
        (240, "scratch"),
    ]
    score = {(row["train_samples"], row["init"]): row["test_accuracy"] for row in report["rows"]}
    # The tiny checkpoint was pretrained on the same cues: with 16 examples it must beat random weights.
    assert score[(16, "pretrained")] > score[(16, "scratch")]
    assert (out / "compare.png").stat().st_size > 1000
    table = (out / "compare.md").read_text()
    assert f"| 16 | {score[(16, 'pretrained')]:.4f} | {score[(16, 'scratch')]:.4f} |" in table
    for row in report["rows"]:
        assert (
            json.loads((tmp_path / row["run"] / "all_results.json").read_text())["test_accuracy"]
            == row["test_accuracy"]
        )


def test_negative_transfer_is_a_warning(recipe_values, tmp_path, monkeypatch):
    def fake_run(self, callbacks=()):
        scratch = self.config.model.from_scratch
        return {"train_samples": self.config.data.max_train_samples, "test_accuracy": 0.9 if scratch else 0.7}

    monkeypatch.setattr(Recipe, "run", fake_run)
    report = compare_module.compare(_recipe_file(recipe_values, tmp_path), sizes=[50], out_dir=tmp_path / "r")
    assert any("negative transfer at 50" in warning for warning in report.warnings)
    assert "**Warning:** negative transfer" in (tmp_path / "r" / "compare.md").read_text()


def test_compare_writes_only_its_own_report_folder(recipe_values, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(Recipe, "run", lambda self, callbacks=(): {"train_samples": 50, "test_accuracy": 0.8})
    recipe = _recipe_file(recipe_values, tmp_path)
    compare_module.compare(recipe, sizes=[50], out_dir=tmp_path / "r")
    compare_module.compare(recipe, sizes=[50], out_dir=tmp_path / "r")  # a rerun replaces its own report
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "compare.md").write_text("my notes")
    assert main(["compare", recipe, "--sizes", "50", "--out", str(mine)]) == 2
    assert "refusing to replace" in capsys.readouterr().err and (mine / "compare.md").read_text() == "my notes"
    (tmp_path / "r" / "notes.txt").write_text("mine too")
    assert main(["compare", recipe, "--sizes", "50", "--out", str(tmp_path / "r")]) == 2
    assert "which hubtune did not write" in capsys.readouterr().err
    assert main(["compare", recipe, f"output_dir={tmp_path / 'x'}", "--out", str(tmp_path / "s")]) == 2
    assert "'output_dir' cannot be set; give the folder with --out" in capsys.readouterr().err


def test_unknown_words_are_an_input_domain_warning(recipe_values, tiny_bert):
    config = load_recipe_config(values=recipe_values)
    task = TextClassification(config)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    familiar = Splits({"train": Dataset.from_dict({"text": ["the film was good"] * 4, "label": ["positive"] * 4})})
    foreign = Splits({"train": Dataset.from_dict({"text": ["zorblax quintessa vrell"] * 4, "label": ["positive"] * 4})})
    assert task.domain_warnings(familiar, tokenizer) == []
    assert any("unknown to the checkpoint's tokenizer" in w for w in task.domain_warnings(foreign, tokenizer))


def test_a_trained_head_on_an_overlapping_label_set_is_a_warning(recipe_values, tmp_path):
    folder = tmp_path / "three-way"
    config = BertConfig(
        vocab_size=40,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        architectures=["BertForSequenceClassification"],
        id2label={0: "negative", 1: "neutral", 2: "positive"},
    )
    config.save_pretrained(folder)
    recipe = load_recipe_config(values=recipe_values, overrides=[f"model.checkpoint={folder}"])
    from pipelines.tasks import get_task

    task = get_task(recipe.task)(recipe)
    warnings = compare_module._label_warnings(task, ["negative", "positive"])
    assert len(warnings) == 1 and "label set looks mismatched" in warnings[0]
    assert compare_module._label_warnings(task, ["negative", "neutral", "positive"]) == []


def test_spread_and_the_paired_bootstrap_against_hand_computed_cases():
    scores = spread([0.5, 0.7, 0.6])
    assert scores.mean == pytest.approx(0.6) and scores.std == pytest.approx(0.1)
    assert str(scores) == "0.6000 ± 0.1000" and str(spread([0.25])) == "0.2500"
    # Two seeds: a resample's mean is a (1/4), (a + b) / 2 (1/2) or b (1/4), so the 2.5th and 97.5th percentiles
    # are a and b themselves.
    assert paired_bootstrap([-0.4, 0.2]) == pytest.approx((-0.4, 0.2))
    assert paired_bootstrap([0.1, 0.1, 0.1]) == pytest.approx((0.1, 0.1))
    # Three seeds: each seed repeated three times has a chance of 1/27 > 2.5%, so the ends are the extreme gains.
    assert paired_bootstrap([-0.3, -0.2, -0.1]) == pytest.approx((-0.3, -0.1))
    low, high = paired_bootstrap([-0.2, 0.1, 0.05])
    assert low < 0 < high


def _seeded_scores(pretrained: list[float], scratch: list[float]):
    seeds = [42, 43, 44]

    def fake_run(self, callbacks=()):
        scores = scratch if self.config.model.from_scratch else pretrained
        return {"train_samples": 50, "test_accuracy": scores[seeds.index(self.config.seed)]}

    return fake_run


def test_seeds_give_mean_std_each_seed_and_the_interval(recipe_values, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(Recipe, "run", _seeded_scores([0.80, 0.70, 0.75], [0.60, 0.65, 0.55]))
    out = tmp_path / "r"
    recipe = _recipe_file(recipe_values, tmp_path)
    assert main(["compare", recipe, "--sizes", "50", "--seeds", "42", "43", "44", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    report = json.loads((out / "compare.json").read_text())
    assert printed == report and report["seeds"] == [42, 43, 44]
    assert sorted((row["init"], row["seed"]) for row in report["rows"]) == [
        (init, seed) for init in ("pretrained", "scratch") for seed in (42, 43, 44)
    ]
    assert all(row["run"].endswith(f"{row['init']}-50-seed{row['seed']}") for row in report["rows"])
    (size,) = report["summary"]
    assert size["pretrained"] == {"mean": pytest.approx(0.75), "std": pytest.approx(0.05), "seeds": [0.8, 0.7, 0.75]}
    assert size["gain"] == pytest.approx(0.15)
    low, high = size["gain_interval"]
    assert 0.05 - 1e-9 <= low <= 0.15 <= high <= 0.2 + 1e-9  # the seeds' gains are 0.20, 0.05 and 0.20
    table = (out / "compare.md").read_text()
    assert "| 50 | 0.7500 ± 0.0500 | 0.6000 ± 0.0500 | +0.1500 (" in table
    assert "| 50 | pretrained | 0.8000 | 0.7000 | 0.7500 |" in table and "No warnings." in table
    assert main(["compare", recipe, "--seeds", "42", "42", "--out", str(tmp_path / "s")]) == 2
    assert "--seeds lists 42 more than once" in capsys.readouterr().err


def test_negative_transfer_needs_the_whole_interval_below_zero(recipe_values, tmp_path, monkeypatch):
    recipe = _recipe_file(recipe_values, tmp_path)
    # Worse on average, but one seed is better: the interval straddles zero, so no claim is made.
    monkeypatch.setattr(Recipe, "run", _seeded_scores([0.70, 0.50, 0.55], [0.60, 0.65, 0.60]))
    report = compare_module.compare(recipe, sizes=[50], out_dir=tmp_path / "a", seeds=[42, 43, 44])
    assert report.summary[0].gain < 0 and not any("negative transfer" in w for w in report.warnings)
    # Worse on every seed: flagged, with the interval in the warning.
    monkeypatch.setattr(Recipe, "run", _seeded_scores([0.50, 0.52, 0.48], [0.60, 0.65, 0.60]))
    report = compare_module.compare(recipe, sizes=[50], out_dir=tmp_path / "b", seeds=[42, 43, 44])
    (warning,) = [w for w in report.warnings if "negative transfer" in w]
    assert "at 50 training examples" in warning and "95% interval" in warning


def test_compare_over_seeds_trains_each_seed(recipe_values, tmp_path):
    out = tmp_path / "report"
    report = compare_module.compare(_recipe_file(recipe_values, tmp_path), sizes=[16], out_dir=out, seeds=[1, 2])
    assert {(row["init"], row["seed"]) for row in report.rows} == {
        (init, seed) for init in ("pretrained", "scratch") for seed in (1, 2)
    }
    for row in report.rows:
        run = tmp_path / row["run"]
        assert json.loads((run / "all_results.json").read_text())["test_accuracy"] == row["test_accuracy"]
        assert load_recipe_config(run / "recipe.yaml").seed == row["seed"]
    pretrained = report.summary[0].scores["pretrained"]
    assert pretrained.values == tuple(row["test_accuracy"] for row in report.rows if row["init"] == "pretrained")
