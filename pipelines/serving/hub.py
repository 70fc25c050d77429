"""Upload a finished run folder to the Hugging Face Hub with its model card (`hub.push`, `hubtune push`)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
from huggingface_hub.utils import filter_repo_objects

from pipelines.config import HubConfig, RecipeConfig
from pipelines.errors import HubtuneError
from pipelines.runs.card import model_card
from pipelines.runs.guard import record_written

logger = logging.getLogger(__name__)

# Checkpoints are for resuming here; the Hub gets the final model, the processor and the results.
UPLOAD_IGNORE = ["checkpoint-*", "training_args.bin", "evaluate_results.json"]
CARD_FILE = "README.md"
MANIFEST_FILE = "upload_manifest.json"


def files_to_upload(run_dir: Path) -> list[str]:
    """The run folder's files that go to the Hub, filtered as `upload_folder` filters them."""
    relative = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())
    return list(filter_repo_objects(relative, ignore_patterns=UPLOAD_IGNORE))


def push_run(
    run_dir: Path, config: RecipeConfig, hub: HubConfig, pipeline_tag: str | None, dry_run: Path | None = None
) -> str:
    """Write the model card, then upload (or, with `dry_run`, copy what would be uploaded and a manifest).

    The token comes from HF_TOKEN or `hf auth login`; it is never written or logged.
    """
    if not hub.repo_id:
        raise HubtuneError("no Hub repository: set 'hub.repo_id' in the recipe or pass --repo-id")
    card = model_card(run_dir, config, pipeline_tag)
    if dry_run is not None:
        # A dry run shows what would go up and leaves the run folder exactly as it was.
        files = sorted({*(name for name in files_to_upload(run_dir) if name != CARD_FILE), CARD_FILE})
        dry_run.mkdir(parents=True, exist_ok=True)
        for name in files:
            (dry_run / name).parent.mkdir(parents=True, exist_ok=True)
            if name != CARD_FILE:
                shutil.copy2(run_dir / name, dry_run / name)
        (dry_run / CARD_FILE).write_text(card)
        manifest = {"repo_id": hub.repo_id, "private": hub.private, "files": files}
        (dry_run / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        logger.info("dry run: %d files for %s in %s", len(files), hub.repo_id, dry_run)
        return str(dry_run)
    # The card is kept in the run folder too: the folder then documents itself as the Hub copy does.
    (run_dir / CARD_FILE).write_text(card)
    record_written(run_dir, [CARD_FILE])
    api = HfApi()
    try:
        url = api.create_repo(hub.repo_id, private=hub.private, exist_ok=True)
        api.upload_folder(
            repo_id=hub.repo_id,
            folder_path=str(run_dir),
            ignore_patterns=UPLOAD_IGNORE,
            commit_message=f"hubtune run {run_dir.name}",
        )
    except (HfHubHTTPError, OfflineModeIsEnabled, OSError) as error:
        raise HubtuneError(
            f"pushing '{run_dir}' to the Hub as '{hub.repo_id}' failed: {error}; "
            "the run folder is complete: retry with `hubtune push RUN`"
        ) from error
    logger.info("pushed %s to %s", run_dir, url)
    return str(url)
