"""Run by test_run_safety.py in a subprocess: a recipe run that dies by SIGKILL while writing a checkpoint.

The kill comes after the checkpoint's weights and optimizer state are on disk and before its
`trainer_state.json`, the moment a real `kill -9` during a save leaves the most behind. Not a test module.
"""

from __future__ import annotations

import os
import signal
import sys

import torch
from transformers import Trainer

from pipelines import Recipe


def main() -> None:
    recipe_path, kill_at_step = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(1)
    save_rng_state = Trainer._save_rng_state

    def dying_save_rng_state(self, output_dir):
        save_rng_state(self, output_dir)
        if self.state.global_step == kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)

    Trainer._save_rng_state = dying_save_rng_state
    Recipe.from_yaml(recipe_path).run()


if __name__ == "__main__":
    main()
