"""A disk that fills up at a chosen save, for the tests of a full disk. Not a test module (no `test_` prefix).

The weights file of that save gets the first bytes of its tensors and then fails as a write to a full device does
(OSError ENOSPC, as safetensors raises it): a small tmpfs would need root, and /dev/full cannot stand in for the
file, since safetensors writes small files beside their place and renames them.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

FINAL = "final"  # `fill_disk_at`'s name for the run's final save (any folder that is not a checkpoint-N)
WRITTEN_BEFORE_FULL = 4096  # bytes of the file that reach the disk before it is full


def fill_disk_at(save: str) -> None:
    """Make the weights of `save` ('checkpoint-15', or FINAL) fail to write, as on a full disk."""
    import transformers.modeling_utils as modeling_utils

    write = modeling_utils.safe_save_file

    def write_to_full_disk(tensors, filename, *args, **kwargs):
        folder = Path(filename).parent.name
        if folder == save or (save == FINAL and not folder.startswith("checkpoint-")):
            write(tensors, filename, *args, **kwargs)
            with open(filename, "r+b") as file:
                file.truncate(WRITTEN_BEFORE_FULL)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)
        return write(tensors, filename, *args, **kwargs)

    modeling_utils.safe_save_file = write_to_full_disk
