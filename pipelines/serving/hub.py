"""Upload a finished run folder to the Hugging Face Hub with its model card (`hub.push`, `hubtune push`)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

from pipelines.config import HubConfig, RecipeConfig
from pipelines.errors import HubtuneError
from pipelines.hub_access import offline_reason
from pipelines.runs.card import model_card
from pipelines.runs.guard import check_output_folder, record_written
from pipelines.serving.card_example import widget_text
from pipelines.serving.upload import UploadFile, plan_upload
from pipelines.tasks import get_task

logger = logging.getLogger(__name__)

CARD_FILE = "README.md"
MANIFEST_FILE = "upload_manifest.json"


@dataclass(frozen=True)
class PushTarget:
    """Where an upload goes: the repository, and the branch, commit message and pull request of its commit."""

    hub: HubConfig
    revision: str | None = None  # a branch, made when missing; None: the repository's main branch
    commit_message: str | None = None
    create_pr: bool = False


@dataclass
class PushResult:
    where: str  # the repository's (or pull request's) URL, or the dry run's folder
    files: list[str] = field(default_factory=list)


def _check_dry_run_folder(out_dir: Path, run_dir: Path) -> None:
    """A dry run writes a folder of its own: never into the run, never over files already there."""
    check_output_folder(out_dir, "--dry-run", run_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise HubtuneError(f"--dry-run folder '{out_dir}' already exists and is not empty; give a new or empty folder")


def _write_dry_run(files: list[UploadFile], target: PushTarget, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for file in files:
        destination = out_dir / file.path_in_repo
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(file.data())
    manifest = {
        "repo_id": target.hub.repo_id,
        "private": target.hub.private,
        "revision": target.revision,
        "create_pr": target.create_pr,
        "files": [file.path_in_repo for file in files],
    }
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")


def push_run(run_dir: Path, config: RecipeConfig, target: PushTarget, dry_run: Path | None = None) -> PushResult:
    """Upload the run folder's files (`pipelines.serving.upload`) with a new model card in one commit; with
    `dry_run`, write exactly those files and a manifest there instead. The run folder is written only after a
    successful upload (the card, kept so the folder documents itself as its Hub copy does).

    The token comes from HF_TOKEN or `hf auth login`; it is never written or logged.
    """
    repo_id = target.hub.repo_id
    if not repo_id:
        raise HubtuneError("no Hub repository: set 'hub.repo_id' in the recipe or pass --repo-id")
    card = model_card(run_dir, config, get_task(config.task).pipeline_tag, widget_text(config))
    files = plan_upload(run_dir, card, CARD_FILE)
    names = [file.path_in_repo for file in files]
    if dry_run is not None:
        _check_dry_run_folder(dry_run, run_dir)
        _write_dry_run(files, target, dry_run)
        logger.info("dry run: %d files for %s in %s", len(files), repo_id, dry_run)
        return PushResult(str(dry_run), names)
    api = HfApi()
    operations = [
        CommitOperationAdd(file.path_in_repo, file.content if file.content is not None else str(file.source))
        for file in files
    ]
    try:
        url = api.create_repo(repo_id, private=target.hub.private, exist_ok=True)
        if target.revision and not target.create_pr:
            api.create_branch(repo_id, branch=target.revision, exist_ok=True)
        commit = api.create_commit(
            repo_id,
            operations,
            commit_message=target.commit_message or f"hubtune run {run_dir.name}",
            revision=target.revision,
            create_pr=target.create_pr,
        )
    except (HfHubHTTPError, OfflineModeIsEnabled, OSError) as error:
        reason = offline_reason()
        why = f"it needs the Hub, and {reason}" if isinstance(error, OfflineModeIsEnabled) and reason else error
        raise HubtuneError(
            f"pushing '{run_dir}' to the Hub as '{repo_id}' failed: {why}; the run folder is unchanged: retry "
            "with `hubtune push RUN`"
        ) from error
    (run_dir / CARD_FILE).write_text(card)
    record_written(run_dir, [CARD_FILE])
    where = str(getattr(commit, "pr_url", None) or url)
    logger.info("pushed %s to %s (%d files)", run_dir, where, len(files))
    return PushResult(where, names)
