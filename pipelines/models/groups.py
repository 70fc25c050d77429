"""Layer groups of a model: `embeddings`, `block.0` … `block.N-1`, `neck`, `head`.

One mechanism for every transformers encoder: the blocks are the largest `nn.ModuleList` of the base
model, everything of the base model before them is `embeddings`, after them `neck` (pooler, final norm),
and every parameter outside the base model is `head`. timm models (bare or inside transformers'
`TimmWrapper*`) describe their own stages with `group_matcher`, and those groups are used instead. Detection and
segmentation models on a timm backbone (DETR's family, UperNet) take the backbone's stem and stages as
`embeddings` and blocks, the rest of the base model (DETR's encoder and decoder) as `neck`, the predictors as
`head`; their neck is part of the new model, so `freeze_backbone` trains it too.
Freezing strategies, the parameter table and PEFT's `modules_to_save` all read these groups, so a new
architecture needs no new code here.
"""

from __future__ import annotations

import copy
import functools
import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from pipelines.errors import HubtuneError

# PEFT wraps modules and renames parameters; these path segments mark where its wrapping begins, as do the
# names of each method's own parameters (`peft_segment`).
PEFT_PREFIX = "base_model.model."
PEFT_SEGMENTS = ("base_layer", "modules_to_save", "original_module")


@functools.cache
def _adapter_prefixes() -> tuple[str, ...]:
    """What every PEFT method's parameter names start with (`lora_`, `ia3_`, `hada_` for LoHa, `lokr_` ...)."""
    from peft.mapping import PEFT_TYPE_TO_PREFIX_MAPPING

    return tuple(PEFT_TYPE_TO_PREFIX_MAPPING.values())


def peft_segment(part: str) -> bool:
    return part in PEFT_SEGMENTS or part.startswith(_adapter_prefixes())


@dataclass
class LayerGroups:
    names: list[str]  # in forward order: embeddings, block.i, neck, head
    by_parameter: dict[str, str]  # parameter name (unwrapped model) -> group name
    head_modules: list[str]  # top-level modules outside the base model: the task head
    num_blocks: int
    # A detection / segmentation model around a backbone: its `neck` (encoder, decoder, FPN) is trained with the
    # head when the backbone is frozen.
    dense: bool = False

    def group_of(self, parameter_name: str) -> str:
        """Group of a parameter, also under PEFT's renamed paths (`…query.lora_A.default.weight`)."""
        name = parameter_name.removeprefix(PEFT_PREFIX)
        if name in self.by_parameter:
            return self.by_parameter[name]
        parts = name.split(".")
        cut = next((i for i, part in enumerate(parts) if peft_segment(part)), len(parts) - 1)
        module_path = ".".join(parts[:cut])
        for candidate, group in self.by_parameter.items():
            if candidate.startswith(module_path + ".") or candidate == module_path:
                return group
        inside = any(module_path == head or module_path.startswith(head + ".") for head in self.head_modules)
        return "head" if inside else "adapter"


def label_sized_parameters(model: Any) -> set[str]:
    """Names of the parameters whose shape follows the number of labels: every class head of the architecture
    (RT-DETR's encoder score head and denoising class embedding as well as its decoder's `class_embed`). Found
    by building the architecture with one label more on the meta device, which costs no memory, and comparing
    shapes, since no naming convention covers them all."""
    config: Any = copy.deepcopy(model.config)
    config.id2label = {i: f"label_{i}" for i in range(config.num_labels + 1)}  # num_labels follows id2label
    config.label2id = {name: i for i, name in config.id2label.items()}
    with torch.device("meta"):
        wider = type(model)(config)
    shapes = {name: parameter.shape for name, parameter in wider.named_parameters()}
    return {name for name, parameter in model.named_parameters() if shapes.get(name) != parameter.shape}


def _class_heads_inside(model: Any, by_parameter: dict[str, str]) -> list[str]:
    """For a task model that keeps its class heads inside its base model (RT-DETR's decoder holds `class_embed`):
    the modules of its class-sized parameters, which become the `head` group in `by_parameter`; else freezing and
    LoRA would leave the new heads frozen."""
    label_sized = label_sized_parameters(model)
    by_parameter.update(dict.fromkeys(label_sized, "head"))
    return sorted({name.rsplit(".", 1)[0] for name in label_sized})


def _blocks_container(base: nn.Module) -> tuple[str, nn.ModuleList]:
    candidates = [
        (name, module)
        for name, module in base.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) > 0 and len({type(child) for child in module}) == 1
    ]
    if not candidates:
        raise HubtuneError(f"cannot find the transformer blocks of {type(base).__name__}: no nn.ModuleList of layers")
    return max(candidates, key=lambda item: sum(p.numel() for p in item[1].parameters()))


def _timm_model(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The timm model inside `model` (transformers' TimmWrapper keeps it in `timm_model`) and its path."""
    for path, module in (("", model), ("timm_model", getattr(model, "timm_model", None))):
        if (
            isinstance(module, nn.Module)
            and callable(getattr(module, "group_matcher", None))
            and callable(getattr(module, "get_classifier", None))
        ):
            return path, module
    return None


def _stage_groups(module: nn.Module, matcher: dict[str, Any], head_names: set[str]) -> tuple[dict[str, str], int]:
    """`module`'s parameters (outside `head_names`) grouped by a timm `group_matcher`, and the number of blocks.

    timm orders its groups stem, stages, then everything unmatched (the classifier, and sometimes a final
    norm). The stem becomes `embeddings`, each stage a block, and a last group shared with the classifier `neck`.
    """
    from timm.models import group_parameters

    stem = re.compile(matcher["stem"]) if isinstance(matcher.get("stem"), str) else None
    ordered = [names for _, names in sorted(group_parameters(module, matcher).items())]
    groups: dict[str, str] = {}
    num_blocks = 0
    for position, names in enumerate(ordered):
        body = [name for name in names if name not in head_names]
        if not body:
            continue
        if position == 0 and stem is not None and all(stem.match(name) for name in body):
            group = "embeddings"
        elif position == len(ordered) - 1 and any(name in head_names for name in names):
            group = "neck"
        else:
            group = f"block.{num_blocks}"
            num_blocks += 1
        groups.update({name: group for name in body})
    return groups, num_blocks


def _timm_layer_groups(model: nn.Module, path: str, timm_model: Any) -> LayerGroups:
    """Groups from timm's own `group_matcher` (coarse: one group per stage); the classifier is `head`."""
    prefix = f"{path}." if path else ""
    classifier = timm_model.get_classifier()
    head_names = {
        f"{name}.{p}"
        for name, module in timm_model.named_modules()
        if module is classifier
        for p, _ in module.named_parameters()
    }
    head_modules = [
        prefix + name
        for name, module in timm_model.named_modules()
        if module is classifier and name and next(module.parameters(), None) is not None
    ]
    stages, num_blocks = _stage_groups(timm_model, timm_model.group_matcher(coarse=True), head_names)
    by_parameter = {prefix + name: group for name, group in stages.items()}
    by_parameter.update({prefix + name: "head" for name in head_names})
    names = ["embeddings", *[f"block.{i}" for i in range(num_blocks)], "neck", "head"]
    present = set(by_parameter.values())
    # Keep the model's parameter order, which the parameter table and freezing iterate in.
    by_parameter = {name: by_parameter[name] for name, _ in model.named_parameters()}
    return LayerGroups([n for n in names if n in present], by_parameter, head_modules, num_blocks)


def _dense_layer_groups(model: nn.Module, path: str, backbone: nn.Module) -> LayerGroups:
    """Groups of a model around a timm backbone: the backbone's stages by the group_matcher of its architecture
    (timm's feature extractors have none of their own: the full model is built on the meta device to ask)."""
    import timm
    import torch

    config: Any = model.config
    with torch.device("meta"):
        reference: Any = timm.create_model(config.backbone_config.backbone, pretrained=False)
    # A feature extractor has no classifier, so no group of it is `neck`.
    by_backbone, num_blocks = _stage_groups(backbone, reference.group_matcher(coarse=True), set())
    prefix = getattr(model, "base_model_prefix", "")
    base_path = prefix if isinstance(getattr(model, prefix, None), nn.Module) else ""
    by_parameter: dict[str, str] = {}
    for name, _ in model.named_parameters():
        if name.startswith(path + "."):
            by_parameter[name] = by_backbone.get(name[len(path) + 1 :], f"block.{max(num_blocks - 1, 0)}")
        elif base_path and name.startswith(base_path + "."):
            by_parameter[name] = "neck"
        else:
            by_parameter[name] = "head"
    head_modules = [name for name, _ in model.named_children() if name != base_path and not path.startswith(name + ".")]
    if not head_modules:
        head_modules = _class_heads_inside(model, by_parameter)
    names = ["embeddings", *[f"block.{i}" for i in range(num_blocks)], "neck", "head"]
    present = set(by_parameter.values())
    return LayerGroups([n for n in names if n in present], by_parameter, head_modules, num_blocks, dense=True)


def timm_backbone_module(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The timm feature extractor inside a dense-prediction model and its path (DETR's family keeps it at
    `model.backbone.model`, UperNet at `backbone._backbone`); None for models without one."""
    for name, module in model.named_modules():
        if "backbone" in name and type(module).__module__.startswith("timm."):
            return name, module
    return None


def layer_groups(model: nn.Module) -> LayerGroups:
    """Name the layer groups of a transformers or timm model (with or without a task head)."""
    dense = timm_backbone_module(model)
    if dense is not None and getattr(getattr(model, "config", None), "backbone_config", None) is not None:
        return _dense_layer_groups(model, *dense)
    timm = _timm_model(model)
    if timm is not None:
        return _timm_layer_groups(model, *timm)
    prefix = getattr(model, "base_model_prefix", "")
    base = getattr(model, prefix, None) if prefix else None
    base_path = prefix if isinstance(base, nn.Module) else ""
    base = base if isinstance(base, nn.Module) else model
    blocks_name, blocks = _blocks_container(base)
    owner = blocks_name.split(".", 1)[0]
    if not base_path and "." in blocks_name and isinstance(getattr(model, owner), PreTrainedModel):
        # A head over a whole sub-model not stored under `base_model_prefix` (WhisperForAudioClassification keeps
        # its encoder as `encoder`): that sub-model is the base, the other children the head.
        base_path, blocks_name = blocks_name.split(".", 1)
    blocks_path = f"{base_path}.{blocks_name}" if base_path else blocks_name
    by_parameter: dict[str, str] = {}
    seen_block = False
    for name, _ in model.named_parameters():
        if name.startswith(blocks_path + "."):
            index = name[len(blocks_path) + 1 :].split(".")[0]
            by_parameter[name] = f"block.{index}"
            seen_block = True
        elif not base_path or name.startswith(base_path + "."):
            by_parameter[name] = "neck" if seen_block else "embeddings"
        else:
            by_parameter[name] = "head"
    head_modules = [
        name
        for name, _ in model.named_children()
        if base_path and name != base_path and any(p for p in by_parameter if p.startswith(name + "."))
    ]
    if not head_modules and isinstance(model, PreTrainedModel) and base is not model:
        head_modules = _class_heads_inside(model, by_parameter)
    names = ["embeddings", *[f"block.{i}" for i in range(len(blocks))], "neck", "head"]
    present = set(by_parameter.values())
    return LayerGroups([n for n in names if n in present], by_parameter, head_modules, len(blocks))
