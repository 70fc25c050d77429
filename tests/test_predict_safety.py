"""Loading names the fix, and predict never truncates, guesses or overwrites without saying so."""

from __future__ import annotations

import copy
import io
import json
import logging
import shutil
from pathlib import Path

import pytest

from pipelines import HubtuneError, Recipe
from pipelines.commands.cli import main
from pipelines.models.weight_files import check_weight_files
from pipelines.serving.predictor import Predictor

REMOTE_CONFIG = """from transformers import BertConfig


class TinyRemoteConfig(BertConfig):
    model_type = "tiny-remote"
"""
REMOTE_MODEL = """from transformers import BertForSequenceClassification

from .configuration_tinyremote import TinyRemoteConfig


class TinyRemoteForSequenceClassification(BertForSequenceClassification):
    config_class = TinyRemoteConfig
"""


@pytest.fixture(scope="module")
def remote_code_checkpoint(tiny_bert, tmp_path_factory) -> Path:
    """The tiny BERT as a checkpoint whose config names Python code of its own (auto_map), as on the Hub."""
    folder = tmp_path_factory.mktemp("remote") / "tiny-remote"
    shutil.copytree(tiny_bert, folder)
    (folder / "configuration_tinyremote.py").write_text(REMOTE_CONFIG)
    (folder / "modeling_tinyremote.py").write_text(REMOTE_MODEL)
    config = json.loads((folder / "config.json").read_text())
    config.update(
        model_type="tiny-remote",
        architectures=["TinyRemoteForSequenceClassification"],
        auto_map={
            "AutoConfig": "configuration_tinyremote.TinyRemoteConfig",
            "AutoModelForSequenceClassification": "modeling_tinyremote.TinyRemoteForSequenceClassification",
        },
    )
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def sentiment_run(trained_run):
    return trained_run("full").run_dir


def test_folder_that_is_not_a_model_names_the_folder_and_key(recipe_values, tmp_path):
    folder = tmp_path / "downloads"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a model")
    with pytest.raises(HubtuneError) as caught:
        Recipe.from_dict(dict(copy.deepcopy(recipe_values), model={"checkpoint": str(folder)})).run()
    message = str(caught.value)
    assert str(folder) in message and "no config.json" in message and "model.checkpoint" in message
    assert "sentencepiece" not in message


def test_checkpoint_with_remote_code_names_trust_remote_code(recipe_values, remote_code_checkpoint):
    values = dict(copy.deepcopy(recipe_values), model={"checkpoint": str(remote_code_checkpoint)})
    with pytest.raises(HubtuneError, match="set 'model.trust_remote_code=true'") as caught:
        Recipe.from_dict(values).run()
    assert str(remote_code_checkpoint) in str(caught.value)
    assert not Path(values["output_dir"]).exists()


def test_run_trained_with_remote_code_predicts_and_evaluates(recipe_values, remote_code_checkpoint, monkeypatch):
    values = dict(
        copy.deepcopy(recipe_values), model={"checkpoint": str(remote_code_checkpoint), "trust_remote_code": True}
    )
    values["training"]["num_train_epochs"] = 1
    Recipe.from_dict(values).run()
    run_dir = Path(values["output_dir"])
    # An interactive prompt would read stdin: make any read fail loudly.
    monkeypatch.setattr("builtins.input", lambda *args: pytest.fail("prompted for trust_remote_code"))
    predictor = Predictor(run_dir)
    assert type(predictor.model).__name__ == "TinyRemoteForSequenceClassification"
    (prediction,) = predictor.predict(["a superb and lovely film"])
    assert prediction["label"] in ("negative", "positive")
    assert "test_accuracy" in predictor.evaluate("test")


def test_binary_input_file_is_one_line_naming_it(sentiment_run, tmp_path, capsys):
    binary = tmp_path / "weights.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    assert main(["predict", str(sentiment_run), "--file", str(binary)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(binary) in err[0] and "not UTF-8 text" in err[0]
    zeros = tmp_path / "zeros.dat"
    zeros.write_bytes(b"good film\n\x00\x00\x00\n")
    assert main(["predict", str(sentiment_run), "--file", str(zeros)]) == 2
    err = capsys.readouterr().err
    assert f"input file '{zeros}', line 2" in err and "binary" in err


def test_a_line_over_the_size_limit_is_one_line_naming_it(sentiment_run, tmp_path, capsys):
    from pipelines.data.splits import MAX_CELL_BYTES

    texts = tmp_path / "texts.txt"
    texts.write_text("the film was good\n" + "a" * (MAX_CELL_BYTES + 1) + "\n")
    assert main(["predict", str(sentiment_run), "--file", str(texts), "--output", str(tmp_path / "out.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"hubtune: error: input file '{texts}', line 2: holds 1,048,577 bytes of text, more than the 1,048,576 (1 MiB) "
        "one input may hold"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["texts.txt"]


@pytest.mark.parametrize("blank", ["", "   ", "\t"])
def test_blank_input_is_an_error_naming_its_position(sentiment_run, blank):
    with pytest.raises(HubtuneError, match="input 2 is empty or blank"):
        Predictor(sentiment_run).predict(["the film was good", blank])


def test_path_given_as_text_is_predicted_with_a_warning(sentiment_run, tmp_path, caplog):
    path = tmp_path / "reviews.txt"
    path.write_text("a superb film\n")
    with caplog.at_level(logging.WARNING):
        (prediction,) = Predictor(sentiment_run).predict([str(path)])
    assert prediction["input"] == str(path)
    assert "is the path of a file" in caplog.text and f"--file {path}" in caplog.text


def test_text_longer_than_max_length_is_marked_truncated_with_a_warning(sentiment_run, caplog):
    long_text = " ".join(["the film was good and the acting was superb"] * 10)  # far past max_length=32
    with caplog.at_level(logging.WARNING):
        short, long = Predictor(sentiment_run).predict(["the film was good", long_text])
    assert short["truncated"] is False and long["truncated"] is True
    assert "1 of 2 inputs are longer than data.max_length=32 tokens" in caplog.text


def test_output_file_is_not_replaced_without_overwrite(sentiment_run, tmp_path, capsys):
    output = tmp_path / "preds.jsonl"
    output.write_text("earlier predictions\n")
    assert main(["predict", str(sentiment_run), "the film was good", "--output", str(output)]) == 2
    assert f"--output file '{output}' already exists" in capsys.readouterr().err
    assert output.read_text() == "earlier predictions\n"
    assert main(["predict", str(sentiment_run), "the film was good", "--output", str(output), "--overwrite"]) == 0
    (row,) = [json.loads(line) for line in output.read_text().splitlines()]
    assert row["label"] == "positive"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preds.jsonl"]


def test_an_input_file_never_becomes_the_output_even_with_overwrite(sentiment_run, sentiment_files, tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("the film was good\nawful plot\n")
    for argv in (
        ["--file", str(texts), "--output", str(texts), "--overwrite"],
        ["--data", str(texts), "--output", str(tmp_path / "." / "texts.txt"), "--overwrite"],
    ):
        assert main(["predict", str(sentiment_run), *argv]) == 2
        assert "is also an input" in capsys.readouterr().err
    assert texts.read_text() == "the film was good\nawful plot\n"
    table = tmp_path / "test.csv"
    table.write_text(Path(sentiment_files["test"]).read_text())
    with pytest.raises(HubtuneError, match="is also an input"):
        Predictor(sentiment_run).predict_data(table, table, overwrite=True)


def test_predict_data_names_the_editors_line_of_a_broken_jsonl(sentiment_run, tmp_path, capsys):
    data = tmp_path / "new.jsonl"
    data.write_text('{"text": "the film was good"}\n{"text": "awful plot"\n{"text": "dull"}\n')
    output = tmp_path / "preds.jsonl"
    assert main(["predict", str(sentiment_run), "--data", str(data), "--output", str(output)]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"hubtune: error: data file '{data}', line 2, column 22: Expecting ',' delimiter")
    assert not output.exists()


def test_ner_predict_tags_a_text_longer_than_the_model_positions(tmp_path_factory):
    from helpers.ner import build_tiny_ner_bert, ner_recipe_values, write_conll

    root = tmp_path_factory.mktemp("ner-long")
    files = {
        s: str(write_conll(root / f"{s}.conll", n, seed))
        for s, n, seed in (("train", 300, 0), ("validation", 60, 1), ("test", 60, 2))
    }
    run_dir = root / "run"
    Recipe.from_dict(ner_recipe_values(build_tiny_ner_bert(root / "checkpoint"), files, run_dir)).run()
    predictor = Predictor(run_dir)
    sentence = "angela merkel visited berlin ."
    (short,) = predictor.predict([sentence])
    text = " ".join([sentence] * 20)  # about 140 word pieces; the model has 64 positions
    (long,) = predictor.predict([text])
    spans = [(e["type"], e["text"], e["start"]) for e in long["entities"]]
    step = len(sentence) + 1
    expected = [(e["type"], e["text"], e["start"] + k * step) for k in range(20) for e in short["entities"]]
    assert spans == expected
    assert long["entities"][-1]["end"] == len(text) - 2  # the last "berlin", before the final " ."


def _without_weights(folder: Path) -> Path:
    for weights in [*folder.glob("*.safetensors"), *folder.glob("*.bin")]:
        weights.unlink()
    return folder


def test_checkpoint_folder_without_weights_names_the_folder_and_key(recipe_values, tiny_bert, tmp_path):
    folder = _without_weights(Path(shutil.copytree(tiny_bert, tmp_path / "config-only")))
    values = dict(copy.deepcopy(recipe_values), model={"checkpoint": str(folder)})
    with pytest.raises(HubtuneError, match="holds a config.json but no model weights") as caught:
        Recipe.from_dict(values).run()
    assert f"checkpoint folder ('model.checkpoint') '{folder}'" in str(caught.value)


def test_run_folder_without_weights_is_one_line_naming_it(sentiment_run, tmp_path, capsys):
    run_dir = _without_weights(Path(shutil.copytree(sentiment_run, tmp_path / "run")))
    assert main(["predict", str(run_dir), "the film was good"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"run folder '{run_dir}' holds a config.json but no model weights" in err[0]


@pytest.mark.parametrize("strategy", ["full", "peft"])
def test_remote_code_run_whose_recipe_forbids_it_names_the_key(
    recipe_values, remote_code_checkpoint, monkeypatch, strategy
):
    values = dict(
        copy.deepcopy(recipe_values), model={"checkpoint": str(remote_code_checkpoint), "trust_remote_code": True}
    )
    values["training"]["max_steps"] = 1
    lora = ["adapt.peft.target_modules=[query,value]"] if strategy == "peft" else []
    Recipe.from_dict(values, overrides=[f"adapt.strategy={strategy}", *lora]).run()
    run_dir = Path(values["output_dir"])
    monkeypatch.setattr("builtins.input", lambda *args: pytest.fail("prompted for trust_remote_code"))
    (prediction,) = Predictor(run_dir).predict(["a superb and lovely film"])
    assert prediction["label"] in ("negative", "positive")
    recipe = run_dir / "recipe.yaml"
    recipe.write_text(recipe.read_text().replace("trust_remote_code: true", "trust_remote_code: false"))
    with pytest.raises(HubtuneError, match="trust_remote_code") as caught:
        Predictor(run_dir)
    assert str(run_dir) in str(caught.value)


def test_non_utf8_standard_input_is_one_line_naming_its_line(sentiment_run, monkeypatch, capsys):
    # As Python opens the real stdin: undecodable bytes become lone surrogates rather than an error.
    stdin = io.TextIOWrapper(io.BytesIO(b"good film\n\xff\xfe bad\n"), encoding="utf-8", errors="surrogateescape")
    monkeypatch.setattr("sys.stdin", stdin)
    assert main(["predict", str(sentiment_run), "-"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "standard input, line 2: not UTF-8 text" in err[0]


def _cut_in_half(weights: Path) -> None:
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


@pytest.mark.parametrize("command", ["predict", "evaluate", "export"])
@pytest.mark.parametrize("strategy, weights", [("full", "model.safetensors"), ("peft", "adapter_model.safetensors")])
def test_damaged_weights_in_a_run_folder_are_one_line_naming_the_file(
    trained_run, tmp_path, capsys, command, strategy, weights
):
    run_dir = Path(shutil.copytree(trained_run(strategy).run_dir, tmp_path / "run"))
    _cut_in_half(run_dir / weights)
    before = sorted(p.name for p in run_dir.iterdir())
    capsys.readouterr()  # what training the run printed
    out = tmp_path / "exported"
    argv = {
        "predict": ["predict", str(run_dir), "the film was good"],
        "evaluate": ["evaluate", str(run_dir)],
        "export": ["export", str(run_dir), str(out), "--merge"],
    }[command]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    assert f"run folder '{run_dir}': weight file '{weights}' is truncated or damaged" in err[0]
    assert "as an interrupted copy or download leaves it: copy or download it again" in err[0]
    assert sorted(p.name for p in run_dir.iterdir()) == before  # evaluate wrote no results beside it
    assert not out.exists()


def _as_torch_bin(folder: Path) -> Path:
    """The checkpoint as transformers 4 saved it without safetensors: one torch.save'd state dict."""
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    return folder / "pytorch_model.bin"


def _as_shards_missing_one(folder: Path, source: Path) -> Path:
    """The checkpoint saved in shards, one of which did not arrive."""
    from transformers import AutoModelForSequenceClassification

    (folder / "model.safetensors").unlink()
    AutoModelForSequenceClassification.from_pretrained(source).save_pretrained(folder, max_shard_size="40KB")
    shards = sorted(folder.glob("model-*.safetensors"))
    assert len(shards) > 1
    shards[-1].unlink()
    return folder / "model.safetensors.index.json"


@pytest.mark.parametrize("damage", ["truncated safetensors", "truncated torch bin", "empty torch bin", "lost shard"])
def test_damaged_checkpoint_weights_stop_training_before_the_run_folder(
    recipe_values, tiny_bert, tmp_path, capsys, damage
):
    folder = Path(shutil.copytree(tiny_bert, tmp_path / "checkpoint"))
    if damage == "truncated safetensors":
        weights = folder / "model.safetensors"
        _cut_in_half(weights)
    elif damage == "lost shard":
        weights = _as_shards_missing_one(folder, tiny_bert)
    else:
        weights = _as_torch_bin(folder)
        check_weight_files(folder, "checkpoint folder")  # an intact .bin passes
        if damage == "truncated torch bin":
            _cut_in_half(weights)
        else:
            weights.write_bytes(b"")
    values = dict(copy.deepcopy(recipe_values), model={"checkpoint": str(folder)})
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(json.dumps(values))
    assert main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("hubtune: error: ") and "Traceback" not in "\n".join(err)
    assert f"checkpoint folder ('model.checkpoint') '{folder}': weight file '{weights.name}'" in err[-1]
    assert "truncated or damaged" in err[-1] and "interrupted copy or download" in err[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "recipe.yaml"]  # no run folder, no lock
