"""Custom pieces: a metric function, a loss or a collator that research code hands `Recipe.run` beside the recipe.

A recipe cannot name a Python callable, so a run that used one cannot be repeated from its recipe.yaml alone: the
run folder records each piece by its qualified name, marked `CUSTOM_NOTE` (all_results.json's `custom`, report.md,
a comment at the top of recipe.yaml). `hubtune evaluate` of such a run scores with the task's own metrics and
collator, since it has only the recipe.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from transformers import EvalPrediction

from pipelines.config import RecipeConfig
from pipelines.errors import HubtuneError

CUSTOM_NOTE = "custom (not reproducible from the recipe)"

MetricFunction = Callable[[EvalPrediction], Mapping[str, Any]]
LossFunction = Callable[[Any, Any], Any]
Collator = Callable[[list[dict[str, Any]]], Mapping[str, Any]]


def qualified_name(piece: Callable) -> str:
    """`module.qualname` of a function, a method, a `functools.partial`'s function or a callable object's class."""
    target = piece.func if isinstance(piece, functools.partial) else piece
    # A callable object has no __qualname__ of its own: its class names it.
    name = getattr(target, "__qualname__", None) or type(target).__qualname__
    return f"{getattr(target, '__module__', None) or type(target).__module__}.{name}"


@dataclass(frozen=True)
class CustomPieces:
    """The pieces a run takes from Python instead of the task, each None where the task's own stands.

    - `compute_metrics(EvalPrediction) -> dict`: metrics **in addition to** the task's, on the same predictions
      (as the task's `preprocess_logits_for_metrics` leaves them) and labels, for validation and test; the task's
      own stay, since the report, the model card, early stopping and `compare`/`search` read them. A name the task
      already reports is an error rather than a silent replacement.
    - `loss(logits, labels) -> loss`: the training loss **instead of** the task's (and of the model's own), a mean
      over the batch; the probe stage of `lp_ft` trains with it too.
    - `data_collator(list of prepared examples) -> batch`: every batch (training, evaluation, prediction)
      **instead of** the task's collator.
    """

    compute_metrics: MetricFunction | None = None
    loss: LossFunction | None = None
    data_collator: Collator | None = None

    def given(self) -> dict[str, Callable]:
        """The pieces that were passed, by their `Recipe.run` keyword."""
        pieces = {spec.name: getattr(self, spec.name) for spec in dataclasses.fields(self)}
        return {name: piece for name, piece in pieces.items() if piece is not None}

    def check(self, config: RecipeConfig) -> None:
        """Refuse, before anything runs, a piece that is not callable or that the recipe leaves no place for."""
        for name, piece in self.given().items():
            if not callable(piece):
                raise HubtuneError(f"Recipe.run({name}=...) takes a callable, got {piece!r}")
        if self.data_collator is None:
            return
        if config.adapt.feature_cache:
            raise HubtuneError(
                "Recipe.run(data_collator=...) cannot be used with 'adapt.feature_cache': training then reads "
                "cached backbone features, which the cache batches itself"
            )
        if config.data.packs_sequences():
            raise HubtuneError(
                "Recipe.run(data_collator=...) cannot be used with 'data.padding_free': that key packs training "
                "batches with a collator of its own"
            )

    def record(self) -> dict[str, str]:
        """What the run folder keeps of the pieces: keyword -> `CUSTOM_NOTE: module.qualname`."""
        return {name: f"{CUSTOM_NOTE}: {qualified_name(piece)}" for name, piece in self.given().items()}

    def metrics(self, task_metrics: MetricFunction) -> MetricFunction:
        """The Trainer's `compute_metrics`: the task's metrics, plus the custom function's where one was given."""
        custom = self.compute_metrics
        if custom is None:
            return task_metrics

        def task_and_custom(prediction: EvalPrediction) -> dict[str, Any]:
            scores = dict(task_metrics(prediction))
            extra = custom(prediction)
            if not isinstance(extra, Mapping):
                raise HubtuneError(
                    f"Recipe.run(compute_metrics={qualified_name(custom)}) must return a dict of metric name -> "
                    f"value, got {type(extra).__name__}"
                )
            clashes = sorted(scores.keys() & extra.keys())
            if clashes:
                raise HubtuneError(
                    f"Recipe.run(compute_metrics={qualified_name(custom)}) returned '{clashes[0]}', a metric the "
                    f"task reports itself ({', '.join(sorted(scores))}); give the custom metric another name"
                )
            return {**scores, **extra}

        return task_and_custom
