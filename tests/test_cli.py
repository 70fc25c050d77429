"""The `hubtune` CLI: train with overrides, predict and evaluate from the run folder (in-process), and one
real `python -m pipelines` process."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.cli import main


def trailing_json(text: str) -> dict:
    """The JSON object `hubtune train` prints last (the Trainer's own log lines may come before it)."""
    lines = text.splitlines()
    start = max(i for i, line in enumerate(lines) if line == "{")
    return json.loads("\n".join(lines[start:]))


@pytest.fixture(scope="module")
def cli_run(tiny_bert, sentiment_files, tmp_path_factory):
    from conftest import make_recipe_values

    root = tmp_path_factory.mktemp("cli")
    values = make_recipe_values(tiny_bert, sentiment_files, root / "run")
    assert values["training"]["num_train_epochs"] == 4 and "adapt" not in values
    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(values, sort_keys=False))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["train", str(recipe), "training.num_train_epochs=2", "adapt.strategy=freeze_backbone"])
    return {"code": code, "stdout": out.getvalue(), "run": root / "run", "recipe": recipe}


def test_train_returns_0_and_applies_overrides(cli_run):
    assert cli_run["code"] == 0
    run = cli_run["run"]
    saved = yaml.safe_load((run / "recipe.yaml").read_text())
    assert saved["training"]["num_train_epochs"] == 2
    assert saved["adapt"]["strategy"] == "freeze_backbone"
    # The source recipe file is not rewritten.
    source = yaml.safe_load(cli_run["recipe"].read_text())
    assert source["training"]["num_train_epochs"] == 4 and "adapt" not in source

    state = json.loads((run / "trainer_state.json").read_text())
    assert state["global_step"] == 2 * 240 // 16
    parameters = {row["group"]: row for row in json.loads((run / "parameters.json").read_text())}
    assert all(row["trainable"] == 0 for group, row in parameters.items() if group != "head")

    printed = trailing_json(cli_run["stdout"])
    results = json.loads((run / "all_results.json").read_text())
    assert printed["test_accuracy"] == results["test_accuracy"] >= 0.9
    assert printed["test_loss"] == results["test_loss"]


def test_predict_prints_one_line_per_input(cli_run, capsys):
    assert main(["predict", str(cli_run["run"]), "the film was good", "awful plot"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    fields = [line.split("\t") for line in lines]
    assert [f[0] for f in fields] == ["positive", "negative"]
    assert [f[2] for f in fields] == ["the film was good", "awful plot"]
    assert all(0.5 < float(f[1]) <= 1.0 for f in fields)


def test_predict_json(cli_run, capsys):
    assert main(["predict", "--json", str(cli_run["run"]), "a superb story", "a dull movie"]) == 0
    predictions = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [p["label"] for p in predictions] == ["positive", "negative"]
    assert [p["input"] for p in predictions] == ["a superb story", "a dull movie"]
    for p in predictions:
        assert set(p["scores"]) == {"negative", "positive"}
        assert p["score"] == max(p["scores"].values())


def test_evaluate_prints_json_metrics(cli_run, capsys):
    assert main(["evaluate", str(cli_run["run"])]) == 0
    out = capsys.readouterr().out
    # stdout is the metrics as one JSON document, for `hubtune evaluate RUN | jq .test_accuracy`.
    metrics = json.loads(out)
    results = json.loads((cli_run["run"] / "all_results.json").read_text())
    assert metrics["test_accuracy"] == pytest.approx(results["test_accuracy"], abs=1e-6)
    assert metrics["test_loss"] == pytest.approx(results["test_loss"], abs=1e-6)


def test_evaluate_validation_split(cli_run, capsys):
    assert main(["evaluate", str(cli_run["run"]), "--split", "validation"]) == 0
    out = capsys.readouterr().out
    metrics = trailing_json(out)
    results = json.loads((cli_run["run"] / "all_results.json").read_text())
    assert metrics["validation_accuracy"] == pytest.approx(results["eval_accuracy"], abs=1e-6)


def test_python_dash_m_pipelines_trains(recipe_values, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(recipe_values))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines",
            "train",
            str(recipe),
            "training.num_train_epochs=1",
            "adapt.strategy=freeze_backbone",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    run = Path(recipe_values["output_dir"])
    results = json.loads((run / "all_results.json").read_text())
    assert results["test_accuracy"] >= 0.9
    assert trailing_json(completed.stdout)["test_accuracy"] == results["test_accuracy"]
    assert "hubtune: error" not in completed.stderr
