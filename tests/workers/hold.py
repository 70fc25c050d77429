"""Run by test_run_safety.py in a subprocess: `hubtune train` that pauses at a training step until told to go on.

At the step it writes the file `holding` beside the recipe and waits for the file `release` there, so that a test
can start a second run on the same folder (or kill this one) while this one holds it. Not a test module.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from transformers import Trainer

from pipelines.commands.cli import main


def run() -> int:
    recipe_path, hold_at_step = Path(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(1)
    training_step = Trainer.training_step

    def holding_training_step(self, *args, **kwargs):
        loss = training_step(self, *args, **kwargs)
        if self.state.global_step == hold_at_step:
            (recipe_path.parent / "holding").touch()
            while not (recipe_path.parent / "release").exists():
                time.sleep(0.05)
        return loss

    Trainer.training_step = holding_training_step
    return main(["train", str(recipe_path)])


if __name__ == "__main__":
    sys.exit(run())
