"""Semantic segmentation end to end: a small UperNet on a tiny timm EfficientNet, on shapes drawn here.

Images are 64x64 noise with a red disc and a blue square (classes 1 and 2, background 0) at random places, masks
drawn from the same shapes: learnable in a few seconds, and every pixel's class is known.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers.runs import assert_export_checked_on_made_up_inputs
from PIL import Image
from transformers import TrainerCallback

from pipelines import HubtuneError, Recipe
from pipelines.commands.cli import main
from pipelines.data.masks import paired_augmentation
from pipelines.data.splits import Splits
from pipelines.metrics import load_metric
from pipelines.serving.predictor import Predictor
from pipelines.tasks.semantic_segmentation import SemanticSegmentation

# Trains models for seconds each: `make test-fast` leaves this module out.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["background", "disc", "square"]
SIDE = 64
SIZES = {"train": 48, "validation": 16, "test": 16}


def shapes_example(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:SIDE, :SIDE]
    image = rng.integers(90, 140, (SIDE, SIDE, 3))
    mask = np.zeros((SIDE, SIDE), np.uint8)
    for label in rng.permutation([1, 2]):
        radius = rng.integers(8, 16)
        cy, cx = rng.integers(radius, SIDE - radius, 2)
        if label == 1:
            inside, colour = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2, (220, 60, 60)
        else:
            inside, colour = (abs(yy - cy) <= radius) & (abs(xx - cx) <= radius), (60, 60, 220)
        image[inside] = np.array(colour) + rng.integers(-20, 20, 3)
        mask[inside] = label
    return image.clip(0, 255).astype(np.uint8), mask


def write_shapes(root: Path, seed: int = 0) -> dict[str, str]:
    """`<split>/images/<id>.png` + `<split>/masks/<id>.png` folders."""
    rng = np.random.default_rng(seed)
    files = {}
    for split, n in SIZES.items():
        for sub in ("images", "masks"):
            (root / split / sub).mkdir(parents=True)
        for i in range(n):
            image, mask = shapes_example(rng)
            Image.fromarray(image).save(root / split / "images" / f"{i:03d}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"{i:03d}.png")
        files[split] = str(root / split)
    return files


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> dict[str, str]:
    return write_shapes(tmp_path_factory.mktemp("shapes"))


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> Path:
    """A timm checkpoint folder (config.json + model.safetensors) of timm's tiny test EfficientNet."""
    import timm

    folder = tmp_path_factory.mktemp("backbone") / "test_efficientnet"
    torch.manual_seed(0)
    timm.models.save_for_hf(timm.create_model("test_efficientnet"), str(folder), safe_serialization=True)
    return folder


def seg_values(backbone: Path, files: dict[str, str], output_dir: Path) -> dict:
    return {
        "name": "shapes-upernet",
        "task": "semantic-segmentation",
        "output_dir": str(output_dir),
        "model": {
            "checkpoint": str(backbone),
            "architecture": "upernet",
            "config_overrides": {"hidden_size": 32, "use_auxiliary_head": False, "pool_scales": [1, 2]},
        },
        "data": {"files": dict(files), "labels": list(LABELS), "image_size": SIDE},
        "training": {
            "num_train_epochs": 8,
            "learning_rate": 3e-3,
            "per_device_train_batch_size": 8,
            "logging_steps": 6,
            "save_strategy": "no",
            "disable_tqdm": True,
        },
    }


class KeepModel(TrainerCallback):
    model = None

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.model = model


@pytest.fixture(scope="module")
def seg_run(backbone, shapes, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("seg-run") / "run"
    keep = KeepModel()
    results = Recipe.from_dict(seg_values(backbone, shapes, run_dir)).run(callbacks=[keep])
    return run_dir, results, keep.model


def test_upernet_learns_shapes_and_reloads_with_identical_masks(seg_run, shapes):
    run_dir, results, trained = seg_run
    assert results["test_mean_iou"] >= 0.6, results
    assert results["test_iou_disc"] >= 0.4 and results["test_iou_square"] >= 0.4, results
    assert results["test_overall_accuracy"] >= 0.9
    run = Predictor(run_dir)
    assert run.label_names == LABELS
    images = [Image.open(p).convert("RGB") for p in sorted(Path(shapes["test"], "images").glob("*.png"))[:6]]
    reloaded = run.serving.class_maps(images)
    original = run.task.serving(run.task, trained.eval(), run.processor).class_maps(images)
    for ours, theirs in zip(reloaded, original):
        assert ours.shape == (SIDE, SIDE)
        np.testing.assert_array_equal(ours, theirs)
    # `hubtune evaluate` scores the reloaded run as training scored the trained one.
    assert run.evaluate("test")["test_mean_iou"] == pytest.approx(results["test_mean_iou"], abs=1e-6)


def test_predict_prints_json_and_draws_mask_and_overlay(seg_run, shapes, tmp_path, capsys):
    run_dir, _, _ = seg_run
    images = sorted(Path(shapes["test"], "images").glob("*.png"))[:2]
    draw_dir = tmp_path / "drawn"
    assert main(["predict", str(run_dir), *map(str, images), "--draw", str(draw_dir)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["input"] for r in records] == [str(p) for p in images]
    for record, image in zip(records, images):
        assert (record["width"], record["height"]) == (SIDE, SIDE)
        assert set(record["fractions"]) == set(LABELS)
        assert sum(record["fractions"].values()) == pytest.approx(1.0)
        mask = Image.open(draw_dir / f"{image.stem}_mask.png")
        assert mask.mode == "L" and mask.size == (SIDE, SIDE)
        ids = np.array(mask)
        assert set(np.unique(ids)) <= {0, 1, 2}
        drawn = {name: float((ids == i).mean()) for i, name in enumerate(LABELS)}
        assert drawn == pytest.approx(record["fractions"])
        truth = np.array(Image.open(Path(shapes["test"]) / "masks" / image.name))
        assert (ids == truth).mean() >= 0.85  # the drawn mask is the prediction, in the image's own frame
        overlay = Image.open(draw_dir / f"{image.stem}_overlay.png")
        assert overlay.mode == "RGB" and overlay.size == (SIDE, SIDE)
        picture = np.array(Image.open(image).convert("RGB"))
        painted = np.array(overlay) != picture
        assert painted.any(axis=-1)[ids > 0].mean() > 0.9 and not painted[ids == 0].any()
    before = (draw_dir / f"{images[0].stem}_mask.png").stat().st_mtime_ns
    assert main(["predict", str(run_dir), str(images[0]), "--draw", str(draw_dir)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "already exists" in error[0] and "--overwrite" in error[0]
    assert (draw_dir / f"{images[0].stem}_mask.png").stat().st_mtime_ns == before
    assert main(["predict", str(run_dir), str(images[0]), "--draw", str(draw_dir), "--overwrite"]) == 0


def test_predict_data_reads_the_image_column(seg_run, shapes, tmp_path):
    run_dir, _, _ = seg_run
    output = tmp_path / "predictions.jsonl"
    assert main(["predict", str(run_dir), "--data", shapes["test"], "--output", str(output)]) == 0
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(rows) == SIZES["test"] and rows[0]["row"] == 1
    assert rows[0]["input"].endswith("000.png") and set(rows[0]["fractions"]) == set(LABELS)


def test_export_transformers_and_onnx_give_the_run_masks(seg_run, shapes, tmp_path, capsys):
    import onnxruntime

    from pipelines.serving.export import export_run

    run_dir, _, _ = seg_run
    check = export_run(run_dir, tmp_path / "export", merge=False)
    assert check["max_abs_logit_difference"] <= 1e-5 and check["probe_examples"] == 8
    assert (tmp_path / "export" / "preprocessor_config.json").is_file()
    out = tmp_path / "onnx"
    assert main(["export", str(run_dir), str(out), "--format", "onnx"]) == 0
    check = json.loads((out / "export_check.json").read_text())
    assert check["max_abs_logit_difference"] < 1e-4
    assert [shape["pixel_values"][0] for shape in check["checked_shapes"]] == [8, 4]
    # Served by onnxruntime alone: the graph's class maps are the run's.
    run = Predictor(run_dir)
    images = [Image.open(p).convert("RGB") for p in sorted(Path(shapes["test"], "images").glob("*.png"))[:3]]
    pixels = run.processor(images=images, return_tensors="np")["pixel_values"]
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    graph_maps = session.run(["logits"], {"pixel_values": pixels})[0].argmax(axis=1)
    for graph_map, run_map in zip(graph_maps, run.serving.class_maps(images)):
        assert (graph_map == run_map).mean() > 0.999


@pytest.fixture(scope="module")
def tiny_segformer(tmp_path_factory) -> Path:
    """A complete SegFormer checkpoint (hidden sizes 8-64) with a 5-class head and an ADE20k-style processor
    (32x32, do_reduce_labels), saved as a folder."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    folder = tmp_path_factory.mktemp("segformer")
    config = SegformerConfig(
        depths=[1, 1, 1, 1],
        hidden_sizes=[8, 16, 32, 64],
        num_attention_heads=[1, 1, 2, 2],
        decoder_hidden_size=32,
        id2label={i: f"thing{i}" for i in range(5)},
        label2id={f"thing{i}": i for i in range(5)},
    )
    torch.manual_seed(0)
    SegformerForSemanticSegmentation(config).save_pretrained(folder)
    SegformerImageProcessor(size={"height": 32, "width": 32}, do_reduce_labels=True).save_pretrained(folder)
    return folder


def test_complete_segformer_checkpoint_gets_a_new_head_and_quarter_size_logits_are_scored(
    tiny_segformer, shapes, tmp_path
):
    values = seg_values(tiny_segformer, shapes, tmp_path / "run")
    values["model"] = {"checkpoint": str(tiny_segformer)}
    results = Recipe.from_dict(values).run()
    run = Predictor(tmp_path / "run")
    assert run.label_names == LABELS and run.model.config.semantic_loss_ignore_index == 255
    # Mask value i is class i here: the checkpoint's label reduction is off, and the recipe's size replaces its 32.
    assert run.processor.do_reduce_labels is False and run.processor.size["height"] == SIDE
    # SegFormer's logits come at a quarter of the input side; the metric upsamples them to the 64x64 labels.
    assert results["test_mean_iou"] >= 0.5, results
    image = Image.open(Path(shapes["test"], "images", "000.png")).convert("RGB")
    (class_map,) = run.serving.class_maps([image])
    assert class_map.shape == (SIDE, SIDE)


def test_compare_runs_pretrained_and_scratch_backbones(backbone, shapes, tmp_path):
    from pipelines.runner.compare import compare

    values = seg_values(backbone, shapes, tmp_path / "unused")
    values["training"]["num_train_epochs"] = 2
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(values))
    report = compare(recipe, out_dir=tmp_path / "compare")
    assert report.metric == "test_mean_iou"
    assert [row["init"] for row in report.rows] == ["pretrained", "scratch"]
    assert all(0.0 <= row["test_mean_iou"] <= 1.0 for row in report.rows)
    assert not any("label set" in warning for warning in report.warnings)
    pretrained, scratch = (Predictor(row["run"]).model for row in report.rows)
    # Same architecture, other backbone weights: only the init differs.
    assert type(pretrained) is type(scratch) and pretrained.config.hidden_size == scratch.config.hidden_size == 32
    stem = "backbone._backbone.conv_stem.weight"
    assert not torch.equal(pretrained.state_dict()[stem], scratch.state_dict()[stem])


def encoded(task: SemanticSegmentation, dataset, processor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each example of `dataset` preprocessed as the test split is (no augmentation)."""
    prepared = task.prepare(Splits({"test": dataset}, {"test": "data"}), processor)
    return [(row["pixel_values"], row["labels"]) for row in prepared["test"]]


def test_table_and_embedded_datasets_read_the_folder_examples(backbone, shapes, tmp_path):
    from datasets import Dataset, Features
    from datasets import Image as ImageFeature

    config = Recipe.from_dict(seg_values(backbone, shapes, tmp_path / "unused")).config
    task = SemanticSegmentation(config)
    processor = task.load_processor()
    folder = task.load_data_file(Path(shapes["test"]))
    # A jsonl table of paths relative to it, in another order.
    table = tmp_path / "test.jsonl"
    stems = [Path(value["path"]).stem for value in folder["image"]][::-1]
    rows = [
        {
            "image": f"{shapes['test']}/images/{s}.png",
            "mask": os.path.relpath(f"{shapes['test']}/masks/{s}.png", tmp_path),
        }
        for s in stems
    ]
    table.write_text("".join(json.dumps(row) + "\n" for row in rows))
    from_table = task.load_data_file(table)
    # A Hub-style dataset: Image features holding the files' bytes, no paths.
    features = Features({"image": ImageFeature(), "mask": ImageFeature()})
    embedded = Dataset.from_dict(
        {
            column: [{"bytes": Path(v["path"]).read_bytes(), "path": None} for v in folder[column]]
            for column in ("image", "mask")
        },
        features=features,
    )
    expected = encoded(task, folder, processor)
    assert len(expected) == SIZES["test"]
    for other in (encoded(task, from_table, processor)[::-1], encoded(task, embedded, processor)):
        for (pixels, labels), (their_pixels, their_labels) in zip(expected, other, strict=True):
            torch.testing.assert_close(pixels, their_pixels)
            torch.testing.assert_close(labels, their_labels)
    labels = expected[0][1]
    assert labels.shape == (SIDE, SIDE) and labels.dtype == torch.int64


def test_class_in_no_training_mask_is_warned(backbone, tmp_path):
    files = write_shapes(tmp_path / "data", seed=1)
    # Squares marked 255 (as a 0/255 mask would mark its foreground): that is data.ignore_index, not class 2.
    for path in Path(files["train"], "masks").glob("*.png"):
        mask = np.array(Image.open(path))
        mask[mask == 2] = 255
        Image.fromarray(mask).save(path)
    config = Recipe.from_dict(seg_values(backbone, files, tmp_path / "run")).config
    task = SemanticSegmentation(config)
    source, processor = f"data file '{files['train']}'", task.load_processor()
    train = task.load_data_file(Path(files["train"]))
    prepared = task.prepare(Splits({"train": train}, {"train": source}), processor)
    assert len(prepared.warnings) == 1
    assert "1 of 3 classes have no training example" in prepared.warnings[0] and "square" in prepared.warnings[0]
    labels = task.prepare(Splits({"test": train}, {"test": source}), processor)["test"][0]["labels"]
    assert set(labels.unique().tolist()) == {0, 1, 255}  # kept as ignore_index: left out of loss and metrics


def test_paired_augmentation_moves_mask_with_image():
    rng = np.random.default_rng(3)
    _, mask = shapes_example(rng)
    # The image is the mask, drawn in grey levels: after the transform they must still agree pixel for pixel.
    image = Image.fromarray(np.repeat(mask[..., None] * 100, 3, axis=-1).astype(np.uint8))
    augment = paired_augmentation((48, 48))
    torch.manual_seed(0)
    outputs = [augment(image, mask) for _ in range(8)]
    for pixels, labels in outputs:
        assert pixels.shape == (3, 48, 48) and labels.shape == (48, 48)
        assert set(labels.unique().tolist()) <= {0, 1, 2}  # nearest neighbours: no blended class ids
        # Bilinear image edges blend over a pixel or so; everywhere else the image shows its mask's class.
        agree = (pixels[0].float() / 100).round() == labels
        assert agree.float().mean() >= 0.95
    assert len({labels.numpy().tobytes() for _, labels in outputs}) > 1  # random: the draws differ


def test_mean_iou_metric_ignores_pixels_and_absent_classes():
    metric = load_metric("mean_iou")
    reference = np.array([[0, 0, 1, 1], [0, 0, 1, 255]])
    prediction = np.array([[0, 1, 1, 1], [0, 0, 1, 2]])  # the 2 lies on an ignored pixel
    result = metric.compute(
        predictions=[prediction], references=[reference], num_labels=4, ignore_index=255, label_names=list("abcd")
    )
    # class a: 3 of its 4 pixels right, 1 wrong -> IoU 3/4; class b: 3 right + 1 false positive -> 3/4.
    assert result["iou_a"] == pytest.approx(0.75) and result["iou_b"] == pytest.approx(0.75)
    assert result["accuracy_a"] == pytest.approx(0.75) and result["accuracy_b"] == pytest.approx(1.0)
    # c and d occur nowhere (the 2 was ignored): no IoU, and no part of the mean.
    assert np.isnan(result["iou_c"]) and np.isnan(result["iou_d"])
    assert result["mean_iou"] == pytest.approx(0.75)
    assert result["overall_accuracy"] == pytest.approx(6 / 7)
    assert result["mean_accuracy"] == pytest.approx(0.875)


# Each bad-input case breaks a copy of the shapes data and returns the substrings its one error line must hold.
def mask_value_out_of_range(root: Path) -> list[str]:
    path = root / "validation" / "masks" / "003.png"
    mask = np.array(Image.open(path))
    mask[5, 5] = 7
    Image.fromarray(mask).save(path)
    return [str(path), "value 7", "data.labels", "data.ignore_index"]


def image_without_mask(root: Path) -> list[str]:
    (root / "train" / "masks" / "010.png").unlink()
    return [str(root / "train" / "images" / "010.png"), "no mask"]


def mask_without_image(root: Path) -> list[str]:
    (root / "test" / "images" / "004.png").unlink()
    return [str(root / "test" / "masks" / "004.png"), "no image"]


def sizes_differ(root: Path) -> list[str]:
    path = root / "test" / "masks" / "002.png"
    Image.open(path).resize((SIDE, SIDE // 2)).save(path)
    return [str(path), "64x32", "64x64"]


def unreadable_image(root: Path) -> list[str]:
    path = root / "train" / "images" / "005.png"
    path.write_bytes(path.read_bytes()[:60])
    return [str(path), "cannot be decoded"]


def unreadable_mask(root: Path) -> list[str]:
    path = root / "validation" / "masks" / "001.png"
    path.write_bytes(b"not a png at all")
    return [str(path), "cannot be decoded"]


def image_over_the_pixel_limit(root: Path) -> list[str]:
    path = root / "train" / "images" / "005.png"
    Image.new("1", (20000, 9000)).save(path)  # 180 million pixels, over PIL's 2 x MAX_IMAGE_PIXELS
    return [str(path), "has 180,000,000 pixels", "decompression bombs"]


def colour_mask(root: Path) -> list[str]:
    path = root / "train" / "masks" / "007.png"
    Image.open(path).convert("RGB").save(path)
    return [str(path), "mode RGB"]


@pytest.mark.parametrize(
    "case",
    [
        mask_value_out_of_range,
        image_without_mask,
        mask_without_image,
        sizes_differ,
        unreadable_image,
        unreadable_mask,
        colour_mask,
        image_over_the_pixel_limit,
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(case, backbone, tmp_path, capsys):
    files = write_shapes(tmp_path / "data", seed=1)
    expected = case(tmp_path / "data")
    values = seg_values(backbone, files, tmp_path / "run")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(values))
    assert main(["train", str(recipe)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hubtune: error:"), lines
    for part in expected:
        assert part in lines[0], (part, lines[0])
    assert not (tmp_path / "run").exists()


def test_mask_check_in_two_processes_names_the_file(backbone, tmp_path, capsys):
    files = write_shapes(tmp_path / "data", seed=1)
    expected = mask_value_out_of_range(tmp_path / "data")
    values = seg_values(backbone, files, tmp_path / "run")
    values["data"]["preprocessing_num_workers"] = 2
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(values))
    assert main(["train", str(recipe)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and all(part in lines[0] for part in expected), lines
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("section", "change", "expected"),
    [
        ("data", {"labels": None}, "'data.labels' is required"),
        ("data", {"labels": ["background"]}, "at least two"),
        ("data", {"ignore_index": 1}, "'data.ignore_index' is 1, the mask value of class 'disc'"),
        ("data", {"ignore_index": 300}, "0..255"),
        ("adapt", {"strategy": "peft"}, "'adapt.strategy: peft' saves an adapter over 'model.checkpoint'"),
        ("adapt", {"strategy": "freeze_backbone", "feature_cache": True}, "'adapt.feature_cache' stores one backbone"),
    ],
)
def test_recipe_key_errors_name_the_key(section, change, expected, backbone, shapes, tmp_path):
    values = seg_values(backbone, shapes, tmp_path / "run")
    values.setdefault(section, {}).update(change)
    with pytest.raises(HubtuneError, match=re.escape(expected)):
        Recipe.from_dict(values)


def test_a_last_batch_of_one_is_dropped_for_upernet_and_the_run_trains_to_the_end(backbone, shapes, tmp_path, caplog):
    """21 training tiles at batch 10: UperNet's pooled branch has a BatchNorm over one value per channel for one
    image, so the last batch of one stopped the run mid-way ("Expected more than 1 value per channel")."""
    values = seg_values(backbone, shapes, tmp_path / "run")
    values["data"]["max_train_samples"] = 21
    values["training"].update(per_device_train_batch_size=10, num_train_epochs=2)
    results = Recipe.from_dict(values).run()
    assert (
        "21 training examples in batches of 10 leave a last batch of one, on which UperNetForSemanticSegmentation's "
        "BatchNorm layer 'decode_head.psp_modules.0.1.batch_norm' cannot train" in caplog.text
    )
    assert results["train_samples"] == 21 and results["training_setup"]["steps_trained"] == 4  # 2 batches of 10
    assert (tmp_path / "run" / "all_results.json").is_file()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"data": {"max_train_samples": 1}},
            "capped by 'data.max_train_samples') holds 1 example, but UperNetForSemanticSegmentation's BatchNorm layer "
            "'decode_head.psp_modules.0.1.batch_norm' cannot train on a batch of one example",
        ),
        ({"training": {"per_device_train_batch_size": 1}}, "'training.per_device_train_batch_size' is 1, but UperNet"),
        (
            {
                "data": {"max_train_samples": 21},
                "training": {"per_device_train_batch_size": 10, "dataloader_drop_last": False},
            },
            "'training.dataloader_drop_last' is false, but 21 training examples in batches of 10 leave a last batch of one",
        ),
        (
            {"model": {"config_overrides": {"pool_scales": "wide"}}},
            "recipe key 'model.config_overrides' (pool_scales: 'wide') makes a model that transformers rejects: "
            "StrictDataclassFieldValidationError",
        ),
        (
            {"model": {"config_overrides": {"hidden_size": -1}}},
            "recipe key 'model.config_overrides' (hidden_size: -1) makes a model that transformers rejects: "
            "RuntimeError: Trying to create tensor with negative dimension -1",
        ),
    ],
    ids=["one-image", "batch-size-1", "drop-last-false", "config-override-type", "config-override-value"],
)
def test_what_upernet_cannot_train_on_is_one_line_before_anything_is_written(
    change, expected, backbone, shapes, tmp_path, capsys
):
    values = seg_values(backbone, shapes, tmp_path / "run")
    for section, keys in change.items():
        values[section].update(keys)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(values))
    assert main(["train", str(recipe)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hubtune: error:") and expected in lines[0], lines
    if "max_train_samples" in values["data"] and values["data"]["max_train_samples"] == 1:
        assert f"data file '{shapes['train']}' ('data.files.train'" in lines[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.distributed
def test_two_process_ddp_trains_and_evaluates(backbone, shapes, tmp_path):
    """`accelerate launch` of `hubtune train` on two CPU processes (gloo), then `hubtune evaluate` of its folder."""
    values = seg_values(backbone, shapes, tmp_path / "ddp-run")
    # Global batch 8 as in one process: 2 ranks x 4.
    values["training"] = dict(values["training"], per_device_train_batch_size=4)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(values))
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    accelerate = Path(sys.executable).with_name("accelerate")
    config = ROOT / "accelerate_configs" / "cpu_2proc.yaml"
    launched = subprocess.run(
        [str(accelerate), "launch", "--config_file", str(config), "-m", "pipelines", "train", str(recipe)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    results = json.loads((tmp_path / "ddp-run" / "all_results.json").read_text())
    assert results["test_samples"] == SIZES["test"]
    assert results["test_mean_iou"] >= 0.6, results
    evaluated = Predictor(tmp_path / "ddp-run").evaluate("test")
    assert evaluated["test_mean_iou"] == pytest.approx(results["test_mean_iou"], abs=1e-6)


def test_export_of_a_run_whose_data_is_gone_is_checked_on_made_up_inputs(seg_run, tmp_path):
    assert_export_checked_on_made_up_inputs(seg_run[0], tmp_path)
