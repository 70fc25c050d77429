"""Detection and segmentation models built around an ImageNet backbone (`model.architecture`): the backbone's
weights arrive whole, the layer groups and freezing see backbone, neck and head, bad keys are one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from helpers.detection import TINY_DETR_SIZES, TINY_RT_DETR_SIZES
from timm.models import save_for_hf
from transformers import AutoModelForObjectDetection, AutoModelForSemanticSegmentation

from pipelines import HubtuneError, load_recipe_config
from pipelines.adapt import adapt_model, layer_groups
from pipelines.config import AdaptConfig, ModelConfig, build_adapt_config
from pipelines.models.dense_backbone import OUT_INDICES, build_on_backbone
from pipelines.models.groups import timm_backbone_module

DETR_HEAD = TINY_DETR_SIZES
# RT-DETR's hybrid encoder reads the backbone's last three levels; hubtune fits its input channels to them.
RT_DETR_HEAD = TINY_RT_DETR_SIZES
UPERNET_HEAD = {"hidden_size": 32, "use_auxiliary_head": False, "pool_scales": [1, 2]}


@pytest.fixture(scope="module")
def timm_checkpoint(tmp_path_factory) -> Path:
    """A small timm CNN saved as timm saves Hub checkpoints, with trained-looking (non-initial) weights."""
    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter))
    folder = tmp_path_factory.mktemp("timm-backbone")
    save_for_hf(model, str(folder), safe_serialization=True)
    return folder


def backbone_reference(folder: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's weights as timm's own feature extractor holds them."""
    features = timm.create_model(
        "test_efficientnet",
        pretrained=True,
        features_only=True,
        out_indices=OUT_INDICES,
        pretrained_cfg_overlay={"file": str(folder / "model.safetensors")},
    )
    return features.state_dict()


@pytest.mark.parametrize(
    ("auto_model", "architecture", "head"),
    [
        (AutoModelForObjectDetection, "conditional_detr", DETR_HEAD),
        (AutoModelForObjectDetection, "rt_detr", RT_DETR_HEAD),
        (AutoModelForSemanticSegmentation, "upernet", UPERNET_HEAD),
    ],
)
def test_imagenet_weights_fill_the_backbone(timm_checkpoint, auto_model, architecture, head):
    model_config = ModelConfig(checkpoint=str(timm_checkpoint), architecture=architecture)
    model = build_on_backbone(auto_model, model_config, ["cat", "dog"], head)
    _, backbone = timm_backbone_module(model)
    loaded = backbone.state_dict()
    for name, value in backbone_reference(timm_checkpoint).items():
        if not name.endswith("num_batches_tracked"):
            assert torch.equal(loaded[name], value), name
    assert model.config.id2label == {0: "cat", 1: "dog"}

    scratch = build_on_backbone(
        auto_model,
        ModelConfig(checkpoint=str(timm_checkpoint), architecture=architecture, from_scratch=True),
        ["cat", "dog"],
        head,
    )
    _, fresh = timm_backbone_module(scratch)
    stem = next(name for name in loaded if name.endswith("conv_stem.weight"))
    assert not torch.equal(fresh.state_dict()[stem], loaded[stem])
    # timm's own (He-style) init, not transformers' std-0.02 redraw: a fair from-scratch baseline.
    assert fresh.state_dict()[stem].std() > 0.05


def test_groups_and_freezing_see_backbone_neck_and_head(timm_checkpoint):
    model_config = ModelConfig(checkpoint=str(timm_checkpoint), architecture="conditional_detr")
    model = build_on_backbone(AutoModelForObjectDetection, model_config, ["a", "b"], DETR_HEAD)
    groups = layer_groups(model)
    assert groups.names[0] == "embeddings" and groups.names[-2:] == ["neck", "head"] and groups.num_blocks >= 2
    assert groups.head_modules == ["class_labels_classifier", "bbox_predictor"]
    path, _ = timm_backbone_module(model)
    assert all(
        groups.by_parameter[name].startswith(("embeddings", "block."))
        for name, _ in model.named_parameters()
        if name.startswith(path + ".")
    )
    assert groups.by_parameter["model.decoder.layers.0.self_attn.q_content_proj.weight"] == "neck"

    adapted, _ = adapt_model(model, AdaptConfig(strategy="freeze_backbone"), None)
    for name, parameter in adapted.named_parameters():
        # The new detection transformer trains with the predictors; the ImageNet backbone stays as it was.
        assert parameter.requires_grad == (not name.startswith(path + ".")), name

    model = build_on_backbone(AutoModelForObjectDetection, model_config, ["a", "b"], DETR_HEAD)
    adapted, groups = adapt_model(model, build_adapt_config({"strategy": "train_last_n", "n": 1}), None)
    last = f"block.{groups.num_blocks - 1}"
    for name, parameter in adapted.named_parameters():
        assert parameter.requires_grad == (groups.by_parameter[name] in {last, "neck", "head"}), name


def test_rt_detr_reads_the_backbones_last_three_levels_and_its_inner_class_heads_are_the_head(timm_checkpoint):
    model_config = ModelConfig(checkpoint=str(timm_checkpoint), architecture="rt_detr")
    model = build_on_backbone(AutoModelForObjectDetection, model_config, ["a", "b"], RT_DETR_HEAD)
    channels = timm.create_model("test_efficientnet", features_only=True, out_indices=OUT_INDICES[-3:])
    assert model.config.encoder_in_channels == channels.feature_info.channels()
    assert model.config.decoder_in_channels == [32, 32, 32]
    # Its class heads sit inside the base model: they are found by their class-sized shapes.
    groups = layer_groups(model)
    assert groups.head_modules == ["model.decoder.class_embed.0", "model.denoising_class_embed", "model.enc_score_head"]
    assert groups.by_parameter["model.enc_score_head.weight"] == "head"
    assert groups.by_parameter["model.decoder.bbox_embed.0.layers.0.weight"] == "neck"
    logits = model(pixel_values=torch.randn(1, 3, 64, 64)).logits
    assert logits.shape == (1, 10, 2)


def test_bad_architecture_keys_are_one_line(timm_checkpoint, tiny_bert):
    def build(**keys):
        values = {"checkpoint": str(timm_checkpoint), "architecture": "conditional_detr", **keys}
        return build_on_backbone(AutoModelForObjectDetection, ModelConfig(**values), ["a", "b"], DETR_HEAD)

    with pytest.raises(HubtuneError, match="'model.architecture' is 'conditional_detrr', which is not a transformers"):
        build(architecture="conditional_detrr")
    with pytest.raises(HubtuneError, match="'model.architecture' is 'bert', which AutoModelForObjectDetection cannot"):
        build(architecture="bert")
    with pytest.raises(
        HubtuneError,
        match=r"'model.config_overrides.dmodel' is not a field.*did you mean 'model.config_overrides.d_model'",
    ):
        build(config_overrides={"dmodel": 64})
    with pytest.raises(HubtuneError, match="is not a timm checkpoint"):
        build(checkpoint=str(tiny_bert))
    with pytest.raises(
        HubtuneError, match=r"backbone checkpoint folder './nowhere' \('model.checkpoint'\) does not exist"
    ):
        build(checkpoint="./nowhere")
    values = {"name": "x", "model": {"checkpoint": str(tiny_bert), "architecture": "upernet"}}
    with pytest.raises(HubtuneError, match="task 'text-classification' loads 'model.checkpoint' whole"):
        load_recipe_config(values=values)
