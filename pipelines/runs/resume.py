"""Finding the checkpoint to resume from: the last complete one, whatever a crash left behind."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
# The Trainer writes a checkpoint's weights, optimizer, scheduler and RNG state first and `trainer_state.json`
# last (`Trainer._save_checkpoint`, transformers 5): a checkpoint whose state file is missing, cut short or
# names another step was being written when the process died.
TRAINER_STATE = "trainer_state.json"


def checkpoint_step(folder: Path) -> int | None:
    """N for a `checkpoint-N` folder name, else None."""
    match = CHECKPOINT_NAME.match(folder.name)
    return int(match.group(1)) if match else None


def is_complete(checkpoint: Path) -> bool:
    step = checkpoint_step(checkpoint)
    try:
        state = json.loads((checkpoint / TRAINER_STATE).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(state, dict) and state.get("global_step") == step


def find_resumable(folder: Path) -> tuple[Path | None, list[Path]]:
    """The newest complete `checkpoint-N` in `folder`, and the incomplete ones newer than it."""
    if not folder.is_dir():
        return None, []
    steps = {p: step for p in folder.iterdir() if p.is_dir() and (step := checkpoint_step(p)) is not None}
    checkpoints = sorted(steps, key=steps.__getitem__, reverse=True)
    incomplete: list[Path] = []
    for checkpoint in checkpoints:
        if is_complete(checkpoint):
            return checkpoint, incomplete
        incomplete.append(checkpoint)
    return None, incomplete


def drop_incomplete(checkpoints: list[Path]) -> None:
    """Delete checkpoints a crash left half-written: they cannot be resumed from, and the Trainer's checkpoint
    rotation would count them as saved."""
    for checkpoint in checkpoints:
        logger.warning(
            "checkpoint '%s' is incomplete (the run stopped while saving it): deleting it and resuming "
            "from the last complete one",
            checkpoint,
        )
        shutil.rmtree(checkpoint)
