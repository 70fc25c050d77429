"""Where a run trains: its run folder, or a staging folder that replaces it at the end, and what it resumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipelines.config import RecipeConfig
from pipelines.errors import HubtuneError
from pipelines.runs.folder import RESULTS_FILE
from pipelines.runs.guard import check_replaceable, check_usable, is_finished, staging_dir
from pipelines.runs.resume import find_resumable


@dataclass
class RunPlan:
    """Where a run trains (the run folder, or a staging folder swapped in at the end) and what it resumes."""

    work_dir: Path
    replaces: bool  # work_dir is a staging folder that replaces output_dir once the run has finished
    checkpoint: str | None = None
    incomplete: list[Path] = field(default_factory=list)  # half-written checkpoints newer than `checkpoint`


def plan_run(config: RecipeConfig, target: Path) -> RunPlan:
    """Where the run of `config` (its run folder `target`) trains and from which checkpoint; refuses, before anything
    is written, a run that would replace or resume something it must not."""
    check_usable(target)
    staging = staging_dir(target)
    if config.training.get("resume", False):
        if is_finished(target) and not staging.exists():
            raise HubtuneError(
                f"'training.resume' is true but '{target}' holds a finished run (its results are in "
                f"{RESULTS_FILE}): there is nothing to resume; set 'overwrite=true' to train it again"
            )
        # An interrupted replacement (overwrite=true) is the newest run: resume that one, then swap it in.
        for folder, replaces in ((staging, True), (target, False)):
            checkpoint, incomplete = find_resumable(folder)
            if checkpoint is not None:
                return RunPlan(folder, replaces, str(checkpoint), incomplete)
            if replaces and staging.exists():
                raise HubtuneError(
                    f"the interrupted replacement of '{target}' saved no complete checkpoint to "
                    "resume from; run it again with 'overwrite=true'"
                )
        raise HubtuneError(f"'training.resume' is true but '{target}' holds no complete checkpoint-* folder")
    if target.is_dir() and any(target.iterdir()):
        if not config.overwrite:
            raise HubtuneError(
                f"run folder '{target}' already exists; set 'training.resume=true' to continue it, "
                "'overwrite=true' to replace it, or another 'output_dir'"
            )
        check_replaceable(target)
        return RunPlan(staging, replaces=True)
    return RunPlan(target, replaces=False)
