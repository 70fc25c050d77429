"""Fast training settings, chosen from what the device supports and recorded with each run.

With `training.speed_defaults: true` (the default; `gpu_defaults` is its former name) hubtune adds to the
TrainingArguments:

- on a CUDA device: bf16 mixed precision (fp16 with the Trainer's loss scaler where the GPU has no native bf16),
  TF32 matmuls (Ampere and newer) and dataloader workers;
- on a CPU with AMX tiles (Intel Sapphire Rapids and newer; oneDNN not held below them by `ONEDNN_MAX_CPU_ISA`)
  and no accelerator: bf16 mixed precision, with `use_cpu`, which TrainingArguments asks for before it takes
  bf16 without a GPU. On the 2-core benchmark machine it trained 1.67x faster, at the same test accuracy over
  three seeds. With the AVX-512 bf16 dot product alone (oneDNN held below AMX) bf16 trained 0.73x as fast as
  fp32, and 0.34x with neither, so other CPUs train in fp32 (docs/benchmarks.md). The final scores are in the
  model's own precision (`HubtuneTrainer.train`).

Each is a plain TrainingArguments key, so a recipe that sets it itself wins. Dataloader workers stay off on a CPU:
one worker made the benchmark's whole process no faster (51.1 s against 50.0 s; evaluation slower, 291 against
382 samples/s). Length-grouped training batches (`training.train_sampling_strategy: group_by_length`) are not a
default on any device: they trained 1.6x faster on the CPU benchmark but cost 0.05 of test accuracy there, over
three seeds; evaluation and prediction, where sorting by length changes no result, always batch by length
(pipelines/training/length_order.py). What transformers 5 already does is left to it: the fused AdamW is its
default optimizer (torch >= 2.8), SDPA its default attention (`model.attn_implementation` picks another), pinned
memory its default. `torch.compile` stays opt-in (`training.torch_compile: true`): compiling costs minutes and
retraces on every new batch shape.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from transformers import TrainingArguments
from transformers.utils import is_torch_tf32_available

from pipelines.compat import attention_implementation, cpu_has_amx_bf16

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
    "use_cpu",
)


def _workers() -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    # Every GPU process of this node starts its own workers; they share the node's cores.
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(0, min(MAX_WORKERS, cpus // local_processes - 1))


def _amx_usable() -> bool:
    """Whether oneDNN may multiply bf16 matrices on this CPU's AMX tiles: the CPU has them, and oneDNN is not held
    below them (`ONEDNN_MAX_CPU_ISA`, or `DNNL_MAX_CPU_ISA`, its former name), where bf16 is slower than fp32."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "ALL")).upper()
    return cpu_has_amx_bf16() and (cap == "ALL" or "AMX" in cap)


def speed_defaults_on(training: dict[str, Any]) -> bool:
    """Whether the recipe leaves hubtune's speed settings on (`training.speed_defaults`, or its former name)."""
    return bool(training.get("speed_defaults", training.get("gpu_defaults", True)))


def speed_defaults(training: dict[str, Any]) -> dict[str, Any]:
    """The TrainingArguments values hubtune picks for this device, less those the recipe's `training` sets.

    Empty with `training.speed_defaults: false`, and on a CPU without AMX.
    """
    if not speed_defaults_on(training):
        return {}
    precision_set = bool({"bf16", "fp16"} & training.keys())
    chosen: dict[str, Any] = {}
    if torch.cuda.is_available():
        if not precision_set:
            # Emulated bf16 (pre-Ampere GPUs) is slower than fp32; fp16 with a loss scaler is what those GPUs run
            # fast.
            native_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
            chosen.update(bf16=native_bf16, fp16=not native_bf16)
        # The same check TrainingArguments makes before it accepts tf32=True (Ampere or newer, a CUDA build).
        chosen["tf32"] = is_torch_tf32_available()
        chosen["dataloader_num_workers"] = _workers()
    elif not torch.accelerator.is_available() and _amx_usable():
        # Not on a Mac's MPS or another accelerator: `use_cpu` would keep the run off it.
        if not precision_set and training.get("use_cpu", True):
            chosen.update(bf16=True, use_cpu=True)
    return {key: value for key, value in chosen.items() if key not in training}


def speed_settings(args: TrainingArguments, model: Any, padding_free: bool) -> dict[str, Any]:
    """Which speed settings a run trained with, as all_results.json records them."""
    settings = {key: getattr(args, key) for key in RECORDED_KEYS}
    settings["optim"] = str(getattr(args.optim, "value", args.optim))
    settings["attn_implementation"] = attention_implementation(model.config)
    settings["padding_free"] = padding_free
    return settings
