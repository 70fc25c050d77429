"""Fast training settings, chosen from what the device supports and recorded with each run.

With `training.speed_defaults: true` (the default; `gpu_defaults` is its former name) and a CUDA device, hubtune
adds to the TrainingArguments: bf16 mixed precision (fp16 with the Trainer's loss scaler where the GPU has no
native bf16), TF32 matmuls (Ampere and newer) and dataloader workers. Each is a plain TrainingArguments key, so a
recipe that sets it itself wins. On a CPU nothing is added: one dataloader worker made the benchmark's whole
process no faster (51.1 s against 50.0 s; evaluation slower, 291 against 382 samples/s, docs/benchmarks.md). Length-grouped training batches (`training.train_sampling_strategy: group_by_length`) are not a
default on any device: they trained 1.6x faster on the CPU benchmark but cost 0.05 of test accuracy there, over
three seeds (docs/benchmarks.md); evaluation and prediction, where sorting by length changes no result, always
batch by length (pipelines/training/length_order.py). What transformers 5 already does is left to it: the fused
AdamW is its default optimizer (torch >= 2.8), SDPA its default attention (`model.attn_implementation` picks
another), pinned memory its default. `torch.compile` stays opt-in (`training.torch_compile: true`): compiling
costs minutes and retraces on every new batch shape.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from transformers import TrainingArguments
from transformers.utils import is_torch_tf32_available

from pipelines.compat import attention_implementation

# Dataloader worker processes per GPU process: enough to keep tokenised or decoded batches ahead of the GPU.
MAX_WORKERS = 4

# The TrainingArguments values that `speed_settings` records in a run's all_results.json.
RECORDED_KEYS = (
    "bf16",
    "fp16",
    "tf32",
    "optim",
    "train_sampling_strategy",
    "dataloader_num_workers",
    "dataloader_pin_memory",
    "torch_compile",
)


def _workers() -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    # Every GPU process of this node starts its own workers; they share the node's cores.
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(0, min(MAX_WORKERS, cpus // local_processes - 1))


def speed_defaults_on(training: dict[str, Any]) -> bool:
    """Whether the recipe leaves hubtune's speed settings on (`training.speed_defaults`, or its former name)."""
    return bool(training.get("speed_defaults", training.get("gpu_defaults", True)))


def speed_defaults(training: dict[str, Any]) -> dict[str, Any]:
    """The TrainingArguments values hubtune picks for this device, less those the recipe's `training` sets.

    Empty on a CPU and with `training.speed_defaults: false`.
    """
    if not speed_defaults_on(training) or not torch.cuda.is_available():
        return {}
    chosen: dict[str, Any] = {}
    if not {"bf16", "fp16"} & training.keys():
        # Emulated bf16 (pre-Ampere GPUs) is slower than fp32; fp16 with a loss scaler is what those GPUs run fast.
        native_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        chosen.update(bf16=native_bf16, fp16=not native_bf16)
    # The same check TrainingArguments makes before it accepts tf32=True (Ampere or newer, a CUDA build).
    chosen["tf32"] = is_torch_tf32_available()
    chosen["dataloader_num_workers"] = _workers()
    return {key: value for key, value in chosen.items() if key not in training}


def speed_settings(args: TrainingArguments, model: Any, padding_free: bool) -> dict[str, Any]:
    """Which speed settings a run trained with, as all_results.json records them."""
    settings = {key: getattr(args, key) for key in RECORDED_KEYS}
    settings["optim"] = str(getattr(args.optim, "value", args.optim))
    settings["attn_implementation"] = attention_implementation(model.config)
    settings["padding_free"] = padding_free
    return settings
