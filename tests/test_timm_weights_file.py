"""A single timm weights file as the checkpoint, with its architecture named in the recipe."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file
from transformers import AutoImageProcessor, AutoModelForImageClassification

from pipelines import HubtuneError
from pipelines.config import ModelConfig
from pipelines.models.loading import from_pretrained, load_classifier


@pytest.fixture
def weights_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the laid-out folder goes under ~/.cache/hubtune
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False)
    path = tmp_path / "test_resnet.safetensors"
    save_file(model.state_dict(), str(path))
    return path, model


def test_weights_file_loads_through_the_timm_wrapper(weights_file):
    path, original = weights_file
    config = ModelConfig(checkpoint=str(path), timm_architecture="test_resnet")
    # Through the classifier loader the recipes use; the file's own 1,000-way head is kept at that size.
    model = load_classifier(
        AutoModelForImageClassification, config, [str(i) for i in range(1000)], "ForImageClassification"
    )
    for name, tensor in original.state_dict().items():
        assert torch.equal(model.timm_model.state_dict()[name], tensor), name
    processor = from_pretrained(AutoImageProcessor, config)
    assert hasattr(processor, "val_transforms")


def test_weights_file_without_architecture_or_with_the_wrong_one_is_one_line(weights_file):
    path, _ = weights_file
    with pytest.raises(HubtuneError, match="'model.timm_architecture'"):
        from_pretrained(AutoModelForImageClassification, ModelConfig(checkpoint=str(path)))
    with pytest.raises(HubtuneError, match="does not load into timm 'test_efficientnet'") as caught:
        from_pretrained(
            AutoModelForImageClassification, ModelConfig(checkpoint=str(path), timm_architecture="test_efficientnet")
        )
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_cut_off_weights_file_is_one_line_naming_it(weights_file, tmp_path, suffix):
    path, original = weights_file
    if suffix == ".pth":
        path = tmp_path / "test_resnet.pth"
        torch.save(original.state_dict(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    config = ModelConfig(checkpoint=str(path), timm_architecture="test_resnet")
    with pytest.raises(HubtuneError) as caught:
        from_pretrained(AutoModelForImageClassification, config)
    message = str(caught.value)
    assert message.startswith(f"checkpoint file '{path}' ('model.checkpoint') is truncated or damaged (")
    assert message.endswith("as an interrupted copy or download leaves it: copy or download it again")
    assert not (tmp_path / "home" / ".cache" / "hubtune").exists()
