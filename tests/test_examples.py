"""Each script of examples/ runs, as a user runs it (`python examples/X.py ARGS`, here in-process), on the tiny
checkpoint and data, and does what its docstring says."""

from __future__ import annotations

import ast
import json
import runpy
import sys
from pathlib import Path

import pytest

from pipelines.registry import TASKS

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "sentiment-minilm-offline.yaml"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_example(name: str, args: list[str], monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", [str(EXAMPLES / name), *args])
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")


def data_args(sentiment_files) -> list[str]:
    return [f"--{role}={sentiment_files[role]}" for role in ("train", "validation", "test")]


def table_rows(output: str) -> list[list[str]]:
    """The rows of a markdown table printed by an example, below its header and rule."""
    lines = [line for line in output.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]


def test_every_example_opens_with_how_to_run_it_on_a_real_checkpoint():
    scripts = sorted(path.name for path in EXAMPLES.glob("*.py"))
    assert scripts == ["custom_task.py", "focal_loss.py", "layer_probe.py", "lora_rank_sweep.py"]
    for script in scripts:
        doc = ast.get_docstring(ast.parse((EXAMPLES / script).read_text())) or ""
        assert f"python examples/{script}" in doc and "checkpoint" in doc, script


def test_layer_probe_plots_the_accuracy_of_each_depth(tiny_bert, sentiment_files, tmp_path, monkeypatch, capsys):
    out, runs = tmp_path / "probe.png", tmp_path / "runs"
    args = ["--checkpoint", str(tiny_bert), *data_args(sentiment_files), f"--out={out}", f"--runs={runs}"]
    run_example("layer_probe.py", [*args, "--max-length=32", "--epochs=2", "--learning-rate=5e-3"], monkeypatch)
    printed = capsys.readouterr().out.splitlines()
    rows = [line.split("\t") for line in printed[printed.index("layer\ttest_accuracy") + 1 :] if "\t" in line]
    assert [int(layer) for layer, _ in rows] == [1, 2] and all(0 <= float(score) <= 1 for _, score in rows)
    assert out.read_bytes().startswith(PNG_SIGNATURE)
    # Each run's encoder was cut after its layer, and only the head trained: the same head on a deeper model.
    results = [json.loads((runs / f"layer-{layer}" / "all_results.json").read_text()) for layer in (1, 2)]
    for layer in (1, 2):
        assert json.loads((runs / f"layer-{layer}" / "config.json").read_text())["num_hidden_layers"] == layer
    assert results[0]["trainable_parameters"] == results[1]["trainable_parameters"]
    assert results[0]["total_parameters"] < results[1]["total_parameters"]


def test_lora_rank_sweep_prints_a_row_per_rank(tiny_bert, sentiment_files, tmp_path, monkeypatch, capsys):
    overrides = [
        f"model.checkpoint={tiny_bert}",
        *(f"data.files.{role}={sentiment_files[role]}" for role in ("train", "validation", "test")),
        "data.max_train_samples=null",
        "data.max_length=32",
        "training.num_train_epochs=2",
        "training.learning_rate=5e-3",
        "training.save_strategy=no",
    ]
    run_example("lora_rank_sweep.py", [str(RECIPE), *overrides, "--ranks=1,4", f"--runs={tmp_path}"], monkeypatch)
    rows = table_rows(capsys.readouterr().out)
    assert [row[0] for row in rows] == ["1", "4"]
    trainable = [int(row[1].replace(",", "")) for row in rows]
    assert trainable[0] < trainable[1]  # a higher rank trains more
    for rank in (1, 4):
        adapter = json.loads((tmp_path / f"rank-{rank}" / "adapter_config.json").read_text())
        assert adapter["r"] == rank and adapter["lora_alpha"] == 2 * rank


def test_focal_loss_trains_both_losses_on_an_imbalanced_split(
    tiny_bert, sentiment_files, tmp_path, monkeypatch, capsys
):
    args = ["--checkpoint", str(tiny_bert), *data_args(sentiment_files), f"--runs={tmp_path}", "--keep=0.2"]
    run_example("focal_loss.py", [*args, "--max-length=32", "--epochs=2", "--learning-rate=5e-3"], monkeypatch)
    output = capsys.readouterr().out
    rows = table_rows(output)
    assert [row[0] for row in rows] == ["cross-entropy", "focal (gamma=2.0)"]
    kept = int(output.split("training split: ")[1].split()[0])
    assert 0 < kept < 60  # of the 120 positive training examples
    focal = json.loads((tmp_path / "focal" / "all_results.json").read_text())
    assert focal["custom"] == {"loss": "custom (not reproducible from the recipe): __main__.focal_loss"}
    assert "custom" not in json.loads((tmp_path / "cross-entropy" / "all_results.json").read_text())


@pytest.fixture
def forget_headline_task():
    yield
    TASKS.unregister("headline-classification")


def test_custom_task_registers_trains_and_predicts(
    tiny_bert, sentiment_files, tmp_path, monkeypatch, capsys, forget_headline_task
):
    args = ["--checkpoint", str(tiny_bert), *data_args(sentiment_files), f"--runs={tmp_path / 'run'}"]
    run_example("custom_task.py", [*args, "--epochs=4", "--learning-rate=5e-3"], monkeypatch)
    output = capsys.readouterr().out.splitlines()  # after the Trainer's own log lines
    start = next(i for i, line in enumerate(output) if line.startswith("test accuracy on the first 8 words: "))
    assert float(output[start].rsplit(" ", 1)[1]) >= 0.9
    assert output[start + 1].startswith("labels: ['negative', 'positive']; run folder: ")
    assert [line.split("\t")[0] for line in output[start + 2 :]] == ["positive", "negative"]
    assert "task: headline-classification" in (tmp_path / "run" / "recipe.yaml").read_text()
