"""hubtune export --merge: LoRA folded into the base weights, head kept, plain from_pretrained loads it; --format
onnx: one graph that onnxruntime runs alone, equal to the run model at other batch sizes and lengths."""

from __future__ import annotations

import copy
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from pipelines import HubtuneError, Recipe
from pipelines.commands.cli import main
from pipelines.serving.export import export_run
from pipelines.serving.predictor import Predictor

# Trains models for seconds each: `make test-fast` leaves this module out.
pytestmark = pytest.mark.slow


def test_merged_lora_export_loads_with_plain_from_pretrained_and_predicts_the_same(trained_run, tmp_path, capsys):
    run = trained_run("peft")
    out = tmp_path / "merged"
    assert main(["export", str(run.run_dir), str(out), "--merge"]) == 0
    check = json.loads((out / "export_check.json").read_text())
    assert check["merged_adapter"] is True and check["max_abs_logit_difference"] < 1e-4
    assert not (out / "adapter_config.json").exists()
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.id2label == {0: "negative", 1: "positive"}
    assert not any("lora" in name for name, _ in model.named_parameters())

    texts = ["the film was good", "awful plot and boring cast"]
    adapter_scores = [p["scores"] for p in Predictor(run.run_dir).predict(texts)]
    merged_scores = [p["scores"] for p in Predictor(out).predict(texts)]
    for adapter, merged in zip(adapter_scores, merged_scores):
        for label in adapter:
            assert merged[label] == pytest.approx(adapter[label], abs=1e-5)
    # The trained head, not a fresh one: the merged model still separates the classes.
    assert [max(s, key=s.get) for s in merged_scores] == ["positive", "negative"]


def test_export_needs_no_data_a_run_whose_data_moved_exports_and_predicts_the_same(
    recipe_values, tmp_path, caplog, capsys
):
    """The run's recipe.yaml holds absolute data paths; once the data moves, export checks on made-up inputs."""
    data = tmp_path / "data"
    data.mkdir()
    values = copy.deepcopy(recipe_values)
    for split, path in values["data"]["files"].items():
        values["data"]["files"][split] = str(shutil.copy(path, data / Path(path).name))
    run_dir = tmp_path / "run"
    values["output_dir"] = str(run_dir)
    Recipe.from_dict(values, ["adapt.strategy=peft", "training.num_train_epochs=1"]).run()
    data.rename(tmp_path / "archived")
    texts = ["the film was good", "awful plot and boring cast", "a lovely story"]
    for argv in (["--merge"], ["--format", "onnx"]):
        out = tmp_path / f"export{argv[-1]}"
        with caplog.at_level(logging.WARNING):
            assert main(["export", str(run_dir), str(out), *argv]) == 0
        check = json.loads((out / "export_check.json").read_text())
        assert check["probe"] == "made-up inputs" and check["max_abs_logit_difference"] < 1e-4
        assert f"the run's data cannot be read here (data file '{data / 'test.csv'}'" in caplog.text
        caplog.clear()
    merged = [p["scores"] for p in Predictor(tmp_path / "export--merge").predict(texts)]
    for run, exported in zip(Predictor(run_dir).predict(texts), merged):
        assert exported == pytest.approx(run["scores"], abs=1e-5)
    onnx = tmp_path / "exportonnx"
    from transformers import AutoTokenizer

    batch = AutoTokenizer.from_pretrained(onnx)(texts, padding=True, return_tensors="pt")
    assert_graph_matches_run(onnx, run_dir, [batch])
    # What does need the data says where it looked.
    assert main(["evaluate", str(run_dir)]) == 2
    assert f"data file '{data / 'test.csv'}' ('data.files.test') does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("export_format", ["transformers", "onnx"])
def test_export_writes_over_nothing_and_never_into_the_run(trained_run, tmp_path, capsys, export_format):
    run_dir = trained_run("full").run_dir
    run_before = sorted(p.name for p in run_dir.iterdir())
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    user_file = tmp_path / "model.txt"
    user_file.write_text("mine too")
    cases = {
        taken: f"export folder '{taken}' already exists and is not empty; give a new or empty folder",
        user_file: f"'{user_file}' is a file, not an export folder",
        run_dir: f"export folder '{run_dir}' is inside the run folder '{run_dir}'; give a folder outside it",
        run_dir / "export": (
            f"export folder '{run_dir / 'export'}' is inside the run folder '{run_dir}'; give a folder outside it"
        ),
    }
    for out, message in cases.items():
        assert main(["export", str(run_dir), str(out), "--format", export_format]) == 2
        assert capsys.readouterr().err.strip().splitlines()[-1] == f"hubtune: error: {message}"
    assert sorted(p.name for p in taken.iterdir()) == ["notes.txt"] and (taken / "notes.txt").read_text() == "mine"
    assert user_file.read_text() == "mine too"
    assert sorted(p.name for p in run_dir.iterdir()) == run_before


def test_lora_export_without_merge_is_an_error(trained_run, tmp_path):
    from pipelines.serving.export import export_run

    with pytest.raises(HubtuneError, match="--merge"):
        export_run(trained_run("peft").run_dir, tmp_path / "out", merge=False)
    assert not (tmp_path / "out").exists()


def test_full_run_exports_as_is(trained_run, tmp_path):
    from pipelines.serving.export import export_run

    run = trained_run("full")
    check = export_run(run.run_dir, tmp_path / "out", merge=True)
    assert check["merged_adapter"] is False and check["max_abs_logit_difference"] == 0.0
    original = AutoModelForSequenceClassification.from_pretrained(run.run_dir)
    exported = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out")
    for (name, a), (_, b) in zip(original.named_parameters(), exported.named_parameters()):
        assert torch.equal(a, b), name


# --- --format onnx: one graph onnxruntime runs alone, checked against the run model ----------------------------


def onnx_session(out):
    import onnxruntime

    return onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])


def assert_graph_matches_run(out, run_dir, batches) -> None:
    """The graph's logits on `batches` (other sizes and lengths than the export's) equal `Predictor`'s to 1e-4."""
    session = onnx_session(out)
    model = Predictor(run_dir).model.cpu().eval()
    names = [graph_input.name for graph_input in session.get_inputs()]
    for batch in batches:
        graph = session.run(["logits"], {name: batch[name].numpy() for name in names})[0]
        with torch.no_grad():
            reference = model(**{name: batch[name] for name in names}).logits.numpy()
        assert graph.shape == reference.shape
        assert abs(graph - reference).max() < 1e-4, {name: list(batch[name].shape) for name in names}


def export_onnx_cli(run_dir, out) -> dict:
    assert main(["export", str(run_dir), str(out), "--format", "onnx"]) == 0
    check = json.loads((out / "export_check.json").read_text())
    assert check["format"] == "onnx" and check["max_abs_logit_difference"] < 1e-4
    # Checked at two batch sizes at export: the graph's batch axis is not frozen at the export batch's.
    assert len({shapes[next(iter(shapes))][0] for shapes in check["checked_shapes"]}) == 2
    return check


# The serving side: onnxruntime, the tokenizers library and the label names in config.json; no torch, no hubtune.
SERVE_TEXT = """
import json, sys
import numpy as np, onnxruntime, tokenizers
out = sys.argv[1]
tokenizer = tokenizers.Tokenizer.from_file(f"{out}/tokenizer.json")
tokenizer.enable_padding()
session = onnxruntime.InferenceSession(f"{out}/model.onnx", providers=["CPUExecutionProvider"])
labels = json.load(open(f"{out}/config.json"))["id2label"]
encodings = tokenizer.encode_batch(sys.argv[2:])
feeds = {
    "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
    "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
    "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
}
logits = session.run(["logits"], {i.name: feeds[i.name] for i in session.get_inputs()})[0]
assert "torch" not in sys.modules and "pipelines" not in sys.modules and "transformers" not in sys.modules
print(json.dumps([labels[str(int(row.argmax()))] for row in logits]))
"""


def test_onnx_text_export_runs_in_onnxruntime_alone_at_any_batch_size_and_length(trained_run, tmp_path):
    import subprocess
    import sys

    from transformers import AutoTokenizer

    run = trained_run("full")
    out = tmp_path / "onnx"
    check = export_onnx_cli(run.run_dir, out)
    assert check["merged_adapter"] is False
    assert {"model.onnx", "config.json", "tokenizer.json", "recipe.yaml"} <= {p.name for p in out.iterdir()}
    assert [graph_input.shape for graph_input in onnx_session(out).get_inputs()] == [["batch", "sequence"]] * 3

    tokenizer = AutoTokenizer.from_pretrained(out)
    texts = [
        "good",
        "the film was awful",
        "really quite a lovely and wonderful story , the cast was superb",
        "dull",
        "boring plot and poor acting",
    ]
    batches = [tokenizer(texts[:n], padding=True, return_tensors="pt") for n in (1, 3, 5)]
    assert len({tuple(batch["input_ids"].shape) for batch in batches}) == 3
    assert_graph_matches_run(out, run.run_dir, batches)

    served = subprocess.run(
        [sys.executable, "-c", SERVE_TEXT, str(out), "the film was good", "awful plot and boring cast"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(served.stdout) == ["positive", "negative"]


def test_onnx_export_merges_a_lora_adapter_without_asking(trained_run, tmp_path):
    from transformers import AutoTokenizer

    run = trained_run("peft")
    out = tmp_path / "onnx"
    check = export_onnx_cli(run.run_dir, out)
    assert check["merged_adapter"] is True
    assert not (out / "adapter_config.json").exists()
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "negative", "1": "positive"}
    tokenizer = AutoTokenizer.from_pretrained(out)
    texts = ["superb", "the acting was terrible and the story dull", "a great movie"]
    assert_graph_matches_run(
        out, run.run_dir, [tokenizer(texts[:n], padding=True, return_tensors="pt") for n in (2, 3)]
    )


def test_onnx_token_classification_export(tmp_path):
    from helpers.ner import build_tiny_ner_bert, ner_recipe_values, write_conll
    from transformers import AutoTokenizer

    from pipelines import Recipe

    files = {
        s: str(write_conll(tmp_path / f"{s}.conll", n, seed))
        for s, n, seed in (("train", 40, 0), ("validation", 10, 1), ("test", 10, 2))
    }
    values = ner_recipe_values(build_tiny_ner_bert(tmp_path / "ckpt"), files, tmp_path / "run")
    Recipe.from_dict(values, overrides=["training.num_train_epochs=1"]).run()
    out = tmp_path / "onnx"
    export_onnx_cli(tmp_path / "run", out)
    assert onnx_session(out).get_outputs()[0].shape == [
        "batch",
        "sequence",
        len(Predictor(tmp_path / "run").label_names),
    ]
    tokenizer = AutoTokenizer.from_pretrained(out)
    words = [["anna", "lives", "in", "paris"], ["the"], ["new", "york", "and", "the", "film", "was", "a", "story"]]
    batches = [tokenizer(words[:n], is_split_into_words=True, padding=True, return_tensors="pt") for n in (1, 3)]
    assert_graph_matches_run(out, tmp_path / "run", batches)


@pytest.mark.parametrize("family", ["vit", "timm"])
def test_onnx_image_classification_export(family, tmp_path):
    import timm
    from test_image_classification import COLOURS, colour_image, image_recipe, save_timm_checkpoint, write_image_folders
    from transformers import AutoImageProcessor, ViTConfig, ViTForImageClassification, ViTImageProcessor

    from pipelines import Recipe

    torch.manual_seed(0)
    checkpoint = tmp_path / "ckpt"
    if family == "vit":
        config = ViTConfig(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
        )
        ViTForImageClassification(config).save_pretrained(checkpoint)
        ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(checkpoint)
    else:
        save_timm_checkpoint(timm.create_model("test_resnet", num_classes=10), checkpoint, 32)
    files = write_image_folders(tmp_path / "images")
    values = image_recipe(checkpoint, files, tmp_path / "run", num_train_epochs=1)
    # The timm run trains at another input size than its checkpoint's: OUT's preprocessing must say so.
    values["data"]["image_size"] = 24 if family == "timm" else None
    Recipe.from_dict(values).run()
    out = tmp_path / "onnx"
    export_onnx_cli(tmp_path / "run", out)
    # Label names as each family's config.json spells them: transformers' id2label, timm's own label_names list.
    config = json.loads((out / "config.json").read_text())
    labels = list(config["id2label"].values()) if family == "vit" else config["label_names"]
    assert sorted(labels) == sorted(COLOURS)
    # The processor in OUT (for timm: the pretrained_cfg in config.json) makes the graph's inputs.
    processor = AutoImageProcessor.from_pretrained(out)
    rng = __import__("random").Random(5)
    images = [colour_image(rng, colour) for colour in COLOURS.values()]
    batches = [processor(images[:n], return_tensors="pt") for n in (1, 5)]
    side = 24 if family == "timm" else 32
    assert batches[0]["pixel_values"].shape[-2:] == (side, side)
    assert onnx_session(out).get_inputs()[0].shape == ["batch", 3, side, side]
    assert_graph_matches_run(out, tmp_path / "run", batches)


def test_onnx_audio_classification_export(tmp_path):
    from helpers.speech import tiny_wav2vec2_folder, write_tone_folder
    from transformers import AutoFeatureExtractor

    from pipelines import Recipe

    files = {
        s: str(write_tone_folder(tmp_path / s, n, seed))
        for s, n, seed in (("train", 4, 0), ("validation", 2, 1), ("test", 3, 2))
    }
    values = {
        "name": "tones",
        "task": "audio-classification",
        "output_dir": str(tmp_path / "run"),
        "model": {"checkpoint": str(tiny_wav2vec2_folder(tmp_path / "ckpt"))},
        "data": {"files": files, "max_duration_s": 0.5},
        "training": {"num_train_epochs": 1, "save_strategy": "no", "disable_tqdm": True},
    }
    Recipe.from_dict(values).run()
    out = tmp_path / "onnx"
    export_onnx_cli(tmp_path / "run", out)
    extractor = AutoFeatureExtractor.from_pretrained(out)
    rng = np.random.default_rng(0)
    clips = [rng.normal(0, 0.3, n).astype(np.float32) for n in (3000, 9000, 5000)]
    batches = [extractor(clips[:n], sampling_rate=16000, padding=True, return_tensors="pt") for n in (1, 3)]
    assert_graph_matches_run(out, tmp_path / "run", batches)


def test_onnx_export_of_a_transcription_run_is_one_error_line(tmp_path, capsys):
    from helpers.speech import tiny_wav2vec2_folder, write_spelled_split

    from pipelines import Recipe

    files = {
        s: str(write_spelled_split(tmp_path / s, 6, seed)) for s, seed in (("train", 0), ("validation", 1), ("test", 2))
    }
    values = {
        "name": "spelled",
        "task": "speech-recognition-ctc",
        "output_dir": str(tmp_path / "run"),
        "model": {"checkpoint": str(tiny_wav2vec2_folder(tmp_path / "ckpt", "Wav2Vec2Model"))},
        "data": {"files": files, "max_duration_s": 5},
        "training": {"num_train_epochs": 1, "save_strategy": "no", "disable_tqdm": True},
    }
    Recipe.from_dict(values).run()
    capsys.readouterr()
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "onnx"), "--format", "onnx"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "speech-recognition-ctc" in error and "text-classification" in error
    assert "Traceback" not in error
    assert not (tmp_path / "onnx").exists()


def test_onnx_export_refuses_a_non_empty_folder(trained_run, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(HubtuneError, match="not empty"):
        export_run(trained_run("full").run_dir, out, merge=False, export_format="onnx")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_onnx_graph_outside_the_tolerance_is_an_error_naming_the_difference(trained_run, tmp_path, monkeypatch):
    import pipelines.serving.onnx_export

    # A negative tolerance no difference meets, not even an exact match: the real graph fails the real check.
    monkeypatch.setattr(pipelines.serving.onnx_export, "TOLERANCE", -1.0)
    out = tmp_path / "onnx"
    with pytest.raises(HubtuneError, match=r"differs from the run model by \S+ on inputs input_ids \[\d+, \d+\]"):
        export_run(trained_run("full").run_dir, out, merge=False, export_format="onnx")
    check = json.loads((out / "export_check.json").read_text())
    assert check["max_abs_logit_difference"] < 1e-4  # what the error reports, kept for a look


def test_onnx_export_of_a_streaming_run_probes_the_first_rows_of_the_stream(recipe_values, tmp_path):
    from pipelines import Recipe

    overrides = ["data.streaming=true", "data.labels=[negative,positive]", "training.max_steps=5"]
    Recipe.from_dict(recipe_values, overrides).run()
    check = export_run(recipe_values["output_dir"], tmp_path / "onnx", merge=False, export_format="onnx")
    assert check["probe_examples"] == 8 and check["max_abs_logit_difference"] < 1e-4


def test_onnx_graph_frozen_at_the_export_shapes_is_caught_at_export(trained_run, tmp_path, monkeypatch):
    import pipelines.serving.onnx_export

    # Without dynamic axes the graph keeps the export batch's shapes; the second, smaller probe batch shows it.
    monkeypatch.setattr(pipelines.serving.onnx_export, "_dynamic_shapes", lambda batch: None)
    with pytest.raises(HubtuneError, match=r"does not run on inputs input_ids \[4, \d+\].*invalid dimensions"):
        export_run(trained_run("full").run_dir, tmp_path / "onnx", merge=False, export_format="onnx")
