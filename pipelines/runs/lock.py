"""One run at a time on a run folder: an exclusive lock held for the run's whole life.

The lock is an advisory `flock` on a hidden sibling file (`.NAME.hubtune-lock`), so it covers the run folder and
its staging sibling (`.NAME.hubtune-new`) alike and survives both being swapped. The kernel releases a `flock` when
its process ends, however it ends: a lock left by a killed run is free for the next one without any staleness
guess. The file names its holder (process id and host) for the message a second run gets.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from pipelines.errors import HubtuneError


def lock_path(target: Path) -> Path:
    return target.parent / f".{target.name}.hubtune-lock"


def _same_file(handle: TextIO, path: Path) -> bool:
    try:
        return os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _acquire(target: Path) -> TextIO:
    path = lock_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "a process that has not named itself yet"
            handle.close()
            raise HubtuneError(
                f"run folder '{target}' is in use by another hubtune run ({holder}); wait for it to end, or choose "
                "another 'output_dir'"
            ) from None
        # A holder that just finished removes the file: a lock taken on the removed file guards nothing.
        if _same_file(handle, path):
            return handle
        handle.close()


@contextmanager
def run_lock(target: Path) -> Iterator[None]:
    """Hold the lock of run folder `target` while the block runs; a second holder is refused in one line."""
    handle = _acquire(target)
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        yield
    finally:
        lock_path(target).unlink(missing_ok=True)
        handle.close()
