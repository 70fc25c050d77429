"""Image classification end to end: a tiny transformers ViT and a tiny timm ResNet, on images written here.

The classes are colours (learnable at 32x32 in a few epochs, and unchanged by crop, flip and colour jitter).
"""

from __future__ import annotations

import csv
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers.runs import assert_export_checked_on_made_up_inputs
from helpers.vision import save_tiny_vit
from PIL import Image

from pipelines import HubtuneError, Recipe
from pipelines.serving.predictor import Predictor

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 200, 30),
    "blue": (30, 30, 220),
    "yellow": (220, 220, 30),
    "cyan": (30, 210, 210),
    "magenta": (210, 30, 210),
}
SIZES = {"train": 10, "validation": 3, "test": 4}  # per class


def colour_image(rng: random.Random, colour: tuple[int, int, int]) -> Image.Image:
    noise = np.random.default_rng(rng.randrange(2**32)).integers(-25, 26, size=(32, 32, 3))
    return Image.fromarray(np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8))


def write_image_folders(root: Path, seed: int = 0) -> dict[str, str]:
    """train/validation/test image folders, one sub-folder per colour; train holds a grayscale and an RGBA file."""
    rng = random.Random(seed)
    files = {}
    for split, n in SIZES.items():
        for name, colour in COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                colour_image(rng, colour).save(folder / f"{i}.png")
        files[split] = str(root / split)
    Image.new("L", (32, 32), 128).save(root / "train" / "red" / "gray.png")
    colour_image(rng, COLOURS["blue"]).convert("RGBA").save(root / "train" / "blue" / "alpha.png")
    return files


@pytest.fixture(scope="module")
def image_folders(tmp_path_factory) -> dict[str, str]:
    return write_image_folders(tmp_path_factory.mktemp("colours"))


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory) -> Path:
    return save_tiny_vit(tmp_path_factory.mktemp("tiny-vit"))


def save_timm_checkpoint(model: torch.nn.Module, folder: Path, input_size: int) -> Path:
    """A timm model as the Hub stores it (timm's config.json + model.safetensors), at a small input size."""
    from timm.models import save_for_hf

    save_for_hf(model, folder, safe_serialization=True)
    config = json.loads((folder / "config.json").read_text())
    config["pretrained_cfg"].update(input_size=[3, input_size, input_size], crop_pct=1.0)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def tiny_timm(tmp_path_factory) -> Path:
    import timm

    torch.manual_seed(0)
    return save_timm_checkpoint(
        timm.create_model("test_resnet", num_classes=10), tmp_path_factory.mktemp("tiny-timm"), 32
    )


def image_recipe(checkpoint: Path, files: dict[str, str], output_dir: Path, **training) -> dict:
    return {
        "name": "tiny-colours",
        "task": "image-classification",
        "output_dir": str(output_dir),
        "model": {"checkpoint": str(checkpoint)},
        "data": {"files": dict(files)},
        "training": {
            "num_train_epochs": 6,
            "learning_rate": 3e-3,
            "per_device_train_batch_size": 8,
            "per_device_eval_batch_size": 32,
            "logging_steps": 5,
            "save_strategy": "no",
            "disable_tqdm": True,
            **training,
        },
    }


@pytest.fixture(scope="module")
def vit_run(tiny_vit, image_folders, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("vit-run") / "run"
    recipe = Recipe.from_dict(image_recipe(tiny_vit, image_folders, run_dir))
    return run_dir, recipe.run()


def test_vit_learns_colours(vit_run):
    run_dir, results = vit_run
    # Chance is 1/6.
    assert results["test_accuracy"] >= 0.9
    assert results["test_samples"] == 6 * SIZES["test"]
    assert results["train_samples"] == 6 * SIZES["train"] + 2
    assert 0.9 <= results["test_top_5_accuracy"] <= 1.0
    assert results["test_top_5_accuracy"] >= results["test_accuracy"]
    for key in ("test_f1_macro", "test_precision_macro", "test_recall_macro", "eval_accuracy"):
        assert key in results


def test_confusion_matrix_saved_as_data(vit_run):
    run_dir, results = vit_run
    saved = json.loads((run_dir / "test_confusion_matrix.json").read_text())
    assert saved["labels"] == sorted(COLOURS)
    matrix = np.array(saved["confusion_matrix"])
    assert matrix.shape == (6, 6)
    assert matrix.sum(axis=1).tolist() == [SIZES["test"]] * 6
    assert np.trace(matrix) / matrix.sum() == pytest.approx(results["test_accuracy"])
    assert (run_dir / "validation_confusion_matrix.json").is_file()


def test_vit_reload_predicts_and_evaluates(vit_run, image_folders, tmp_path):
    run_dir, results = vit_run
    run = Predictor(run_dir)
    assert run.label_names == sorted(COLOURS)
    assert run.evaluate("test")["test_accuracy"] == pytest.approx(results["test_accuracy"])
    test = Path(image_folders["test"])
    inputs = [str(test / name / "0.png") for name in sorted(COLOURS)]
    predictions = run.predict(inputs)
    assert [p["label"] for p in predictions] == sorted(COLOURS)
    assert all(len(p["top"]) == 5 and p["score"] == max(p["top"].values()) for p in predictions)
    # Grayscale and RGBA inputs are converted, not rejected.
    gray, alpha = tmp_path / "gray.png", tmp_path / "alpha.png"
    Image.new("L", (40, 24), 90).save(gray)
    Image.new("RGBA", (32, 32), (30, 30, 220, 255)).save(alpha)
    odd = run.predict([str(gray), str(alpha)])
    assert odd[1]["label"] == "blue"
    assert odd[0]["label"] in COLOURS


def write_csv_split(root: Path, folder: str, name: str) -> str:
    """A csv of relative image paths and labels for the files of an image folder."""
    path = root / f"{name}.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "label"])
        for image in sorted(Path(folder).rglob("*.png")):
            writer.writerow([os.path.relpath(image, root), image.parent.name])
    return str(path)


@pytest.fixture(scope="module")
def timm_run(tiny_timm, image_folders, tmp_path_factory):
    """The timm model on csv files of paths, validation carved from train; head-only training."""
    tables = tmp_path_factory.mktemp("tables") / "csv"
    tables.mkdir()
    files = {split: write_csv_split(tables, image_folders[split], split) for split in ("train", "test")}
    run_dir = tmp_path_factory.mktemp("timm-run") / "run"
    values = image_recipe(tiny_timm, files, run_dir, learning_rate=1e-2)
    values["data"].update(validation_split=None, validation_fraction=0.2)
    values["adapt"] = {"strategy": "train_last_n", "n": 1}
    return run_dir, Recipe.from_dict(values).run()


def test_timm_learns_with_layer_groups_from_group_matcher(timm_run, tiny_timm):
    run_dir, results = timm_run
    assert results["test_accuracy"] >= 0.8
    assert results["eval_samples"] == round(0.2 * (6 * SIZES["train"] + 2))
    rows = {row["group"]: row for row in json.loads((run_dir / "parameters.json").read_text())}
    # test_resnet's group_matcher: stem, then layer1..layer4, then the classifier `fc`.
    assert list(rows) == ["embeddings", "block.0", "block.1", "block.2", "block.3", "head"]
    assert rows["head"]["total"] == 6 * 96 + 6
    for group in ("embeddings", "block.0", "block.1", "block.2"):
        assert rows[group]["trainable"] == 0
    assert rows["block.3"]["trainable"] == rows["block.3"]["total"] > 0


def test_timm_frozen_parts_keep_batchnorm_statistics(timm_run, tiny_timm):
    from safetensors.torch import load_file

    run_dir, _ = timm_run
    before = load_file(str(tiny_timm / "model.safetensors"))
    after = {k.removeprefix("timm_model."): v for k, v in load_file(str(run_dir / "model.safetensors")).items()}
    frozen_stats = [k for k in before if k.startswith(("bn1.", "layer1.", "layer3.")) and "running_" in k]
    trained_stats = [k for k in before if k.startswith("layer4.") and "running_mean" in k]
    assert frozen_stats and trained_stats
    for key in frozen_stats:
        assert torch.equal(before[key], after[key]), f"frozen BatchNorm statistics {key} changed"
    assert all(not torch.equal(before[key], after[key]) for key in trained_stats)
    assert not torch.equal(before["fc.weight"][:6], after["fc.weight"])


@pytest.mark.parametrize("strategy", ["full", "lp_ft"])
def test_hold_batchnorm_statistics_keeps_every_running_statistic_while_the_weights_train(
    strategy, tiny_timm, image_folders, tmp_path
):
    from safetensors.torch import load_file

    values = image_recipe(tiny_timm, image_folders, tmp_path / "run", num_train_epochs=2)
    values["adapt"] = {"strategy": strategy, "hold_batchnorm_statistics": True}
    if strategy == "lp_ft":
        values["adapt"]["lp_ft"] = {"probe_epochs": 1}
    Recipe.from_dict(values).run()
    before = load_file(str(tiny_timm / "model.safetensors"))
    after = {
        k.removeprefix("timm_model."): v for k, v in load_file(str(tmp_path / "run" / "model.safetensors")).items()
    }
    statistics = [k for k in before if "running_" in k]
    weights = [k for k in before if k.endswith("conv1.weight") or (k.endswith(".weight") and "bn" in k)]
    assert statistics and weights
    assert all(torch.equal(before[key], after[key]) for key in statistics), "a held running statistic changed"
    assert any(not torch.equal(before[key], after[key]) for key in weights), "the backbone did not train"


def test_timm_reload_predicts_like_the_saved_run(timm_run, image_folders):
    run_dir, results = timm_run
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model_type"] == "timm_wrapper" and config["architecture"] == "test_resnet"
    assert config["label_names"] == sorted(COLOURS)
    run = Predictor(run_dir)
    assert run.evaluate("test")["test_accuracy"] == pytest.approx(results["test_accuracy"])
    images = sorted(Path(image_folders["test"]).rglob("0.png"))
    predictions = run.predict([str(p) for p in images])
    assert sum(p["label"] == image.parent.name for p, image in zip(predictions, images)) >= 5


def test_timm_lora_on_convolutions_saves_adapter_and_head(tiny_timm, image_folders, tmp_path):
    run_dir = tmp_path / "run"
    values = image_recipe(tiny_timm, image_folders, run_dir, num_train_epochs=2)
    values["adapt"] = {"strategy": "peft", "peft": {"method": "lora", "r": 4, "target_modules": ["conv2"]}}
    results = Recipe.from_dict(values).run()
    adapter = json.loads((run_dir / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(tiny_timm)
    assert any(name.endswith("fc") for name in adapter["modules_to_save"])
    rows = {row["group"]: row for row in json.loads((run_dir / "parameters.json").read_text())}
    assert rows["head"]["trainable"] == 6 * 96 + 6
    assert rows["embeddings"]["trainable"] == 0 and 0 < rows["block.0"]["trainable"] < rows["block.0"]["total"]
    # The reload (base checkpoint + adapter + head) scores what the trained model scored.
    assert Predictor(run_dir).evaluate("test")["test_accuracy"] == pytest.approx(results["test_accuracy"])


def test_hf_hub_prefix_names_the_hub_id(image_folders, tmp_path):
    values = image_recipe(Path("x"), image_folders, tmp_path / "run")
    values["model"]["checkpoint"] = "hf-hub:timm/no-such-model.in1k"
    with pytest.raises(HubtuneError, match="checkpoint 'timm/no-such-model.in1k'"):
        Recipe.from_dict(values).run()
    assert not (tmp_path / "run").exists()


def test_corrupt_image_is_reported_by_path(tiny_vit, image_folders, tmp_path):
    import shutil

    train = tmp_path / "train"
    shutil.copytree(image_folders["train"], train)
    broken = train / "green" / "broken.png"
    broken.write_bytes((train / "green" / "0.png").read_bytes()[:60])
    values = image_recipe(tiny_vit, {**image_folders, "train": str(train)}, tmp_path / "run")
    with pytest.raises(HubtuneError, match=f"image '{broken}' cannot be decoded"):
        Recipe.from_dict(values).run()
    assert not (tmp_path / "run").exists()


def test_image_folder_with_one_class_is_an_error(tiny_vit, image_folders, tmp_path):
    only = tmp_path / "train"
    (only / "red").mkdir(parents=True)
    colour_image(random.Random(0), COLOURS["red"]).save(only / "red" / "0.png")
    values = image_recipe(tiny_vit, {**image_folders, "train": str(only)}, tmp_path / "run")
    with pytest.raises(HubtuneError, match=rf"image folder '{only}' has 1 class sub-folder\(s\) \['red'\]"):
        Recipe.from_dict(values).run()


def test_missing_image_path_in_csv(tiny_vit, image_folders, tmp_path):
    table = tmp_path / "train.csv"
    table.write_text("image,label\nimgs/a.png,red\n")
    values = image_recipe(tiny_vit, {**image_folders, "train": str(table)}, tmp_path / "run")
    with pytest.raises(HubtuneError, match=r"train.csv', row 1: image 'imgs/a.png' does not exist"):
        Recipe.from_dict(values).run()


def test_top_k_accuracy_metric():
    from pipelines.metrics import load_metric

    scores = [[0.9, 0.1, 0.0], [0.1, 0.2, 0.7], [0.5, 0.3, 0.2]]
    metric = load_metric("top_k_accuracy")
    assert metric.compute(predictions=scores, references=[0, 1, 2], k=1)["top_1_accuracy"] == pytest.approx(1 / 3)
    assert metric.compute(predictions=scores, references=[0, 1, 2], k=2)["top_2_accuracy"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("checkpoint", ["tiny_vit", "tiny_timm"])
def test_image_size_overrides_the_checkpoint_input_size(checkpoint, image_folders, tmp_path, request):
    from pipelines.data.splits import load_splits
    from pipelines.tasks import get_task

    values = image_recipe(request.getfixturevalue(checkpoint), image_folders, tmp_path / "run")
    values["data"]["image_size"] = 24
    config = Recipe.from_dict(values).config
    task = get_task("image-classification")(config)
    data = task.prepare(load_splits(config.data, config.seed, task.load_data_file), task.load_processor())
    for role in ("train", "test"):
        assert data[role][:2]["pixel_values"].shape == (2, 3, 24, 24)
    values["data"]["image_size"] = None
    config = Recipe.from_dict(values).config
    task = get_task("image-classification")(config)
    data = task.prepare(load_splits(config.data, config.seed, task.load_data_file), task.load_processor())
    assert data["test"][:1]["pixel_values"].shape == (1, 3, 32, 32)


def test_cli_predict_and_missing_image(vit_run, image_folders, capsys):
    from pipelines.commands.cli import main

    run_dir, _ = vit_run
    image = Path(image_folders["test"]) / "yellow" / "1.png"
    assert main(["predict", str(run_dir), str(image)]) == 0
    label, score, shown = capsys.readouterr().out.strip().split("\t")
    assert label == "yellow" and 0 < float(score) <= 1 and shown == str(image)
    assert main(["predict", str(run_dir), "no-such.png"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "hubtune: error: input 'no-such.png' does not exist"


def test_hub_style_dataset_with_embedded_images(tiny_vit, tmp_path):
    """A Hub dataset's Image column (decoded, bytes inside the dataset) goes through the same checks."""
    import io

    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as ImageFeature

    from pipelines.data.splits import Splits
    from pipelines.tasks import get_task

    def encoded(colour, mode="RGB"):
        buffer = io.BytesIO()
        colour_image(random.Random(1), colour).convert(mode).save(buffer, format="PNG")
        return {"bytes": buffer.getvalue(), "path": None}

    features = Features({"img": ImageFeature(), "labels": ClassLabel(names=["red", "blue"])})
    train = Dataset.from_dict(
        {"img": [encoded(COLOURS["red"]), encoded(COLOURS["blue"], "L")], "labels": [0, 1]}, features=features
    )
    values = image_recipe(tiny_vit, {"train": "unused.csv"}, tmp_path / "run")
    values["data"].update(image_column="img", label_column="labels")
    from pipelines import load_recipe_config

    config = load_recipe_config(values=values)
    task = get_task("image-classification")(config)
    data = task.prepare(Splits({"train": train}, {"train": "split 'train' of Hub dataset 'x'"}), task.load_processor())
    assert data.label_names == ["red", "blue"]
    assert data["train"][:2]["pixel_values"].shape == (2, 3, 32, 32)
    broken = Dataset.from_dict({"img": [{"bytes": b"not an image", "path": None}], "labels": [0]}, features=features)
    with pytest.raises(
        HubtuneError, match=r"split 'train' of Hub dataset 'x', row 1: embedded image cannot be decoded"
    ):
        task.prepare(Splits({"train": broken}, {"train": "split 'train' of Hub dataset 'x'"}), task.load_processor())


def test_image_check_reads_headers_only_and_runs_in_processes(image_folders, tmp_path, monkeypatch):
    import shutil

    from PIL import ImageFile

    from pipelines.data.images import check_images, load_image_folder

    dataset = load_image_folder(Path(image_folders["train"]), "image", "label")

    def decoding(self):
        raise AssertionError("the up-front check decoded pixels")

    with monkeypatch.context() as patched:
        patched.setattr(ImageFile.ImageFile, "load", decoding)
        check_images(dataset, "image", lambda row: f"row {row + 1}")
    train = tmp_path / "train"
    shutil.copytree(image_folders["train"], train)
    broken = train / "red" / "9-broken.png"
    broken.write_bytes((train / "red" / "0.png").read_bytes()[:60])  # the header survives, the data is cut off
    dataset = load_image_folder(train, "image", "label")
    row = dataset["image"].index({"path": str(broken), "bytes": None})
    with pytest.raises(HubtuneError, match=rf"row {row + 1}: image '{broken}' cannot be decoded"):
        check_images(dataset, "image", lambda position: f"row {position + 1}", num_proc=2)


def test_one_unreadable_image_among_ten_thousand_is_one_line(tiny_vit, image_folders, tmp_path, capsys):
    """A large class-per-folder tree with one cut-off file: exit 2, one line naming it, nothing written."""
    from PIL import Image as PILImage

    from pipelines.commands.cli import main

    train = tmp_path / "train"
    for name, colour in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
        (train / name).mkdir(parents=True)
        for i in range(5000):
            PILImage.new("RGB", (4, 4), colour).save(train / name / f"{i:04d}.png")
    broken = train / "blue" / "2718.png"
    broken.write_bytes(broken.read_bytes()[:40])
    values = image_recipe(tiny_vit, {"train": str(train)}, tmp_path / "run")
    values["data"].update(validation_split=None, test_split=None, preprocessing_num_workers=2)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(values))
    assert main(["train", str(recipe)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("hubtune: error: data file") and f"image '{broken}' cannot be decoded" in lines[-1]
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def oversized_png(tmp_path_factory) -> Path:
    """A real PNG over PIL's decompression-bomb limit (2 x Image.MAX_IMAGE_PIXELS): 180 million one-bit pixels,
    22 kB on disk."""
    path = tmp_path_factory.mktemp("oversized") / "huge.png"
    assert 20000 * 9000 > 2 * Image.MAX_IMAGE_PIXELS
    Image.new("1", (20000, 9000)).save(path)
    return path


def test_image_over_the_pixel_limit_is_one_line_in_training_and_predict(
    tiny_vit, image_folders, vit_run, oversized_png, tmp_path, capsys
):
    import shutil

    from pipelines.commands.cli import main

    train = Path(shutil.copytree(image_folders["train"], tmp_path / "train"))
    huge = Path(shutil.copy(oversized_png, train / "green" / "huge.png"))
    values = image_recipe(tiny_vit, {**image_folders, "train": str(train)}, tmp_path / "run")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(values))
    limit = f"more than the {2 * Image.MAX_IMAGE_PIXELS:,} that PIL decodes"
    assert main(["train", str(recipe)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"hubtune: error: data file '{train}', row ")
    assert f"image '{huge}' has 180,000,000 pixels, {limit}" in last and "resize it" in last
    assert not (tmp_path / "run").exists()

    run_dir, _ = vit_run
    assert main(["predict", str(run_dir), str(huge)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"hubtune: error: predict: image '{huge}' has 180,000,000 pixels, {limit}")


def test_image_between_the_pixel_limits_is_used_with_a_warning_naming_it(
    vit_run, image_folders, tiny_vit, tmp_path, monkeypatch, caplog, capsys
):
    """PIL only warns between Image.MAX_IMAGE_PIXELS and twice that: hubtune uses such an image and names it once in
    a warning. The limit is lowered so that a 40x40 image falls in between (the others are 32x32)."""
    import shutil

    from pipelines.commands.cli import main

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 32 * 32)
    train = Path(shutil.copytree(image_folders["train"], tmp_path / "train"))
    large = train / "red" / "large.png"
    Image.new("RGB", (40, 40), COLOURS["red"]).save(large)
    run_dir, _ = vit_run
    with caplog.at_level("WARNING"):
        assert main(["predict", str(run_dir), str(large)]) == 0
    assert capsys.readouterr().out.startswith("red\t")
    assert f"predict: image '{large}' has 1,600 pixels, more than PIL.Image.MAX_IMAGE_PIXELS (1,024)" in caplog.text
    caplog.clear()
    values = image_recipe(tiny_vit, {"train": str(train)}, tmp_path / "run", num_train_epochs=1)
    values["data"].update(validation_split=None, test_split=None)
    with caplog.at_level("WARNING"):
        Recipe.from_dict(values).run()
    warned = [r.getMessage() for r in caplog.records if "MAX_IMAGE_PIXELS" in r.getMessage()]
    assert len(warned) == 1 and f"image '{large}' has 1,600 pixels" in warned[0]
    assert warned[0].startswith(f"data file '{train}', row ")


def test_export_of_a_run_whose_data_is_gone_is_checked_on_made_up_inputs(vit_run, tmp_path):
    assert_export_checked_on_made_up_inputs(vit_run[0], tmp_path)


def test_feature_cache_on_a_timm_model_is_one_line_before_anything_is_written(tiny_timm, image_folders, tmp_path):
    """timm's network, wrapped by transformers, is called through forward_features with an `x`: the cache cannot
    read or stand in for it, so the recipe stops at the model build, naming the key."""
    values = image_recipe(tiny_timm, image_folders, tmp_path / "run")
    values["adapt"] = {"strategy": "freeze_backbone", "feature_cache": True, "feature_cache_dir": str(tmp_path / "c")}
    with pytest.raises(HubtuneError, match=r"'adapt.feature_cache' reads the outputs of a transformers base model"):
        Recipe.from_dict(values).run()
    assert not (tmp_path / "run").exists() and not (tmp_path / "c").exists()
