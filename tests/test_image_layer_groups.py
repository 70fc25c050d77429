"""Layer groups of timm models come from their own `group_matcher`, bare or inside transformers' TimmWrapper."""

from __future__ import annotations

import re

import pytest
import torch

from pipelines.adapt import adapt_model, layer_groups
from pipelines.config import AdaptConfig

# architecture -> (group names, head module, parameter names in the neck)
EXPECTED = {
    "test_vit": (["embeddings", *[f"block.{i}" for i in range(6)], "head"], "head", []),
    "test_efficientnet": (["embeddings", *[f"block.{i}" for i in range(5)], "head"], "classifier", []),
    # ConvNeXt's final norm sits in its head module, after the stages, before the classifier.
    "test_convnext": (
        ["embeddings", *[f"block.{i}" for i in range(4)], "neck", "head"],
        "head.fc",
        ["head.norm.weight", "head.norm.bias"],
    ),
}


@pytest.mark.parametrize("architecture", sorted(EXPECTED))
def test_timm_groups_follow_group_matcher(architecture):
    import timm

    names, head, neck = EXPECTED[architecture]
    model = timm.create_model(architecture, num_classes=3)
    groups = layer_groups(model)
    assert groups.names == names
    assert groups.head_modules == [head]
    assert [p for p, g in groups.by_parameter.items() if g == "neck"] == neck
    classifier = {f"{head}.{p}" for p, _ in model.get_classifier().named_parameters()}
    assert {p for p, g in groups.by_parameter.items() if g == "head"} == classifier
    assert set(groups.by_parameter) == {p for p, _ in model.named_parameters()}
    # The stem is exactly what the model's own matcher calls its stem.
    stem = model.group_matcher(coarse=True)["stem"]
    assert {p for p, g in groups.by_parameter.items() if g == "embeddings"} == {
        p for p, _ in model.named_parameters() if re.match(stem, p)
    }


def test_timm_wrapper_groups_and_freezing():
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    model = TimmWrapperForImageClassification(TimmWrapperConfig(architecture="test_efficientnet", num_labels=3))
    model, groups = adapt_model(model, AdaptConfig(strategy="freeze_backbone"), None)
    assert groups.head_modules == ["timm_model.classifier"]
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"timm_model.classifier.weight", "timm_model.classifier.bias"}
    # The Trainer mixin's rule: after model.train(), the frozen parts go back to eval mode, so a training
    # forward leaves the BatchNorm running statistics alone while the head trains.
    from pipelines.training.eval_parts import frozen_modules

    model.train()
    for module in frozen_modules(model):
        module.eval()
    before = model.timm_model.bn1.running_mean.clone()
    model(pixel_values=torch.randn(4, 3, 32, 32) * 3 + 1)
    assert torch.equal(before, model.timm_model.bn1.running_mean)
    assert model.training and model.timm_model.classifier.training and not model.timm_model.bn1.training


def test_timm_from_scratch_uses_timm_initialisation(tmp_path):
    """transformers' init would redraw convolutions with std 0.02; from scratch must mean timm's own init."""
    import timm
    from timm.models import save_for_hf
    from transformers import AutoModelForImageClassification

    from pipelines.config import ModelConfig
    from pipelines.models.loading import load_classifier

    torch.manual_seed(0)
    save_for_hf(timm.create_model("test_efficientnet", num_classes=5), tmp_path, safe_serialization=True)
    model = load_classifier(
        AutoModelForImageClassification,
        ModelConfig(checkpoint=str(tmp_path), from_scratch=True),
        ["a", "b", "c"],
        "ForImageClassification",
    )
    reference = timm.create_model("test_efficientnet", num_classes=3)
    for name in ("conv_stem.weight", "blocks.3.0.conv_pw.weight", "classifier.weight"):
        ours, theirs = model.timm_model.get_parameter(name), reference.get_parameter(name)
        assert float(ours.std()) == pytest.approx(float(theirs.std()), rel=0.35), name
        assert float(ours.std()) > 0.03, name
