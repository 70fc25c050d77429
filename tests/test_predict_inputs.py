"""hubtune predict: texts, files, stdin, folders; batches; jsonl output; Predictor.from_run."""

from __future__ import annotations

import io
import json
import re

import pytest

from pipelines import HubtuneError
from pipelines.commands.cli import main
from pipelines.serving.inputs import collect_inputs
from pipelines.serving.predictor import Predictor


def test_collect_inputs_for_text_tasks_reads_args_stdin_and_files(tmp_path):
    listing = tmp_path / "texts.txt"
    listing.write_text("awful plot\nthe film was good\n\n  \n")  # blank lines at the end shift nothing
    stdin = io.StringIO("from stdin one\nfrom stdin two\n")
    assert list(collect_inputs("text", ["first", "-"], [str(listing)], stdin)) == [
        "first",
        "from stdin one",
        "from stdin two",
        "awful plot",
        "the film was good",
    ]


@pytest.mark.parametrize("source", ["file", "stdin"])
def test_a_blank_line_between_inputs_is_an_error_naming_it(tmp_path, source):
    """Output line N is the prediction of input line N: a dropped blank line would shift every later one."""
    listing = tmp_path / "texts.txt"
    listing.write_text("awful plot\n\n  \nthe film was good\n")
    files, stdin = ([str(listing)], io.StringIO("")) if source == "file" else ([], io.StringIO(listing.read_text()))
    values = [] if source == "file" else ["-"]
    name = f"input file '{listing}'" if source == "file" else "standard input"
    with pytest.raises(HubtuneError, match=re.escape(f"{name}, line 2: blank, between inputs")):
        list(collect_inputs("text", values, files, stdin))


def test_collect_inputs_for_path_tasks_expands_folders_and_checks_paths(tmp_path):
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for name in ("b.png", "a.png", "sub/c.png", ".hidden"):
        (folder / name).write_bytes(b"x")
    single = tmp_path / "z.png"
    single.write_bytes(b"x")
    got = list(collect_inputs("path", [str(folder), "-"], [], io.StringIO(f"{single}\n")))
    assert got == [str(folder / "a.png"), str(folder / "b.png"), str(folder / "sub" / "c.png"), str(single)]
    with pytest.raises(HubtuneError, match=r"input '.*missing\.png' does not exist"):
        list(collect_inputs("path", [str(tmp_path / "missing.png")], [], io.StringIO()))


def test_predictor_batches_give_the_same_predictions(trained_run):
    predictor = Predictor.from_run(trained_run("full").run_dir)
    texts = ["the film was good", "awful plot", "a superb cast", "dull and boring story", "lovely acting"]
    one_by_one = predictor.predict(texts, batch_size=1)
    together = predictor.predict(texts, batch_size=4)
    assert [p["input"] for p in together] == texts
    assert [p["label"] for p in together] == ["positive", "negative", "positive", "negative", "positive"]
    for a, b in zip(one_by_one, together):
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)


def test_cli_predict_from_file_and_stdin_to_jsonl(trained_run, tmp_path, monkeypatch, capsys):
    run_dir = trained_run("full").run_dir
    listing = tmp_path / "texts.txt"
    listing.write_text("the film was good\nawful plot\n")
    monkeypatch.setattr("sys.stdin", io.StringIO("a superb cast\n"))
    out = tmp_path / "predictions.jsonl"
    assert main(["predict", str(run_dir), "-", "--file", str(listing), "--batch-size", "2", "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["input"] for r in rows] == ["a superb cast", "the film was good", "awful plot"]
    assert [r["label"] for r in rows] == ["positive", "positive", "negative"]
    assert "3 predictions" in capsys.readouterr().out


def test_cli_predict_without_inputs_or_with_a_missing_file_is_exit_2(trained_run, tmp_path, capsys):
    run_dir = str(trained_run("full").run_dir)
    assert main(["predict", run_dir]) == 2
    assert main(["predict", run_dir, "--file", str(tmp_path / "nope.txt"), "--output", str(tmp_path / "o.jsonl")]) == 2
    assert not (tmp_path / "o.jsonl").exists()
    assert capsys.readouterr().err.count("hubtune: error:") == 2


def test_the_output_writer_leaves_nothing_when_predictions_fail_half_way(trained_run, sentiment_files, tmp_path):
    predictor = Predictor.from_run(trained_run("full").run_dir)
    output = tmp_path / "predictions.jsonl"

    def interrupted():
        yield from predictor.predict(["the film was good"])
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        predictor.write(interrupted(), output)
    assert list(tmp_path.iterdir()) == []  # neither the output nor its partial file
    assert predictor.write(predictor.predict(["awful plot", "a superb cast"]), output) == 2
    # The writer and predict --data refuse to replace a file unless asked, as the CLI does.
    with pytest.raises(HubtuneError, match="already exists; pass --overwrite"):
        predictor.write([], output)
    with pytest.raises(HubtuneError, match="already exists; pass --overwrite"):
        predictor.predict_data(sentiment_files["test"], output)
    assert predictor.predict_data(sentiment_files["test"], output, overwrite=True) == 60
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.jsonl"]
