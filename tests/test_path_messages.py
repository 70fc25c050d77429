"""A path that is there but of the wrong kind (a folder where a file is read, a file where a folder is) is named as
what it is, with the key or option that gave it, never as "does not exist"."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from pipelines import HubtuneError, Recipe, load_recipe_config
from pipelines.commands.cli import main
from pipelines.errors import require_path


def error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("hubtune: error:")]
    assert len(lines) == 1, lines
    return lines[0].removeprefix("hubtune: error: ")


def test_require_path_says_what_is_there(tmp_path):
    folder, file, pipe = tmp_path / "folder", tmp_path / "file.csv", tmp_path / "pipe"
    folder.mkdir()
    file.write_text("x")
    os.mkfifo(pipe)
    require_path(file, "file", "data file")
    require_path(folder, "folder", "run folder")
    require_path(folder, None, "data file")
    with pytest.raises(HubtuneError, match=rf"^data file '{tmp_path}/absent' \('k'\) does not exist; hint$"):
        require_path(tmp_path / "absent", "file", "data file", "k", "; hint")
    with pytest.raises(HubtuneError, match=rf"^'{folder}' \('k'\) is a folder, not a data file$"):
        require_path(folder, "file", "data file", "k")
    with pytest.raises(HubtuneError, match=rf"^'{file}' is a file, not an input folder$"):
        require_path(file, "folder", "input folder")
    with pytest.raises(HubtuneError, match=r"is a special file \(a pipe, socket or device\), not a data file"):
        require_path(pipe, None, "data file")


def test_a_data_file_that_is_a_folder_names_its_key(recipe_values, tmp_path, capsys):
    values = copy.deepcopy(recipe_values)
    folder = tmp_path / "train.csv"
    folder.mkdir()
    values["data"]["files"]["train"] = str(folder)
    with pytest.raises(HubtuneError, match=rf"^'{folder}' \('data.files.train'\) is a folder, not a data file$"):
        Recipe.from_dict(values).run()
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(values))
    assert main(["train", str(recipe)]) == 2
    assert error_line(capsys) == f"'{folder}' ('data.files.train') is a folder, not a data file"
    assert not Path(values["output_dir"]).exists()


def test_a_folder_format_given_a_file_names_its_key(tmp_path):
    annotations = tmp_path / "train.xml"
    annotations.write_text("<annotation/>")
    config = load_recipe_config(
        values={
            "name": "boxes",
            "task": "object-detection",
            "model": {"checkpoint": "org/detr"},
            "data": {"files": {"train": str(annotations)}, "annotation_format": "voc", "test_split": None},
        }
    )
    from pipelines.tasks import get_task

    with pytest.raises(HubtuneError, match=rf"^'{annotations}' \('data.files.train'\) is a file, not a data folder$"):
        get_task("object-detection")(config).read_splits()


@pytest.mark.parametrize(
    "command",
    [
        ["predict", "{run}", "a text"],
        ["evaluate", "{run}"],
        ["export", "{run}", "{out}"],
        ["export", "{run}", "{out}", "--format", "onnx"],
        ["push", "{run}", "--dry-run", "{out}"],
    ],
    ids=["predict", "evaluate", "export", "export-onnx", "push"],
)
def test_a_run_argument_that_is_a_file_is_named_as_one(command, tmp_path, capsys):
    run = tmp_path / "run.zip"
    run.write_bytes(b"PK")
    out = tmp_path / "out"
    assert main([part.format(run=run, out=out) for part in command]) == 2
    assert error_line(capsys) == f"'{run}' is a file, not a run folder"
    assert not out.exists()


def test_inputs_and_outputs_of_run_commands_of_the_wrong_kind(trained_run, tmp_path, capsys):
    run = trained_run("full").run_dir
    folder = tmp_path / "texts"
    folder.mkdir()
    assert main(["predict", str(run), "--file", str(folder)]) == 2
    assert error_line(capsys) == f"'{folder}' ('--file') is a folder, not an input file"
    assert main(["predict", str(run), "--data", str(folder), "--output", str(tmp_path / "p.jsonl")]) == 2
    assert error_line(capsys) == f"'{folder}' ('--data') is a folder, not a data file"
    assert main(["predict", str(run), "a text", "--output", str(folder)]) == 2
    assert error_line(capsys) == f"'{folder}' ('--output') is a folder, not an output file"
    assert list(folder.iterdir()) == []
    taken = tmp_path / "taken.txt"
    taken.write_text("mine")
    assert main(["push", str(run), "--repo-id", "me/tiny", "--dry-run", str(taken)]) == 2
    assert error_line(capsys) == f"'{taken}' is a file, not a --dry-run folder"
    assert taken.read_text() == "mine"


def test_image_and_audio_inputs_that_are_folders(tmp_path):
    from pipelines.data.images import predict_images
    from pipelines.tasks.audio_task import AudioServing

    with pytest.raises(HubtuneError, match=rf"^'{tmp_path}' is a folder, not an image$"):
        predict_images([str(tmp_path)])
    # The check comes before any clip is decoded: a stand-in serving half with an extractor's rate is enough.
    serving = SimpleNamespace(task=None, processor=SimpleNamespace(sampling_rate=16000))
    with pytest.raises(HubtuneError, match=rf"^'{tmp_path}' is a folder, not an audio file$"):
        AudioServing.waveforms(serving, [str(tmp_path)])  # type: ignore[arg-type]


def test_a_checkpoint_that_is_a_file_is_named_as_one(recipe_values, tmp_path):
    values = copy.deepcopy(recipe_values)
    config_file = Path(values["model"]["checkpoint"]) / "config.json"
    values["model"]["checkpoint"] = str(config_file)
    with pytest.raises(HubtuneError) as caught:
        Recipe.from_dict(values).run()
    assert str(caught.value).startswith(f"'{config_file}' ('model.checkpoint') is a file, not a checkpoint folder")
    assert "'model.timm_architecture'" in str(caught.value)
    assert not Path(values["output_dir"]).exists()


def test_output_folders_that_are_files(recipe_values, tmp_path, capsys):
    taken = tmp_path / "taken.txt"
    taken.write_text("mine")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(recipe_values))
    assert main(["compare", str(recipe), "--out", str(taken)]) == 2
    assert error_line(capsys) == f"'--out' '{taken}' is a file, not a folder; choose another '--out'"
    source = tmp_path / "faster-whisper"
    source.mkdir()
    for name in ("model.bin", "tokenizer.json"):
        (source / name).write_bytes(b"")  # the target is checked before either is read
    assert main(["import-ct2", str(source), str(taken)]) == 2
    assert error_line(capsys) == f"'{taken}' is a file, not a target folder"
    assert taken.read_text() == "mine"


def test_a_search_folder_that_is_a_file(recipe_values, tmp_path, capsys):
    taken = tmp_path / "taken.txt"
    taken.write_text("mine")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(dict(recipe_values, search={"training.learning_rate": {"low": 0.001, "high": 0.01}}))
    )
    assert main(["search", str(recipe), "--out", str(taken)]) == 2
    assert error_line(capsys) == f"'--out' '{taken}' is a file, not a folder; choose another '--out'"
    assert taken.read_text() == "mine"


# --- where a JSON data file breaks: the line and column an editor shows ----------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "fault"),
    [
        (
            "rows.jsonl",
            '{"a": 1}\n\n{"a": 2,}\n',
            "line 3, column 9: Expecting property name enclosed in double quotes",
        ),
        ("rows.jsonl", '{"a": 1}\n"a string"\n', "line 2: holds a string, not an object"),
        (
            "rows.jsonl",
            '{"a": 1}\n{"a": "caf\xe9"}\n'.encode("latin-1"),
            "line 2, column 11: not UTF-8 text (byte 0xe9)",
        ),
        ("rows.json", '[\n  {"a": 1},\n  {"a": 2}\n  {"a": 3}\n]\n', "line 4, column 3: Expecting ',' delimiter"),
        ("rows.json", '{"a": 1}\n{"a": }\n', "line 2, column 7: Expecting value"),
        ("rows.jsonl", '{"a": 1}\n{"a": 2}\n', None),
    ],
    ids=["bad-line", "not-an-object", "not-utf8", "json-document", "json-lines-in-a-json-file", "valid"],
)
def test_json_fault_names_the_editors_line(tmp_path, name, text, fault):
    from pipelines.data.json_faults import json_fault

    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    found = json_fault(path)
    assert found == fault if fault is None else found is not None and found.startswith(fault)


def test_a_streamed_jsonl_names_its_line_too(tmp_path):
    from pipelines.data.splits import load_table_stream

    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": \n')
    with pytest.raises(HubtuneError, match=rf"^data file '{path}', line 2, column 24: Expecting value"):
        load_table_stream(path)
    path.write_text("")
    with pytest.raises(HubtuneError, match=rf"^data file '{path}' is empty: it has no rows$"):
        load_table_stream(path)
