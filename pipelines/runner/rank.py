"""`hubtune rank RECIPE --checkpoints A B C`: rank candidate checkpoints for a recipe before training anything.

Each candidate becomes the recipe's task model (the normal loading: `Task.build_model`), frozen, and makes one
forward pass over up to `samples` training examples (pipelines/runner/rank_features.py). Its features are scored
with LogME, and where the checkpoint has a trained head of the task's kind, its predictions with LEEP and NCE
(pipelines/runner/transferability.py). A candidate that cannot be scored (nothing at that path or id, not a model, a
model for another kind of input) gets one line and the others still rank.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from transformers import AutoConfig

from pipelines.adapt.strategies.peft import has_default_targets
from pipelines.compat import auto_class_builds
from pipelines.config import RecipeConfig, load_recipe_config
from pipelines.data.splits import Splits
from pipelines.errors import HubtuneError
from pipelines.models.loading import fit_embeddings, from_pretrained, load_with_own_head, own_head_classes
from pipelines.runner.rank_features import PassResult, forward_pass
from pipelines.runner.rank_suggestion import Suggestion, suggest
from pipelines.runner.recipe import Recipe
from pipelines.runner.transferability import leep, logme, nce, one_hot
from pipelines.runs.folder import write_json
from pipelines.runs.guard import check_replaceable, finish_run, record_written, start_run
from pipelines.tasks import PreparedData, Task, get_task
from pipelines.tasks.classifier import LabelHeadMixin, problem_type_of
from pipelines.tasks.text_classification import TextClassification
from pipelines.tasks.token_classification import TokenClassification

logger = logging.getLogger(__name__)

RANK_FILE, REPORT_FILE = "rank.json", "rank.md"
DEFAULT_SAMPLES = 500
BATCH_SIZE = 32


class CandidatesFailed(HubtuneError):
    """Some candidates could not be scored (each is named in the report); the others were ranked. Exit code 3, apart
    from 2 (bad input: no candidate could even be tried) and 1 (an unexpected failure)."""

    exit_code = 3


@dataclass
class CandidateScore:
    """One ranked candidate. `logme`: LogME of its features on the recipe's labels (higher: better). `leep`, `nce`:
    from its own trained head's predictions (None without one, or for multi-label and regression recipes).
    `logme_floor`: LogME of the label frequencies alone (a constant feature), what features that know nothing about
    the inputs score. `examples`: the rows scored (tokens for token classification); `classes`: the recipe's classes
    (labels, or 1 for regression); `seconds`: loading, forward pass and scoring."""

    checkpoint: str
    logme: float
    leep: float | None
    nce: float | None
    feature_dim: int
    examples: int
    seconds: float
    feature_cache: bool
    source_classes: int | None
    classes: int
    logme_floor: float
    lora_defaults: bool  # PEFT knows the modules LoRA adapts in this architecture (rank_suggestion)


@dataclass
class CandidateFailure:
    checkpoint: str
    reason: str


@dataclass
class RankReport:
    """What `rank` found: `ranked` best first (by LogME), `failed` one line each, and the report folder."""

    recipe: str
    task: str
    samples: int
    train_examples: int  # rows of the recipe's training split
    ranked: list[CandidateScore] = field(default_factory=list)
    failed: list[CandidateFailure] = field(default_factory=list)
    suggestion: Suggestion | None = None
    out_dir: Path | None = None

    @property
    def best(self) -> CandidateScore | None:
        return self.ranked[0] if self.ranked else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe,
            "task": self.task,
            "samples": self.samples,
            "train_examples": self.train_examples,
            "ranked": [asdict(score) for score in self.ranked],
            "failed": [asdict(failure) for failure in self.failed],
            "suggestion": asdict(self.suggestion) if self.suggestion else None,
            "out_dir": str(self.out_dir) if self.out_dir else None,
        }

    def table(self) -> str:
        """The ranking as a Markdown table (what rank.md holds and the CLI prints)."""
        lines = [
            "| rank | checkpoint | LogME | LEEP | NCE | feature dim | examples | seconds |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for place, score in enumerate(self.ranked, 1):
            lines.append(
                f"| {place} | {score.checkpoint} | {score.logme:.4f} | {_optional(score.leep)} | "
                f"{_optional(score.nce)} | {score.feature_dim} | {score.examples} | {score.seconds:.1f} |"
            )
        lines += [f"\n**Not scored:** {failure.checkpoint}: {failure.reason}" for failure in self.failed]
        if self.suggestion is not None:
            lines.append(f"\n{self.suggestion.line()}")
        return "\n".join(lines)


def _optional(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _check_recipe(config: RecipeConfig, task: Task, samples: int) -> None:
    if samples < 2:
        raise HubtuneError(f"--samples must be at least 2 (LogME fits a model to them), got {samples}")
    if not isinstance(task, LabelHeadMixin):
        raise HubtuneError(
            f"rank scores the features a label head reads; task '{config.task}' has no label head (text, image and "
            "audio classification and token classification have)"
        )
    if config.data.is_streamed():
        raise HubtuneError(
            "rank reads a random subset of the training split, which a stream ('data.streaming') has not"
        )


def _candidate_config(base: RecipeConfig, checkpoint: str, samples: int) -> RecipeConfig:
    """The recipe on `checkpoint`, capped at `samples` training examples as `data.max_train_samples` caps them (so
    that a training run with the same cap reads the same examples, and the same feature-cache entry)."""
    values = base.to_dict()
    cap = base.data.max_train_samples
    values["model"] = {**values.get("model", {}), "checkpoint": checkpoint, "from_scratch": False}
    values["data"] = {**values.get("data", {}), "max_train_samples": min(samples, cap) if cap else samples}
    # Features of the images themselves, not of random crops; token sequences one per row, as the pass reads them.
    for key in ("image_augment", "padding_free"):
        if key in values["data"]:
            values["data"][key] = False
    # A frozen backbone with cached features: what rank measures. Audio clips longer than the task's limit then get
    # one window each, drawn once from the seed (the same as such a training run's), instead of a new one per read.
    # QLoRA's 4-bit loading is no part of ranking.
    values["adapt"] = {
        "strategy": "freeze_backbone",
        "feature_cache": True,
        "feature_cache_dir": base.adapt.feature_cache_dir,
    }
    return Recipe(load_recipe_config(values=values)).config  # paths resolved as a run resolves them


def _check_modality(task: Task, config: RecipeConfig) -> None:
    """A checkpoint of another kind of input (an image model for a text recipe) is named as such before its
    processor is looked for."""
    found = from_pretrained(AutoConfig, config.model)
    auto_model = cast(LabelHeadMixin, task).auto_model
    if not auto_class_builds(auto_model, found):
        raise HubtuneError(
            f"'{config.model.checkpoint}' is a {found.model_type} model, which has no {auto_model.__name__} head: "
            f"it is not a model for {config.task}'s input"
        )


def _source_model(task: Task, config: RecipeConfig, prepared: PreparedData) -> Any | None:
    """The checkpoint with its own trained head of the task's kind, for LEEP and NCE; None without one, or where the
    recipe's labels are not classes (multi-label, regression)."""
    head = cast(LabelHeadMixin, task)
    if problem_type_of(config) != "single_label" or not own_head_classes(config.model, head.head_suffix):
        return None
    source = load_with_own_head(head.auto_model, config.model)
    return (
        fit_embeddings(source, prepared.processor)
        if isinstance(task, (TextClassification, TokenClassification))
        else source
    )


def _train_split(task: Task, config: RecipeConfig) -> Splits:
    """The recipe's training split alone, as a run trains on it (less what it carves out for validation)."""
    carved = config.data.validation_fraction is not None
    splits = task.read_splits(("train", "validation") if carved else ("train",))
    if carved:
        del splits.datasets["validation"], splits.sources["validation"]
    return splits


def _prepare(task: Task, config: RecipeConfig) -> PreparedData:
    splits = _train_split(task, config)
    return task.prepare(splits, task.fit_processor(splits, task.load_processor()))


def _score(
    checkpoint: str, result: PassResult, classes: int, config: RecipeConfig, seconds: float, model_type: str
) -> CandidateScore:
    class_ids = problem_type_of(config) == "single_label"
    targets = one_hot(result.labels, classes) if class_ids else result.labels
    floor = logme(np.ones((len(targets), 1)), targets)
    source = result.source if class_ids else None
    return CandidateScore(
        checkpoint=checkpoint,
        logme=logme(result.features, targets),
        leep=None if source is None else leep(source, result.labels),
        nce=None if source is None else nce(source, result.labels),
        feature_dim=result.features.shape[1],
        examples=len(result.features),
        seconds=seconds,
        feature_cache=result.cached,
        source_classes=result.source.shape[1] if result.source is not None else None,
        classes=classes,
        logme_floor=floor,
        lora_defaults=has_default_targets(model_type),
    )


def rank_candidate(base: RecipeConfig, checkpoint: str, samples: int) -> CandidateScore:
    """One candidate's scores; a `HubtuneError` names what makes it unusable."""
    started = time.perf_counter()
    config = _candidate_config(base, checkpoint, samples)
    task = get_task(config.task)(config)
    _check_modality(task, config)
    prepared = _prepare(task, config)
    model = task.build_model(prepared)
    task.check_model(model, prepared)
    # The checkpoint's own head sits on the same backbone: where it has one, it makes the pass, so that one pass
    # gives the features and its predictions.
    source = _source_model(task, config, prepared)
    if source is not None:
        del model
        model = source
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch_size = int(config.training.get("per_device_eval_batch_size", BATCH_SIZE))
    result = forward_pass(task, model.to(device), prepared, batch_size, with_source=source is not None)
    classes = len(prepared.label_names)  # a regression's one target column is named after it
    model_type = str(getattr(model.config, "model_type", ""))
    return _score(config.model.checkpoint, result, classes, config, time.perf_counter() - started, model_type)


def rank(
    recipe: str | Path | RecipeConfig,
    checkpoints: Sequence[str],
    samples: int = DEFAULT_SAMPLES,
    overrides: Sequence[str] = (),
    out_dir: str | Path | None = None,
) -> RankReport:
    """Rank `checkpoints` for `recipe` (a recipe file, or a `RecipeConfig`) from one frozen forward pass each over
    up to `samples` training examples; writes rank.json and rank.md into `out_dir` (default runs/<name>-rank).

    Candidates that cannot be scored are in `RankReport.failed`, each with its one-line reason; nothing is raised
    for them."""
    if isinstance(recipe, RecipeConfig):
        base = load_recipe_config(values=recipe.to_dict(), overrides=overrides)
    else:
        base = load_recipe_config(recipe, overrides)
    if not checkpoints:
        raise HubtuneError("rank needs at least one candidate checkpoint (--checkpoints A B ...)")
    task = get_task(base.task)(base)
    _check_recipe(base, task, samples)
    folder = Path(out_dir) if out_dir else Path("runs") / f"{base.name}-rank"
    check_replaceable(folder, "--out")
    rows = len(_train_split(task, base)["train"])
    report = RankReport(base.name, base.task, samples, rows, out_dir=folder)
    for checkpoint in checkpoints:
        logger.info("rank: scoring %s", checkpoint)
        try:
            report.ranked.append(rank_candidate(base, checkpoint, samples))
        except HubtuneError as error:
            logger.warning("rank: %s cannot be scored: %s", checkpoint, error)
            report.failed.append(CandidateFailure(checkpoint, str(error)))
    report.ranked.sort(key=lambda score: score.logme, reverse=True)
    best = report.best
    if best is not None:
        # Labelled examples per class in the whole training split (for tokens: as many per sentence as scored).
        per_class = best.examples / min(samples, rows) * rows / best.classes
        report.suggestion = suggest(best.checkpoint, best.logme - best.logme_floor, per_class, best.lora_defaults)
        logger.info("%s", report.suggestion.line())
    start_run(folder)
    record_written(folder, [RANK_FILE, REPORT_FILE])
    write_json(folder / RANK_FILE, report.to_dict())
    (folder / REPORT_FILE).write_text(
        f"# Checkpoint ranking: {base.name}\n\nTask {base.task}, up to {samples} training examples per candidate, "
        f"one frozen forward pass each; ranked by LogME (higher is better).\n\n{report.table()}\n"
    )
    finish_run(folder)
    return report
