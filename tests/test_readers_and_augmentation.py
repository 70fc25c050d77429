"""Every table format reads the same rows; image augmentation is random in training and fixed at evaluation."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from pipelines.data.splits import load_table_file

ROWS = [
    {"text": "the film was good, really", "label": "positive"},
    {"text": 'awful "plot"\tand dull', "label": "negative"},
    {"text": "lovely cast", "label": "positive"},
]


def write_table(path: Path) -> Path:
    frame = pd.DataFrame(ROWS)
    suffix = path.suffix
    if suffix in (".csv", ".tsv"):
        frame.to_csv(path, sep="\t" if suffix == ".tsv" else ",", index=False)
    elif suffix == ".json":
        path.write_text(json.dumps(ROWS))
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    else:
        frame.to_parquet(path)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".json", ".jsonl", ".parquet"])
def test_each_table_format_reads_the_same_rows(tmp_path, suffix):
    dataset = load_table_file(write_table(tmp_path / f"train{suffix}"))
    assert dataset.column_names == ["text", "label"]
    assert dataset.to_list() == ROWS


def test_tsv_keeps_commas_inside_fields(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("text\tlabel\nslow, then wonderful\tpositive\n")
    assert load_table_file(path).to_list() == [{"text": "slow, then wonderful", "label": "positive"}]


def photo(seed: int) -> Image.Image:
    rng = random.Random(seed)
    image = Image.new("RGB", (48, 40))
    image.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(48 * 40)])
    return image


def vit_processor():
    from transformers import ViTImageProcessor

    return ViTImageProcessor(size={"height": 32, "width": 32})


def timm_processor():
    import timm
    from transformers import TimmWrapperImageProcessor

    model = timm.create_model("test_resnet", num_classes=3)
    return TimmWrapperImageProcessor(pretrained_cfg={**model.pretrained_cfg, "input_size": [3, 32, 32]})


@pytest.mark.parametrize("make_processor", [vit_processor, timm_processor], ids=["transformers", "timm"])
def test_augmentation_is_random_in_training_and_deterministic_at_evaluation(make_processor):
    from pipelines.data.pixels import pixel_transform

    processor = make_processor()
    images = [photo(0), photo(1)]
    evaluation = pixel_transform(processor, train=False)
    first, second = evaluation(images), evaluation(images)
    assert first.shape == (2, 3, 32, 32) and torch.equal(first, second)
    train = pixel_transform(processor, train=True)
    torch.manual_seed(0)
    draws = [train(images) for _ in range(4)]
    assert all(draw.shape == (2, 3, 32, 32) for draw in draws)
    assert not all(torch.equal(draws[0], draw) for draw in draws[1:])
    assert not torch.equal(draws[0], first)
