"""How a run ends when training does not finish: one line naming the cause and the last complete checkpoint, and a
run folder that `training.resume=true` continues, or that is removed when it holds nothing to continue from.

Ctrl-C, a full disk, hubtune's own errors and any other exception all go through `RunEnding.guard`: a checkpoint
or final save cut short is deleted (the Trainer would otherwise count it as saved, and it fills the disk), and a
folder with no complete checkpoint, a replacement's hidden staging folder included, is removed.
"""

from __future__ import annotations

import errno
import fnmatch
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from transformers import TrainerCallback

from pipelines.errors import HubtuneError, RunFailed, RunInterrupted
from pipelines.runs.guard import MARKER, TRAINER_ENTRIES, is_finished, remove_run_folder
from pipelines.runs.resume import find_resumable

logger = logging.getLogger(__name__)

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# How a full disk reads where no OSError carries its errno (safetensors' Rust writer, a wrapped error).
DISK_FULL_WORDS = ("No space left on device", "Disk quota exceeded", "StorageFull")
# torch.save's writer reports a failed write without its cause ("unexpected pos 576 vs 534"): on a device with
# less than this free, the cause is taken to be the full disk.
TORCH_WRITE_FAILED = ("unexpected pos", "file write failed")
NEARLY_FULL_BYTES = 64 * 2**20
CAUSE_CHARS = 300  # of an unexpected error's message, in the line; the CLI keeps the whole traceback


class TrainingWatch(TrainerCallback):
    """Where training stood when it stopped (the optimizer step under way, or that training had ended), and what
    the run folder held when training began: any other entry but the Trainer's is the final save's."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.step: int | None = None
        self.ended = False
        self.entries_at_start: set[str] | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        # (A node that does not share the main process's disk has no run folder.)
        self.entries_at_start = {entry.name for entry in self.work_dir.iterdir()} if self.work_dir.is_dir() else set()

    def on_step_begin(self, args, state, control, **kwargs):
        self.step = state.global_step + 1

    def on_train_end(self, args, state, control, **kwargs):
        self.ended = True

    def final_save_entries(self) -> list[Path]:
        """What the run's final save has written so far."""
        if self.entries_at_start is None or not self.work_dir.is_dir():
            return []
        known = self.entries_at_start | {MARKER}
        return [
            entry
            for entry in self.work_dir.iterdir()
            if entry.name not in known and not any(fnmatch.fnmatchcase(entry.name, p) for p in TRAINER_ENTRIES)
        ]

    def where(self) -> str:
        if self.final_save_entries():
            return "while saving the trained run"
        if self.ended:
            return "after training, while scoring the run"
        return "before the first training step" if self.step is None else f"at step {self.step}"


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _disk_full(error: BaseException, folder: Path) -> bool:
    for link in _chain(error):
        if isinstance(link, OSError) and link.errno in DISK_FULL_ERRNOS:
            return True
        if any(words in str(link) for words in DISK_FULL_WORDS):
            return True
    if any(words in str(link) for link in _chain(error) for words in TORCH_WRITE_FAILED):
        existing = next((parent for parent in (folder, *folder.parents) if parent.exists()), None)
        return existing is not None and shutil.disk_usage(existing).free < NEARLY_FULL_BYTES
    return False


def _cause(error: BaseException) -> str:
    text = " ".join(str(error).split())
    text = text if len(text) <= CAUSE_CHARS else f"{text[:CAUSE_CHARS]}..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class RunEnding:
    """The end of a run whose training did not finish, for the folder it trains in (`work_dir`: the run folder,
    or the staging folder of a replacement of `output_dir`). `watch` goes to the Trainer's callbacks."""

    def __init__(self, work_dir: Path, output_dir: Path, replaces: bool, main_process: bool):
        self.work_dir, self.output_dir = work_dir, output_dir
        self.replaces, self.main_process = replaces, main_process
        self.watch = TrainingWatch(work_dir)

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Training, scoring and saving the run; however they stop early, they end here."""
        try:
            yield
        except KeyboardInterrupt as stop:
            raise self._interrupted(stop) from None
        except HubtuneError as error:
            # hubtune's own errors during training (a non-finite loss) already say what happened and what to do.
            if not self._tidy()[1]:
                raise
            raise HubtuneError(f"{error} ({self._removed()})") from error.__cause__
        except Exception as error:
            full = _disk_full(error, self.work_dir)
            saving = self._checkpoint_being_saved()
            where = f"while saving '{saving.name}'" if saving else self.watch.where()
            checkpoint, removed = self._tidy()
            if checkpoint is not None:
                after = f"the last complete checkpoint is '{checkpoint}': continue it with the same command and "
                after += "'training.resume=true'"
            else:
                after = self._removed() if removed else "nothing was saved to resume from: run the same command again"
            if full:
                raise HubtuneError(
                    f"no space left on the device holding '{self.output_dir}' {where}; the partial files were "
                    f"deleted and {after} once space is freed"
                ) from error
            raise RunFailed(f"training failed {where}: {_cause(error)}; {after} once the cause is fixed") from error

    def _checkpoint_being_saved(self) -> Path | None:
        if self.watch.entries_at_start is None:  # training never began: any incomplete one is an earlier crash's
            return None
        _, incomplete = find_resumable(self.work_dir)
        return incomplete[0] if incomplete else None

    def _removed(self) -> str:
        kept = f"; '{self.output_dir}' is as it was" if self.replaces else ""
        return f"no checkpoint was complete, so the run folder was removed{kept}: run the same command again"

    def _tidy(self) -> tuple[Path | None, bool]:
        """Delete what the stop left half-written; returns the last complete checkpoint and whether the whole run
        folder went (it held none)."""
        checkpoint, incomplete = find_resumable(self.work_dir)
        if not self.main_process or not self.work_dir.is_dir() or is_finished(self.work_dir):
            return checkpoint, False
        for partial in incomplete:
            logger.warning("deleting '%s': the run stopped while saving it", partial)
            shutil.rmtree(partial)
        for entry in self.watch.final_save_entries():
            logger.warning("deleting '%s': the run stopped while saving its final results", entry)
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        if checkpoint is not None or not (self.work_dir / MARKER).is_file():
            return checkpoint, False
        try:
            remove_run_folder(self.work_dir)
        except HubtuneError as refused:  # someone put files of their own into it meanwhile: they stay
            logger.warning("the run folder is kept: %s", refused)
            return None, False
        return None, True

    def _interrupted(self, stop: KeyboardInterrupt) -> RunInterrupted:
        """What Ctrl-C or SIGTERM (`stop`, whose exit code and verb the line keeps) leaves: the checkpoints saved
        so far, to resume from; or, before the first one, nothing."""
        exit_code, verb = int(getattr(stop, "exit_code", 130)), str(getattr(stop, "verb", "interrupted"))
        checkpoint, _ = self._tidy()
        if checkpoint is not None:
            return RunInterrupted(
                f"training stopped; its last complete checkpoint is '{checkpoint}'; continue it "
                "with the same command and 'training.resume=true'",
                exit_code=exit_code,
                verb=verb,
            )
        kept = f"'{self.output_dir}' is as it was; " if self.replaces else ""
        return RunInterrupted(
            f"training stopped before its first checkpoint (see 'training.save_strategy'); {kept}"
            "run the same command again to start over",
            exit_code=exit_code,
            verb=verb,
        )
