"""What a model card reads: a run folder's scores by evaluation, its per-epoch history, and the base model's card.

Every number a card shows comes from the run's own files (`all_results.json`, `trainer_state.json`, `config.json`),
so the card says what the run measured and nothing a reader could not check against those files.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import hf_hub_download, metadata_load
from huggingface_hub.errors import EntryNotFoundError, HFValidationError

from pipelines.config import RecipeConfig
from pipelines.models.loading import looks_like_path
from pipelines.runs.resume import TRAINER_STATE

logger = logging.getLogger(__name__)

# Measurements of the evaluation itself, not of the model.
SKIPPED_METRICS = ("runtime", "samples_per_second", "steps_per_second", "model_preparation_time")
# How a metric is averaged over classes: `f1_macro` is the Hub's metric `f1`.
AVERAGES = ("macro", "micro", "weighted", "samples")
# The evaluations a run records: role, the prefix of its keys in all_results.json, and how a card names it.
EVALUATIONS = (("validation", "eval", "Validation"), ("test", "test", "Test"))
# Prefixes of tags that mark an entity's position (BIO, BIOES): token classification scores the entity types.
TAG_PREFIXES = ("B-", "I-", "E-", "S-", "L-", "U-")


@dataclass
class Evaluation:
    """One evaluation of the finished model (validation or test): its split and scores."""

    role: str  # validation / test
    title: str  # how the card names it
    split: str  # the data split it read
    examples: int | None
    metrics: dict[str, Any]  # numbers over the whole split, loss first
    per_class: dict[str, dict[str, Any]] = field(default_factory=dict)  # class -> metric -> value

    @property
    def scores(self) -> dict[str, Any]:
        """The metrics that describe the model's quality: all but the loss (the Hub's metrics and model-index)."""
        return {name: value for name, value in self.metrics.items() if name != "loss"}


def hub_checkpoint(checkpoint: str) -> str | None:
    """The Hub id of a checkpoint, or None for a local folder or file (which no Hub reader can open)."""
    is_local = looks_like_path(checkpoint) or Path(checkpoint).expanduser().exists()
    return None if is_local else checkpoint.removeprefix("hf-hub:")


def metric_id(name: str) -> str:
    """The Hub metric a hubtune metric name measures: `f1_macro` -> `f1`."""
    base, _, average = name.rpartition("_")
    return base if base and average in AVERAGES else name


def model_labels(run_dir: Path, config: RecipeConfig) -> list[str]:
    """The run model's labels in id order: the recipe's, or its config.json's `id2label` unless that holds only
    transformers' placeholder names (LABEL_0, ...: a regression target, a transcriber)."""
    if getattr(config.data, "labels", None):
        return list(config.data.labels)  # type: ignore[attr-defined]
    config_file = run_dir / "config.json"
    id2label = (json.loads(config_file.read_text()).get("id2label") or {}) if config_file.is_file() else {}
    labels = [str(id2label[key]) for key in sorted(id2label, key=int)]
    return [] if labels == [f"LABEL_{i}" for i in range(len(labels))] else labels


def class_names(labels: list[str]) -> list[str]:
    """The names per-class metrics end with: the labels and, for entity tags (B-PER), the entity types (PER)."""
    return sorted({label.removeprefix(prefix) for label in labels for prefix in ("", *TAG_PREFIXES)} - {""})


def _is_score(name: str, value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and name != "samples"
        and not name.endswith(SKIPPED_METRICS)
    )


def _loss_first(item: tuple[str, Any]) -> tuple[bool, str]:
    return not item[0].endswith("_loss"), item[0]


def _split_by_class(metrics: dict[str, Any], classes: list[str]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(metrics over the whole split, per-class metrics by class) of one evaluation's metrics."""
    overall: dict[str, Any] = {}
    per_class: dict[str, dict[str, Any]] = {}
    # The longest class name first: of `f1_B-LOC` and `f1_LOC`, a metric belongs to the name it ends with whole.
    by_length = sorted(classes, key=len, reverse=True)
    for name, value in metrics.items():
        owner = next((label for label in by_length if name.endswith(f"_{label}") and len(name) > len(label) + 1), None)
        if owner is None:
            overall[name] = value
        else:
            per_class.setdefault(owner, {})[name.removesuffix(f"_{owner}")] = value
    return overall, per_class


def evaluations(results: dict[str, Any], config: RecipeConfig, classes: list[str]) -> list[Evaluation]:
    """The run's evaluations of the finished model, as all_results.json records them."""
    splits = (results.get("training_setup") or {}).get("splits") or {
        "validation": config.data.validation_split,
        "test": config.data.test_split,
    }
    found = []
    for role, prefix, title in EVALUATIONS:
        metrics = {
            key.removeprefix(f"{prefix}_"): value
            for key, value in sorted(results.items(), key=_loss_first)
            if key.startswith(f"{prefix}_") and _is_score(key.removeprefix(f"{prefix}_"), value)
        }
        if metrics:
            overall, per_class = _split_by_class(metrics, classes)
            examples = results.get(f"{prefix}_samples")
            found.append(Evaluation(role, title, str(splits.get(role) or role), examples, overall, per_class))
    return found


def _cell(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def epoch_table(run_dir: Path, classes: list[str]) -> list[dict[str, str]]:
    """One row per evaluation during training (trainer_state.json's log history): its epoch and step, the last
    training loss logged since the evaluation before, and the validation loss and scores (per class left out)."""
    state_file = run_dir / TRAINER_STATE
    if not state_file.is_file():
        return []
    history = json.loads(state_file.read_text()).get("log_history", [])
    rows, losses, last_step = [], [], -1
    for entry in history:
        if "loss" in entry:
            losses.append((entry.get("step", 0), entry["loss"]))
        scores = {
            key.removeprefix("eval_"): value
            for key, value in sorted(entry.items(), key=_loss_first)
            if key.startswith("eval_") and _is_score(key.removeprefix("eval_"), value)
        }
        if not scores:
            continue
        step = entry.get("step", 0)
        since = [loss for loss_step, loss in losses if last_step < loss_step <= step]
        overall, _ = _split_by_class(scores, classes)
        row = {"epoch": f"{entry.get('epoch', 0):g}", "step": str(step)}
        row["training loss"] = _cell(float(since[-1])) if since else "no log"
        row.update({("validation loss" if name == "loss" else name): _cell(value) for name, value in overall.items()})
        rows.append(row)
        last_step = step
    return rows


def base_card_metadata(config: RecipeConfig) -> dict[str, Any]:
    """The metadata of the base model's own card: a local checkpoint folder's README.md, or the Hub card (online,
    or from the local Hub cache offline). Empty where there is none or it cannot be read here."""
    if config.model.from_scratch:
        return {}  # random weights: nothing of the base model's but its architecture
    checkpoint = Path(config.model.checkpoint).expanduser()
    hub_id = hub_checkpoint(config.model.checkpoint)
    try:
        if checkpoint.is_dir() or hub_id is None:
            readme = checkpoint / "README.md"
            return (metadata_load(readme) or {}) if readme.is_file() else {}
        return metadata_load(hf_hub_download(hub_id, "README.md", revision=config.model.revision)) or {}
    except (OSError, EntryNotFoundError, HFValidationError, yaml.YAMLError) as error:
        logger.info("the base model's card cannot be read here (%s): its license stays out of this card", error)
        return {}
