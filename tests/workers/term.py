"""Run by test_run_safety.py in a subprocess: `hubtune train` that receives SIGTERM, as a cluster sends it.

The signal comes from the process itself at a chosen training step (after the Trainer's step), so the test does not
race the training's speed. Not a test module.
"""

from __future__ import annotations

import os
import signal
import sys

import torch
from transformers import Trainer

from pipelines.commands.cli import main


def run() -> int:
    recipe_path, term_at_step = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(1)
    training_step = Trainer.training_step

    def terminated_training_step(self, *args, **kwargs):
        loss = training_step(self, *args, **kwargs)
        if self.state.global_step == term_at_step:
            os.kill(os.getpid(), signal.SIGTERM)
        return loss

    Trainer.training_step = terminated_training_step
    return main(["train", recipe_path])


if __name__ == "__main__":
    sys.exit(run())
