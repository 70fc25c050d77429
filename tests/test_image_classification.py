"""Image classification end to end: a tiny transformers ViT and a tiny timm ResNet, on images written here.

The classes are colours (learnable at 32x32 in a few epochs, and unchanged by crop, flip and colour jitter).
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines import HubtuneError, Recipe
from pipelines.inference import RunModel

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (220, 220, 30),
           "cyan": (30, 210, 210), "magenta": (210, 30, 210)}
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
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    folder = tmp_path_factory.mktemp("tiny-vit")
    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64)
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def save_timm_checkpoint(model: torch.nn.Module, folder: Path, input_size: int) -> Path:
    """A timm model as the Hub stores it (timm's config.json + model.safetensors), at a small input size."""
    from timm.models import save_for_hf

    save_for_hf(model, folder)
    config = json.loads((folder / "config.json").read_text())
    config["pretrained_cfg"].update(input_size=[3, input_size, input_size], crop_pct=1.0)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def tiny_timm(tmp_path_factory) -> Path:
    import timm

    torch.manual_seed(0)
    return save_timm_checkpoint(timm.create_model("test_resnet", num_classes=10),
                                tmp_path_factory.mktemp("tiny-timm"), 32)


def image_recipe(checkpoint: Path, files: dict[str, str], output_dir: Path, **training) -> dict:
    return {
        "name": "tiny-colours",
        "task": "image-classification",
        "output_dir": str(output_dir),
        "model": {"checkpoint": str(checkpoint)},
        "data": {"files": dict(files)},
        "training": {"num_train_epochs": 6, "learning_rate": 3e-3, "per_device_train_batch_size": 8,
                     "per_device_eval_batch_size": 32, "logging_steps": 5, "save_strategy": "no",
                     "disable_tqdm": True, **training},
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
    run = RunModel(run_dir)
    assert run.task.label_names == sorted(COLOURS)
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
            writer.writerow([str(Path("..") / image.relative_to(Path(folder).parents[1])), image.parent.name])
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
