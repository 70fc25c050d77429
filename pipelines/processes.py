"""The process state of a run under `accelerate launch` (or of a plain single process)."""

from __future__ import annotations

import os

import torch
from accelerate import PartialState


def cpu_processes() -> bool:
    """Several processes and no GPU: they talk over gloo on the CPU (docs/platform-notes.md)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


def process_state() -> PartialState:
    """accelerate's state for this process, set up as the Trainer will set it up.

    A bare `PartialState()` on a machine without a GPU sees no distributed run even under `accelerate launch`:
    every process would think it is the main one, write the same cache files and join the same outputs. Asking
    for the CPU when several CPU processes run makes it start gloo, as `TrainingArguments(use_cpu=True)` does.
    """
    return PartialState(cpu=cpu_processes())
