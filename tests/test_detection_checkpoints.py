"""Detection checkpoints in the Hub's own format (DETR, Conditional DETR, YOLOS, RT-DETR), built here from tiny
configs, saved with their image processors and loaded by path: each fine-tunes on other classes than its own,
saves, reloads and evaluates to the same score; a checkpoint whose classes are renamed gets every class-sized
tensor drawn anew (RT-DETR has three: the decoder's class_embed, the encoder's score head, the denoising class
embedding) and keeps all the rest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.detection import TINY_DETR_SIZES, draw_set, write_coco
from safetensors.torch import load_file
from transformers import (
    ConditionalDetrConfig,
    ConditionalDetrForObjectDetection,
    ConditionalDetrImageProcessor,
    DetrConfig,
    DetrForObjectDetection,
    DetrImageProcessor,
    RTDetrConfig,
    RTDetrForObjectDetection,
    RTDetrImageProcessor,
    YolosConfig,
    YolosForObjectDetection,
    YolosImageProcessor,
)

from pipelines import Recipe
from pipelines.serving.predictor import Predictor

# Trains models for seconds each: `make test-fast` leaves this module out.
pytestmark = pytest.mark.slow

RESNET = {"model_type": "resnet", "embedding_size": 8, "hidden_sizes": [8, 16, 32, 64], "depths": [1, 1, 1, 1]}
SQUARE_SIDE = {"shortest_edge": 64, "longest_edge": 64}


def _detr_on_resnet(config_class, model_class, processor_class):
    """DETR or Conditional DETR on a tiny transformers ResNet (no timm weights to fetch)."""

    def build(labels: dict[int, str]):
        backbone = {**RESNET, "out_features": ["stage4"]}
        config = config_class(use_timm_backbone=False, backbone_config=backbone, id2label=labels, **TINY_DETR_SIZES)
        return model_class(config), processor_class(size=SQUARE_SIDE)

    return build


def _yolos(labels: dict[int, str]):
    config = YolosConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=[64, 64],
        patch_size=16,
        num_detection_tokens=5,
        id2label=labels,
    )
    return YolosForObjectDetection(config), YolosImageProcessor(size=SQUARE_SIDE)


def _rt_detr(labels: dict[int, str]):
    config = RTDetrConfig(
        backbone_config={**RESNET, "model_type": "rt_detr_resnet", "out_features": ["stage2", "stage3", "stage4"]},
        encoder_in_channels=[16, 32, 64],
        d_model=32,
        encoder_hidden_dim=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        decoder_in_channels=[32, 32, 32],
        num_queries=10,
        id2label=labels,
    )
    return RTDetrForObjectDetection(config), RTDetrImageProcessor(size={"height": 64, "width": 64})


FAMILIES = {
    "detr": _detr_on_resnet(DetrConfig, DetrForObjectDetection, DetrImageProcessor),
    "conditional_detr": _detr_on_resnet(
        ConditionalDetrConfig, ConditionalDetrForObjectDetection, ConditionalDetrImageProcessor
    ),
    "yolos": _yolos,
    "rt_detr": _rt_detr,
}


def _checkpoint(family: str, labels: dict[int, str], folder: Path) -> Path:
    torch.manual_seed(0)
    model, processor = FAMILIES[family](labels)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def squares_coco(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("squares")
    return {
        split: str(write_coco(draw_set(root / split, n, seed), root / f"{split}.json"))
        for split, n, seed in (("train", 16, 0), ("test", 8, 2))
    }


def _values(checkpoint: Path, files: dict[str, str], output_dir: Path, steps: int, learning_rate: float) -> dict:
    return {
        "name": "hub-format-detector",
        "task": "object-detection",
        "output_dir": str(output_dir),
        "model": {"checkpoint": str(checkpoint)},
        "data": {
            "files": files,
            "validation_split": None,
            "test_split": "test" if "test" in files else None,
            "image_size": 64,
            "image_augment": True,
        },
        "training": {
            "max_steps": steps,
            "learning_rate": learning_rate,
            "per_device_train_batch_size": 4,
            "per_device_eval_batch_size": 4,
            "eval_strategy": "no",
            "save_strategy": "no",
            "disable_tqdm": True,
        },
    }


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_hub_format_detector_fine_tunes_on_other_classes_and_reloads(family, squares_coco, tmp_path):
    checkpoint = _checkpoint(family, {0: "cat", 1: "dog", 2: "bird"}, tmp_path / "checkpoint")
    run_dir = tmp_path / "run"
    results = Recipe.from_dict(_values(checkpoint, squares_coco, run_dir, steps=4, learning_rate=1e-4)).run()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["id2label"] == {"0": "red", "1": "blue"} and config["model_type"] == family
    run = Predictor(run_dir)
    # The saved run scores the test set as the trained model did, and predicts with its processor.
    assert run.evaluate("test")["test_map"] == pytest.approx(results["test_map"], abs=1e-6)
    listed = Path(squares_coco["test"])
    records = run.predict([str(listed.parent / json.loads(listed.read_text())["images"][0]["file_name"])])
    assert len(records) == 1 and all(box["label"] in ("red", "blue") for box in records[0]["boxes"])


def test_renamed_classes_redraw_every_class_sized_tensor_of_rt_detr(squares_coco, tmp_path):
    checkpoint = _checkpoint("rt_detr", {0: "cat", 1: "dog"}, tmp_path / "checkpoint")  # two classes, as the data
    Recipe.from_dict(_values(checkpoint, {"train": squares_coco["train"]}, tmp_path / "run", 1, 1e-12)).run()
    before = load_file(checkpoint / "model.safetensors")
    after = load_file(tmp_path / "run" / "model.safetensors")
    class_sized = {
        "model.enc_score_head.weight",
        "model.denoising_class_embed.weight",
        "model.decoder.class_embed.0.weight",
        "model.decoder.class_embed.1.weight",
    }
    assert all(not torch.allclose(before[key], after[key]) for key in class_sized)
    # One step at LR 1e-12 moves nothing else; BatchNorm statistics do move in a training step.
    kept = [key for key in before if key not in class_sized and "running_" not in key and "batches" not in key]
    changed = [key for key in kept if key.endswith("weight") and not torch.allclose(before[key], after[key], atol=1e-6)]
    assert kept and not changed


def _groups(run_dir: Path) -> dict[str, dict]:
    return {row["group"]: row for row in json.loads((run_dir / "parameters.json").read_text())}


def test_freeze_backbone_trains_only_rt_detrs_class_heads_inside_its_base_model(squares_coco, tmp_path):
    # RT-DETR keeps its class heads inside the base model (model.decoder.class_embed, model.enc_score_head,
    # model.denoising_class_embed): they are the `head` group by their class-sized shapes, so feature extraction
    # trains them, and only them.
    checkpoint = _checkpoint("rt_detr", {0: "cat", 1: "dog", 2: "bird"}, tmp_path / "checkpoint")
    run_dir = tmp_path / "run"
    values = _values(checkpoint, {"train": squares_coco["train"]}, run_dir, steps=3, learning_rate=1e-2)
    values["adapt"] = {"strategy": "freeze_backbone"}
    Recipe.from_dict(values).run()
    groups = _groups(run_dir)
    assert groups["head"]["trainable"] == groups["head"]["total"] > 0
    assert all(row["trainable"] == 0 for name, row in groups.items() if name != "head")
    before, after = load_file(checkpoint / "model.safetensors"), load_file(run_dir / "model.safetensors")
    class_sized = {key for key in after if before[key].shape != after[key].shape}
    assert {key.rsplit(".", 1)[0] for key in class_sized} == {
        "model.decoder.class_embed.0",
        "model.decoder.class_embed.1",
        "model.enc_score_head",
        "model.denoising_class_embed",
    }
    # BatchNorm statistics move in a training step even when frozen; every weight outside the head stays.
    frozen = [key for key in before if key not in class_sized and "running_" not in key and "batches" not in key]
    assert frozen and all(torch.equal(before[key], after[key]) for key in frozen)


def test_lora_on_rt_detr_trains_and_saves_its_new_class_heads(squares_coco, tmp_path):
    checkpoint = _checkpoint("rt_detr", {0: "cat", 1: "dog", 2: "bird"}, tmp_path / "checkpoint")
    run_dir = tmp_path / "run"
    values = _values(checkpoint, squares_coco, run_dir, steps=3, learning_rate=1e-2)
    values["adapt"] = {"strategy": "peft", "peft": {"method": "lora", "target_modules": ["q_proj", "v_proj"]}}
    results = Recipe.from_dict(values).run()
    groups = _groups(run_dir)
    # PEFT trains a copy of each head module (`modules_to_save`) beside the frozen original.
    assert 2 * groups["head"]["trainable"] == groups["head"]["total"] > 0
    assert sum(row["trainable"] for name, row in groups.items() if name != "head") > 0  # the LoRA matrices
    # The run folder keeps the trained heads with the adapter: reloaded, it scores the test set the same.
    assert Predictor(run_dir).evaluate("test")["test_map"] == pytest.approx(results["test_map"], abs=1e-6)
