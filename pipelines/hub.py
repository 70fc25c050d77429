"""Upload a finished run folder to the Hugging Face Hub (`hub.push: true`)."""

from __future__ import annotations

import logging
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

from pipelines.config import HubConfig
from pipelines.errors import HubtuneError

logger = logging.getLogger(__name__)

# Checkpoints are for resuming here; the Hub gets the final model, the processor and the results.
UPLOAD_IGNORE = ["checkpoint-*", "checkpoint-*/**", "training_args.bin"]


def push_run(run_dir: Path, hub: HubConfig) -> str:
    """Create (or reuse) `hub.repo_id` and upload the run folder; the token comes from the env or `hf auth login`."""
    api = HfApi()
    try:
        url = api.create_repo(hub.repo_id, private=hub.private, exist_ok=True)
        api.upload_folder(repo_id=hub.repo_id, folder_path=str(run_dir), ignore_patterns=UPLOAD_IGNORE,
                          commit_message=f"hubtune run {run_dir.name}")
    except (HfHubHTTPError, OfflineModeIsEnabled, OSError) as error:
        raise HubtuneError(f"pushing '{run_dir}' to the Hub as '{hub.repo_id}' failed: {error}; "
                           "the run folder is complete, push it later with the Hub client") from error
    logger.info("pushed %s to %s", run_dir, url)
    return str(url)
