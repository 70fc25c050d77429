"""Detection and segmentation models built around an ImageNet backbone (`model.architecture`).

The classic transfer recipe for dense prediction: a CNN pretrained on ImageNet classification, a new detection
or segmentation head. transformers builds these models from a config whose `backbone_config` names a timm
architecture (DETR's family, UperNet ...), but since version 5 it never loads that backbone's pretrained weights
(`use_pretrained_backbone` is forced off), so this module does: it reads the backbone checkpoint the recipe names
(a timm Hub id, a timm folder, or a single weights file with `model.timm_architecture`), builds the model from the
config and copies the ImageNet weights into the backbone, checking that every tensor found its place.

`model.from_scratch` gives the same model with timm's own random initialisation of the backbone (transformers'
default init would redraw the convolutions at std 0.02, a handicap no fair baseline should carry).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn
from transformers import AutoConfig

from pipelines.compat import auto_class_builds, auto_class_model_types
from pipelines.config import ModelConfig, closest
from pipelines.errors import HubtuneError, require_path
from pipelines.hub_access import offline_reason
from pipelines.models.groups import timm_backbone_module
from pipelines.models.loading import (
    REJECTED_BUILD,
    TIMM_HUB_PREFIX,
    from_config,
    rejected_overrides,
    timm_file_as_folder,
)

logger = logging.getLogger(__name__)

# Feature maps at strides 4, 8, 16 and 32 (timm's stage outputs 1-4): what FPN/UperNet-style heads and the
# multi-scale DETRs read; single-scale DETRs use the last.
OUT_INDICES = [1, 2, 3, 4]


@dataclass
class BackboneSource:
    """A timm ImageNet checkpoint on disk: its architecture, weights file and input normalisation."""

    architecture: str
    weights: Path
    mean: list[float]
    std: list[float]


def backbone_source(model: ModelConfig) -> BackboneSource:
    """The timm checkpoint `model.checkpoint` names, from a file, a folder or the Hub (its local cache offline)."""
    checkpoint = model.checkpoint.removeprefix(TIMM_HUB_PREFIX)
    path = Path(checkpoint).expanduser()
    if path.is_file():
        folder = timm_file_as_folder(path, model.timm_architecture)
    elif path.is_dir():
        folder = path
    elif checkpoint.startswith((".", "/", "~")):
        require_path(checkpoint, "folder", "backbone checkpoint folder", "model.checkpoint")
    else:
        folder = _hub_folder(checkpoint, model.revision)
    config_file = folder / "config.json"
    try:
        timm_config = json.loads(config_file.read_text())
    except (OSError, ValueError) as error:
        raise HubtuneError(f"backbone checkpoint '{checkpoint}' has no readable config.json: {error}") from error
    architecture = timm_config.get("architecture")
    if not isinstance(architecture, str):
        raise HubtuneError(
            f"'model.architecture' builds a model around a timm ImageNet backbone, but '{checkpoint}' "
            f"('model.checkpoint') is not a timm checkpoint (its config.json names no 'architecture')"
        )
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise HubtuneError(f"backbone checkpoint '{checkpoint}' holds no model.safetensors ('model.checkpoint')")
    pretrained = timm_config.get("pretrained_cfg", {})
    return BackboneSource(
        architecture,
        weights,
        list(pretrained.get("mean", (0.485, 0.456, 0.406))),
        list(pretrained.get("std", (0.229, 0.224, 0.225))),
    )


def _hub_folder(repo_id: str, revision: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=["config.json", "*.safetensors"]))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as error:
        why = offline_reason() or f"the Hub did not give it ({type(error).__name__})"
        raise HubtuneError(
            f"backbone checkpoint '{repo_id}' ('model.checkpoint') cannot be loaded: it is not in the local Hugging "
            f"Face cache and {why}; run `hf download {repo_id}` where there is network, or name a local folder"
        ) from error


def _fit_hybrid_encoder(config: Any, architecture: str) -> None:
    """RT-DETR's family reads a fixed number of backbone levels (`encoder_in_channels`, strides 8 to 32) and its
    hybrid encoder hands the decoder `encoder_hidden_dim` channels per level; transformers sizes both for its own
    ResNet, so they are fitted here to the timm backbone (the recipe then only sizes the transformer)."""
    if not hasattr(config, "encoder_in_channels"):
        return
    import timm
    import torch

    levels = len(config.encoder_in_channels)
    out_indices = OUT_INDICES[-levels:]
    with torch.device("meta"):  # only the channel counts are wanted
        features: Any = timm.create_model(architecture, pretrained=False, features_only=True, out_indices=out_indices)
    config.backbone_config.out_indices = out_indices
    config.encoder_in_channels = features.feature_info.channels()
    config.decoder_in_channels = [config.encoder_hidden_dim] * levels


def build_on_backbone(
    auto_model: Any, model: ModelConfig, label_names: list[str], head_config: dict[str, Any] | None = None
) -> nn.Module:
    """A `model.architecture` model for `label_names` around the `model.checkpoint` backbone.

    `head_config` holds the task's defaults for the head's config (the recipe's `model.config_overrides` win).
    """
    assert model.architecture is not None
    source = backbone_source(model)
    backbone_config = {
        "model_type": "timm_backbone",
        "backbone": source.architecture,
        "features_only": True,
        "use_pretrained_backbone": False,
        "out_indices": OUT_INDICES,
        # Detection and segmentation batches are small: ImageNet's BatchNorm statistics serve better than ones
        # re-estimated from a few images (DETR's family freezes them whatever this says).
        "freeze_batch_norm_2d": not model.from_scratch,
    }
    labels = {"id2label": dict(enumerate(label_names)), "label2id": {name: i for i, name in enumerate(label_names)}}
    try:
        config = AutoConfig.for_model(model.architecture, backbone_config=backbone_config, **labels)
    except ValueError as error:
        raise HubtuneError(
            f"'model.architecture' is '{model.architecture}', which is not a transformers model type: {error}"
        ) from error
    if not auto_class_builds(auto_model, config):
        raise HubtuneError(
            f"'model.architecture' is '{model.architecture}', which {auto_model.__name__} cannot build; it builds "
            f"{', '.join(auto_class_model_types(auto_model))}"
        )
    fields = config.to_dict()
    for key, value in {**(head_config or {}), **model.config_overrides}.items():
        if key not in fields:
            raise HubtuneError(
                f"'model.config_overrides.{key}' is not a field of {type(config).__name__} ('model.architecture')"
                f"{closest(key, fields, 'model.config_overrides.', 'fields')}"
            )
        try:
            setattr(config, key, value)  # a config field checks its type as it is set
        except REJECTED_BUILD as error:
            if key not in model.config_overrides:
                raise
            raise rejected_overrides(model, error) from error
    _fit_hybrid_encoder(config, source.architecture)
    built = from_config(auto_model, config, model)
    load_backbone_weights(built, source, pretrained=not model.from_scratch)
    built.name_or_path = model.checkpoint
    logger.info(
        "%s on a %s backbone (%s)",
        type(built).__name__,
        source.architecture,
        "random init" if model.from_scratch else f"ImageNet weights from {model.checkpoint}",
    )
    return built


def load_backbone_weights(model: nn.Module, source: BackboneSource, pretrained: bool = True) -> None:
    """Copy the ImageNet weights (or timm's own random init) into `model`'s timm backbone, every tensor placed."""
    import timm

    found = timm_backbone_module(model)
    if found is None:
        raise HubtuneError(f"{type(model).__name__} holds no timm backbone to load '{source.architecture}' into")
    path, backbone = found
    config: Any = model.config
    overlay: dict[str, Any] = {"pretrained_cfg_overlay": {"file": str(source.weights)}} if pretrained else {}
    try:
        donor = timm.create_model(
            source.architecture,
            pretrained=pretrained,
            features_only=True,
            out_indices=list(config.backbone_config.out_indices),  # as built: RT-DETR reads three stages
            **overlay,
        )
    except (RuntimeError, KeyError, ValueError) as error:
        raise HubtuneError(
            f"the weights {source.weights} do not load into timm '{source.architecture}': {str(error).splitlines()[0]}"
        ) from error
    # BatchNorm's step counters have no counterpart in the frozen BatchNorm that DETR's family uses.
    state = {key: value for key, value in donor.state_dict().items() if not key.endswith("num_batches_tracked")}
    result = backbone.load_state_dict(state, strict=False)
    missing = [key for key in result.missing_keys if not key.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise HubtuneError(
            f"the {source.architecture} weights do not fit the backbone at '{path}': "
            f"missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}"
        )
