"""Layer groups of a model: `embeddings`, `block.0` … `block.N-1`, `neck`, `head`.

One mechanism for every transformers encoder: the blocks are the largest `nn.ModuleList` of the base
model, everything of the base model before them is `embeddings`, after them `neck` (pooler, final norm),
and every parameter outside the base model is `head`. Freezing strategies, the parameter table and
PEFT's `modules_to_save` all read these groups, so a new architecture needs no new code here.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from transformers import PreTrainedModel

from pipelines.errors import HubtuneError

# PEFT wraps modules and renames parameters; these path segments mark where its wrapping begins.
PEFT_PREFIX = "base_model.model."
PEFT_SEGMENTS = ("base_layer", "lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_dropout",
                 "lora_magnitude_vector", "modules_to_save", "original_module")


@dataclass
class LayerGroups:
    names: list[str]  # in forward order: embeddings, block.i, neck, head
    by_parameter: dict[str, str]  # parameter name (unwrapped model) -> group name
    head_modules: list[str]  # top-level modules outside the base model: the task head
    num_blocks: int

    def group_of(self, parameter_name: str) -> str:
        """Group of a parameter, also under PEFT's renamed paths (`…query.lora_A.default.weight`)."""
        name = parameter_name.removeprefix(PEFT_PREFIX)
        if name in self.by_parameter:
            return self.by_parameter[name]
        parts = name.split(".")
        cut = next((i for i, part in enumerate(parts) if part in PEFT_SEGMENTS), len(parts) - 1)
        module_path = ".".join(parts[:cut])
        for candidate, group in self.by_parameter.items():
            if candidate.startswith(module_path + ".") or candidate == module_path:
                return group
        return "head" if parts[0] in self.head_modules else "adapter"


def _blocks_container(base: nn.Module) -> tuple[str, nn.ModuleList]:
    candidates = [(name, module) for name, module in base.named_modules()
                  if isinstance(module, nn.ModuleList) and len(module) > 0
                  and len({type(child) for child in module}) == 1]
    if not candidates:
        raise HubtuneError(f"cannot find the transformer blocks of {type(base).__name__}: no nn.ModuleList of layers")
    return max(candidates, key=lambda item: sum(p.numel() for p in item[1].parameters()))


def layer_groups(model: nn.Module) -> LayerGroups:
    """Name the layer groups of a transformers model (with or without a task head)."""
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
            index = name[len(blocks_path) + 1:].split(".")[0]
            by_parameter[name] = f"block.{index}"
            seen_block = True
        elif not base_path or name.startswith(base_path + "."):
            by_parameter[name] = "neck" if seen_block else "embeddings"
        else:
            by_parameter[name] = "head"
    head_modules = [name for name, _ in model.named_children() if base_path and name != base_path
                    and any(p for p in by_parameter if p.startswith(name + "."))]
    names = ["embeddings", *[f"block.{i}" for i in range(len(blocks))], "neck", "head"]
    present = set(by_parameter.values())
    return LayerGroups([n for n in names if n in present], by_parameter, head_modules, len(blocks))
