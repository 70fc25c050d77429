"""The run-folder guard: hubtune replaces or deletes only folders it wrote itself, and a new run replaces an
old one only once it has finished.

Every run writes a marker file first. When the run finishes, the marker lists the folder's entries; hubtune
commands that add files later (`evaluate`, `push`) add theirs. A folder is hubtune's to replace when it holds
the marker and nothing but what the marker lists and what the Trainer writes while training. The working directory, its parents, the home folder and filesystem roots are never
replaced, whatever they hold.

`overwrite=true` trains in a hidden sibling folder (`.NAME.hubtune-new`) and swaps it in at the end, so a run
that fails or is interrupted leaves the old run as it was.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import shutil
from pathlib import Path

from pipelines.errors import HubtuneError, require_path
from pipelines.runs.folder import write_json
from pipelines.runs.resume import TRAINER_STATE

logger = logging.getLogger(__name__)

MARKER = ".hubtune-run"
# What the Trainer (checkpoints, TensorBoard's default `runs/`), trackio and LP-FT's probe stage write into a
# run folder while it trains: a run that never finished has not listed them yet, and a resumed run adds more.
TRAINER_ENTRIES = ("checkpoint-*", "tmp-checkpoint-*", "runs", "trackio", "linear_probe")
FOREIGN_SHOWN = 3


def staging_dir(target: Path) -> Path:
    """Where a run that replaces `target` is built."""
    return target.parent / f".{target.name}.hubtune-new"


def _retired_dir(target: Path) -> Path:
    return target.parent / f".{target.name}.hubtune-old"


def _read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MARKER).read_text())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}  # a marker cut short by a crash: an unfinished run


def _write_marker(folder: Path, marker: dict) -> None:
    partial = folder / f"{MARKER}.partial"
    write_json(partial, marker)
    partial.replace(folder / MARKER)


def _protected_because(folder: Path) -> str | None:
    folder = folder.resolve()
    if folder.parent == folder:
        return "it is a filesystem root"
    if Path.cwd().resolve().is_relative_to(folder):
        return "it is the working directory or one of its parents"
    if Path.home().resolve().is_relative_to(folder):
        return "it is the home folder or one of its parents"
    return None


def foreign_entries(folder: Path) -> list[str]:
    """Entries of a hubtune run folder that its marker does not account for (a user's notes, say)."""
    marker = _read_marker(folder) or {}
    known = set(marker.get("files", [])) | {MARKER}
    return sorted(
        entry.name
        for entry in folder.iterdir()
        if entry.name not in known and not any(fnmatch.fnmatchcase(entry.name, pattern) for pattern in TRAINER_ENTRIES)
    )


def check_usable(folder: Path, key: str = "output_dir") -> None:
    """A run folder must be a folder (not a file) of its own: never the working directory, home, a root or
    their parents."""
    if folder.exists() and not folder.is_dir():
        raise HubtuneError(f"'{key}' '{folder}' is a file, not a folder; choose another '{key}'")
    reason = _protected_because(folder)
    if reason is not None:
        raise HubtuneError(
            f"refusing to use '{folder}' ('{key}') as a run folder: {reason}; choose a run folder of its own"
        )


def check_replaceable(folder: Path, key: str = "output_dir") -> None:
    """Refuse, naming the folder (and `key`, the recipe key that chose it), unless hubtune may replace it."""
    if not folder.exists():
        return
    check_usable(folder, key)
    if not any(folder.iterdir()):
        return
    if _read_marker(folder) is None:
        raise HubtuneError(
            f"refusing to replace '{folder}' ('{key}'): hubtune did not write it (it has no "
            f"{MARKER}); choose another '{key}' or move the folder away yourself"
        )
    foreign = foreign_entries(folder)
    if foreign:
        shown = ", ".join(f"'{folder / name}'" for name in foreign[:FOREIGN_SHOWN])
        more = f" and {len(foreign) - FOREIGN_SHOWN} more" if len(foreign) > FOREIGN_SHOWN else ""
        raise HubtuneError(
            f"refusing to replace run folder '{folder}': it holds {shown}{more}, which hubtune did "
            "not write; move them out first"
        )


def remove_run_folder(folder: Path, key: str = "output_dir") -> None:
    """Delete a folder hubtune wrote (checked by `check_replaceable`)."""
    check_replaceable(folder, key)
    if folder.exists():
        shutil.rmtree(folder)


def start_run(folder: Path) -> None:
    """Create the folder a run trains in and mark it as hubtune's before anything else is written."""
    folder.mkdir(parents=True, exist_ok=True)
    if _read_marker(folder) is None:
        _write_marker(folder, {"finished": False, "files": []})


def is_finished(folder: Path) -> bool:
    """Whether `folder` holds a run that hubtune finished (its marker says so)."""
    marker = _read_marker(folder)
    return bool(marker and marker.get("finished"))


def finish_run(folder: Path) -> None:
    """Record everything the finished run wrote, so that a later overwrite knows it is all hubtune's."""
    _write_marker(folder, {"finished": True, "files": sorted(e.name for e in folder.iterdir() if e.name != MARKER)})


def check_output_folder(folder: Path, what: str, run_dir: Path) -> None:
    """A folder a command writes beside a run (`what`: export's, --draw's, --dry-run's) must be a folder, and lie
    outside the run folder: there its files would be neither the run's (its marker does not list them, so replacing
    the run would be refused) nor safe from being replaced with it."""
    if folder.exists():
        require_path(folder, "folder", f"{what} folder")
    out, run = folder.resolve(), run_dir.resolve()
    if out == run or run in out.parents:
        raise HubtuneError(f"{what} folder '{folder}' is inside the run folder '{run_dir}'; give a folder outside it")


def written_by_hubtune(folder: Path) -> set[str]:
    """The entries of `folder` that hubtune recorded writing (its marker's list); none where it has no marker."""
    return set((_read_marker(folder) or {}).get("files", []))


def record_outputs(folder: Path, names: list[str]) -> None:
    """Record `names` as written by hubtune into `folder`, a folder that may hold a user's files too (drawings among
    their images): the marker is made where there is none, so that a later --overwrite replaces these and only
    these."""
    if _read_marker(folder) is None:
        _write_marker(folder, {"finished": False, "files": []})
    record_written(folder, names)


def record_written(folder: Path, names: list[str]) -> None:
    """Add files a later hubtune command (evaluate, push) wrote into a finished run folder to its marker."""
    marker = _read_marker(folder)
    if marker is None:
        return  # not a run folder hubtune marked (written before markers existed): nothing to keep up to date
    marker["files"] = sorted(set(marker.get("files", [])) | set(names))
    _write_marker(folder, marker)


def recover_interrupted_swap(target: Path) -> None:
    """A crash between the two renames of `swap_in` leaves the old run retired and no run in place: put it back."""
    retired = _retired_dir(target)
    if retired.is_dir() and not target.exists():
        retired.rename(target)
        logger.warning("restored '%s' from an interrupted replacement", target)


def _retarget_best_checkpoint(staging: Path, target: Path) -> None:
    """The Trainer records its best checkpoint by path; after the swap that path lies under `target`, where a
    resumed run must find it (the Trainer forgets a best checkpoint whose folder is gone)."""
    for state_file in [target / TRAINER_STATE, *target.glob(f"checkpoint-*/{TRAINER_STATE}")]:
        if not state_file.is_file():
            continue
        state = json.loads(state_file.read_text())
        best = state.get("best_model_checkpoint")
        if best and Path(best).parent == staging:
            state["best_model_checkpoint"] = str(target / Path(best).name)
            write_json(state_file, state)


def swap_in(staging: Path, target: Path) -> None:
    """Put the finished run in `staging` at `target`; the old run there is deleted only after the swap."""
    if target.exists():
        retired = _retired_dir(target)
        if retired.exists():
            remove_run_folder(retired)
        target.rename(retired)
        staging.rename(target)
        shutil.rmtree(retired)
        logger.info("replaced the earlier run in '%s'", target)
    else:
        staging.rename(target)
    _retarget_best_checkpoint(staging, target)
