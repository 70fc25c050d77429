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

from pipelines.commands.cli import main


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


def _texts(path: str) -> list[str]:
    import csv

    with open(path, newline="") as handle:
        return [row["text"] for row in csv.DictReader(handle)]


def test_predict_data_writes_every_row_in_order(cli_run, sentiment_files, tmp_path, capsys):
    from pipelines.serving.predictor import Predictor

    output = tmp_path / "predictions.jsonl"
    # A batch size that does not divide the 60 rows: the last batch is short.
    assert (
        main(
            [
                "predict",
                str(cli_run["run"]),
                "--data",
                sentiment_files["test"],
                "--output",
                str(output),
                "--batch-size",
                "7",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.strip() == f"60 predictions -> {output}"
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    texts = _texts(sentiment_files["test"])
    assert [row["row"] for row in rows] == list(range(1, 61))
    assert [row["input"] for row in rows] == texts
    expected = Predictor(cli_run["run"]).predict(texts)
    assert [row["label"] for row in rows] == [p["label"] for p in expected]
    assert [row["score"] for row in rows] == pytest.approx([p["score"] for p in expected], abs=1e-5)
    assert not list(tmp_path.glob(".predictions.jsonl*")), "no part files are left behind"


def test_predict_data_errors_name_the_file_row_and_column(cli_run, sentiment_files, tmp_path, capsys):
    run, test = str(cli_run["run"]), sentiment_files["test"]
    output = str(tmp_path / "out.jsonl")
    assert main(["predict", run, "--data", test]) == 2
    assert "--output FILE" in capsys.readouterr().err
    assert main(["predict", run, "some text", "--data", test, "--output", output]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["predict", run, "--data", test, "--output", output, "--column", "review"]) == 2
    err = capsys.readouterr().err
    assert f"data file '{test}' has no column 'review' (recipe key 'data.text_column')" in err
    blank = tmp_path / "blank.csv"
    blank.write_text("text,label\na fine film,positive\n   ,negative\n")
    assert main(["predict", run, "--data", str(blank), "--output", output]) == 2
    err = capsys.readouterr().err
    assert f"data file '{blank}', row 2: column 'text' holds '" in err and "not a text to predict" in err
    assert not Path(output).exists() and not list(tmp_path.glob(".out.jsonl*"))


def test_evaluate_data_scores_a_new_file_like_its_split(cli_run, sentiment_files, capsys):
    assert main(["evaluate", str(cli_run["run"]), "--data", sentiment_files["test"]]) == 0
    metrics = json.loads(capsys.readouterr().out)
    results = json.loads((cli_run["run"] / "all_results.json").read_text())
    assert metrics["data_accuracy"] == pytest.approx(results["test_accuracy"], abs=1e-6)
    saved = json.loads((cli_run["run"] / "evaluate_data_results.json").read_text())
    assert saved["data_accuracy"] == metrics["data_accuracy"]
    assert main(["evaluate", str(cli_run["run"]), "--data", "missing.csv"]) == 2
    assert "data file 'missing.csv' ('--data') does not exist" in capsys.readouterr().err


def test_evaluate_reads_only_the_split_it_scores(cli_run, sentiment_files, monkeypatch):
    from pipelines.serving.predictor import Predictor

    predictor = Predictor(cli_run["run"])
    read = []
    loader = predictor.task.load_data_file
    monkeypatch.setattr(predictor.task, "load_data_file", lambda path: read.append(str(path)) or loader(path))
    predictor.evaluate("validation")
    assert read == [str(Path(sentiment_files["validation"]).resolve())]


@pytest.mark.distributed
def test_predict_data_under_two_processes_keeps_row_order(cli_run, sentiment_files, tmp_path):
    """Each of 2 gloo processes predicts its half; the joined file equals a single process's."""
    root = Path(__file__).resolve().parents[1]
    single, double = tmp_path / "single.jsonl", tmp_path / "double.jsonl"
    assert main(["predict", str(cli_run["run"]), "--data", sentiment_files["test"], "--output", str(single)]) == 0
    accelerate = Path(sys.executable).with_name("accelerate")
    env = dict(
        os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(root)
    )
    command = [str(accelerate), "launch", "--config_file", str(root / "accelerate_configs" / "cpu_2proc.yaml")]
    command += ["-m", "pipelines", "predict", str(cli_run["run"]), "--data", sentiment_files["test"]]
    completed = subprocess.run(
        [*command, "--output", str(double), "--batch-size", "8"], env=env, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.count("60 predictions") == 1  # the main process reports, once
    one = [json.loads(line) for line in single.read_text().splitlines()]
    two = [json.loads(line) for line in double.read_text().splitlines()]
    assert [row["row"] for row in two] == [row["row"] for row in one] == list(range(1, 61))
    assert [row["label"] for row in two] == [row["label"] for row in one]
    assert [row["score"] for row in two] == pytest.approx([row["score"] for row in one], abs=1e-5)
