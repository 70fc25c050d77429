"""What a run folder puts on the Hub: its files minus hubtune's bookkeeping, with no path of this machine.

A run folder is written for this machine: `recipe.yaml` holds absolute data paths (so `hubtune evaluate RUN`
works from any directory), `trainer_state.json` the path of the best checkpoint, an adapter's config the folder
of a local base model. None of that means anything on the Hub and some of it says more about the machine than
its owner may want. The upload therefore sends the folder's own files where they are clean and rewritten copies
where they are not: a local path becomes its last part (a data file by its file name), a Hub id stays as it is.
The run folder itself is never written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub.utils import filter_repo_objects

from pipelines.runs.folder import RECIPE_FILE
from pipelines.runs.guard import MARKER, TRAINER_ENTRIES

# hubtune's own bookkeeping, what only resuming here needs, and scores of other data than the recipe's.
INTERNAL_PATTERNS = [
    MARKER,
    # Tracker logs stay here too: TensorBoard's event files hold the training arguments with this machine's paths
    # and host name, in a binary format that cannot be cleaned the way a JSON file is.
    *(f"{entry}/*" for entry in TRAINER_ENTRIES),
    *(entry for entry in TRAINER_ENTRIES if "*" in entry),
    "*.partial",
    "training_args.bin",  # a pickle of TrainingArguments: a path-laden object nobody should unpickle
    "evaluate_results.json",
    "evaluate_data_results.json",
]
# Files read as text and checked for local paths; everything else (weights, images, event files) goes as it is.
TEXT_SUFFIXES = (".json", ".yaml", ".yml", ".md", ".txt", ".jinja")
# A tokenizer's vocabulary: tokens and BPE merges such as "/", "//" or "~ ~" look like paths and are not; changed,
# the uploaded tokenizer would differ from the one the model was trained with. They hold no path of this machine.
VOCABULARY_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "merges.txt", "added_tokens.json")


@dataclass(frozen=True)
class UploadFile:
    """One file of the upload: taken from `source` as it is, or as `content` (a rewritten copy)."""

    path_in_repo: str
    source: Path
    content: bytes | None = None

    def data(self) -> bytes:
        return self.content if self.content is not None else self.source.read_bytes()


def _is_local_path(text: str) -> bool:
    return text.startswith(("/", "~/")) or (len(text) > 2 and text[1] == ":" and text[2] in "\\/")


def _without_local_paths(value: Any) -> Any:
    """`value` with every string that is an absolute local path replaced by its last part."""
    if isinstance(value, dict):
        return {key: _without_local_paths(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_local_paths(item) for item in value]
    if isinstance(value, str) and _is_local_path(value):
        return Path(value.replace("\\", "/")).expanduser().name
    return value


def _portable_recipe(tree: dict[str, Any]) -> dict[str, Any]:
    """The run's recipe as a reader of the Hub copy can use it: data by file name, no folder of this machine."""
    tree = _without_local_paths(tree)
    tree["output_dir"] = None  # the run folder of this machine; a retrain writes runs/<name>
    if isinstance(tree.get("adapt"), dict) and "feature_cache_dir" in tree["adapt"]:
        tree["adapt"]["feature_cache_dir"] = None
    return tree


def _clean_copy(path: Path, name: str, local_texts: list[str]) -> bytes | None:
    """A rewritten copy of a text file that holds a local path, or None when the file goes as it is."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if name == RECIPE_FILE:
        return yaml.safe_dump(_portable_recipe(yaml.safe_load(text) or {}), sort_keys=False).encode()
    if path.suffix == ".json":
        try:
            values = json.loads(text)
        except json.JSONDecodeError:
            values = None
        if values is not None:
            # Any value may be a path (a base model's folder in an adapter's config, the best checkpoint in
            # trainer_state.json), wherever on this machine it points.
            clean = _without_local_paths(values)
            return None if clean == values else (json.dumps(clean, indent=2) + "\n").encode()
    if not any(local in text for local in local_texts):
        return None
    for local in local_texts:  # a text that is not JSON: the path's last part in its place
        text = text.replace(local, Path(local).name)
    return text.encode()


def plan_upload(run_dir: Path, card: str, card_name: str) -> list[UploadFile]:
    """Every file of the upload, in path order: the run folder's files that go up, cleaned, and the card."""
    run_dir = run_dir.resolve()
    # The folders whose mention marks a local path in a file that is not JSON (a chat template, a text log).
    local_texts = sorted({str(run_dir), str(run_dir.parent), str(Path.home())}, key=len, reverse=True)
    names = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())
    files = [
        UploadFile(
            name,
            run_dir / name,
            _clean_copy(run_dir / name, name, local_texts)
            if name.endswith(TEXT_SUFFIXES) and Path(name).name not in VOCABULARY_FILES
            else None,
        )
        for name in filter_repo_objects(names, ignore_patterns=INTERNAL_PATTERNS)
        if name != card_name
    ]
    files.append(UploadFile(card_name, run_dir / card_name, card.encode()))
    return sorted(files, key=lambda file: file.path_in_repo)
