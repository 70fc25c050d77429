"""Run by test_training_failures.py in a subprocess: `hubtune train RECIPE [key=value ...]` on a disk that fills up
at a chosen save (SAVE: checkpoint-N, or final), so that the one-line message, the exit code and what is left on
disk are the real command's. Not a test module.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers.disk import fill_disk_at  # noqa: E402

from pipelines.commands.cli import main  # noqa: E402

if __name__ == "__main__":
    torch.set_num_threads(1)
    save, arguments = sys.argv[1], sys.argv[2:]
    fill_disk_at(save)
    sys.exit(main(["train", *arguments]))
