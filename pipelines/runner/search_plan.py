"""The `search:` section of a recipe, read and checked: ranges of recipe keys plus the search's options.

Each range is built by the recipe layer's typed builder; each key is checked by loading the recipe with the
range's ends (or every choice) as overrides, so the recipe's own validation decides what a key takes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.config import (
    TRAINING_DEFAULTS,
    RecipeConfig,
    apply_overrides,
    build,
    load_recipe_config,
    read_recipe_file,
    require_one_of,
)
from pipelines.errors import HubtuneError

if TYPE_CHECKING:
    import optuna

RANGE_FIELDS = ("low", "high", "log", "step", "type", "choices")
RANGE_TYPES = ("float", "int")
DIRECTIONS = ("minimize", "maximize")
SAMPLERS = ("tpe", "random")
SEARCH_OPTIONS = ("direction", "sampler", "pruner", "heartbeat")
# The search sets these for every trial itself (each trial's own run folder, no uploads of trials).
RESERVED_KEYS = ("name", "output_dir", "overwrite", "hub")


@dataclass
class SearchRange:
    """One searched recipe key: numbers from low to high (int or float, optionally log-scaled), or choices.

    Built from the section by the recipe layer's typed builder, so a mistyped field reads like any recipe key."""

    key: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    type: str = "float"
    choices: list[Any] | None = None

    def validate(self, written: dict[str, Any]) -> None:
        """`written`: the range as the recipe gives it, for messages that quote its values."""
        key = self.key
        if self.choices is not None:
            if set(written) != {"choices"}:
                raise HubtuneError(
                    f"search range '{key}' has 'choices'; it takes no {', '.join(sorted(set(written) - {'choices'}))}"
                )
            if not self.choices:
                raise HubtuneError(f"search range '{key}': 'choices' must be a non-empty list, got []")
            for choice in self.choices:
                # Optuna stores categorical choices as plain values; a list or mapping would not round-trip.
                if choice is not None and not isinstance(choice, (bool, int, float, str)):
                    raise HubtuneError(
                        f"search range '{key}': choices must be numbers, strings, true/false or null, got {choice!r}"
                    )
            return
        if self.low is None or self.high is None:
            missing = "low" if self.low is None else "high"
            raise HubtuneError(f"search range '{key}' needs '{missing}' (or give 'choices')")
        if self.low > self.high:
            raise HubtuneError(f"search range '{key}': low {written['low']!r} is above high {written['high']!r}")
        require_one_of(f"search.{key}.type", self.type, RANGE_TYPES)
        if self.log and self.low <= 0:
            raise HubtuneError(f"search range '{key}': a log range needs low above 0, got {written['low']!r}")
        if self.step is not None and (self.step <= 0 or self.log):
            raise HubtuneError(f"search range '{key}': 'step' must be positive and cannot be combined with 'log'")
        if self.type == "int" and any(
            v is not None and not float(v).is_integer() for v in (self.low, self.high, self.step)
        ):
            raise HubtuneError(f"search range '{key}' has type int; low, high and step must be whole numbers")

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.key, self.choices)
        low, high = float(self.low or 0.0), float(self.high or 0.0)
        if self.type == "int":
            step = int(self.step) if self.step is not None else 1
            return trial.suggest_int(self.key, int(low), int(high), step=step, log=self.log)
        return trial.suggest_float(self.key, low, high, step=self.step, log=self.log)

    def samples(self) -> list[Any]:
        """Values that stand for the whole range when the recipe checks it: both ends, or every choice."""
        if self.choices is not None:
            return list(self.choices)
        low, high = float(self.low or 0.0), float(self.high or 0.0)
        if self.type == "int":
            return [int(low), int(high)]
        return [low, high]


@dataclass
class SamplerOption:
    """The search option `sampler`: Optuna's sampler and its seed (None: the recipe's seed)."""

    name: str = "tpe"
    seed: int | None = None


@dataclass
class MedianPrunerOption:
    """`pruner: {name: median}`: Optuna's MedianPruner (a trial stops when its score at an evaluation is worse than
    the median of the earlier trials' scores at the same step)."""

    name: str = "median"
    n_startup_trials: int = 5  # trials that finish unpruned before any is pruned
    n_warmup_steps: int = 0  # training steps of each trial before it can be pruned
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclass
class HyperbandPrunerOption:
    """`pruner: {name: hyperband}`: Optuna's HyperbandPruner; its resource is the training step."""

    name: str = "hyperband"
    min_resource: int = 1
    max_resource: int | None = None  # None: Optuna's "auto" (the steps of the first finished trial)
    reduction_factor: int = 3


@dataclass
class NoPrunerOption:
    name: str = "none"


PRUNERS: dict[str, type] = {"median": MedianPrunerOption, "hyperband": HyperbandPrunerOption, "none": NoPrunerOption}


@dataclass
class HeartbeatOption:
    """`heartbeat`: how a trial left running by a killed worker is found (database storages): each worker records
    a heartbeat every `interval` seconds; a running trial without one for `grace_period` seconds is marked failed
    and queued to run again, at most `retries` times."""

    interval: int = 10
    grace_period: int = 60
    retries: int = 1


@dataclass
class SearchPlan:
    """A recipe with a search section, checked: the recipe values (overrides applied) and the ranges."""

    tree: dict[str, Any]  # the recipe as written, without 'search', with the command's overrides
    config: RecipeConfig  # the tree validated: the base values
    ranges: list[SearchRange]
    direction: str | None = None  # None: from the task and metric
    sampler: str = "tpe"
    sampler_seed: int | None = None  # None: the recipe's seed
    pruner: Any = field(default_factory=NoPrunerOption)  # one of PRUNERS' option classes
    heartbeat: HeartbeatOption = field(default_factory=HeartbeatOption)

    def trial_config(self, params: dict[str, Any], extra: Sequence[str] = ()) -> RecipeConfig:
        # JSON is YAML: each value reads back with its type through the ordinary override path.
        overrides = [f"{key}={json.dumps(value)}" for key, value in params.items()]
        return load_recipe_config(values=self.tree, overrides=[*overrides, *extra])


def _parse_range(key: str, spec: Any) -> SearchRange:
    if not isinstance(spec, dict):
        raise HubtuneError(
            f"search range '{key}' must be a mapping ({{low: .., high: ..}} or {{choices: [..]}}), got {spec!r}"
        )
    if "key" in spec:
        raise HubtuneError(f"search range '{key}' has unknown field 'key'; valid fields: {', '.join(RANGE_FIELDS)}")
    search_range = build(SearchRange, {"key": key, **spec}, f"search.{key}.")
    search_range.validate(spec)
    return search_range


def _parse_sampler(spec: Any) -> tuple[str, int | None]:
    if not isinstance(spec, dict):
        raise HubtuneError(f"search option 'sampler' must be a mapping like {{name: tpe, seed: 0}}, got {spec!r}")
    sampler = build(SamplerOption, spec, "search.sampler.")
    require_one_of("search.sampler.name", sampler.name, SAMPLERS)
    return sampler.name, sampler.seed


def _parse_pruner(spec: Any, config: RecipeConfig) -> Any:
    if not isinstance(spec, dict):
        raise HubtuneError(f"search option 'pruner' must be a mapping like {{name: median}}, got {spec!r}")
    name = spec.get("name")
    if name is None:
        raise HubtuneError(f"search option 'pruner' needs 'name' ({', '.join(PRUNERS)})")
    require_one_of("search.pruner.name", name, tuple(PRUNERS))
    pruner = build(PRUNERS[name], spec, "search.pruner.")
    for key, value in vars(pruner).items():
        least = 0 if key == "n_warmup_steps" else 1  # every other count and resource starts at 1
        if isinstance(value, int) and value < least:
            raise HubtuneError(f"recipe key 'search.pruner.{key}' must be at least {least}, got {value}")
    if name == "hyperband" and pruner.reduction_factor < 2:
        raise HubtuneError(
            f"recipe key 'search.pruner.reduction_factor' must be at least 2, got {pruner.reduction_factor}"
        )
    evaluation = config.training.get("eval_strategy", TRAINING_DEFAULTS["eval_strategy"])
    if name != "none" and evaluation == "no":
        raise HubtuneError(
            "search option 'pruner' judges trials by their evaluations during training, but "
            "'training.eval_strategy' is 'no'; set it to steps or epoch"
        )
    return pruner


def _parse_heartbeat(spec: Any) -> HeartbeatOption:
    if not isinstance(spec, dict):
        raise HubtuneError(f"search option 'heartbeat' must be a mapping like {{interval: 10}}, got {spec!r}")
    heartbeat = build(HeartbeatOption, spec, "search.heartbeat.")
    if heartbeat.interval < 1 or heartbeat.retries < 0:
        raise HubtuneError("recipe keys 'search.heartbeat.interval' must be at least 1 and '.retries' at least 0")
    if heartbeat.grace_period <= heartbeat.interval:
        raise HubtuneError(
            f"recipe key 'search.heartbeat.grace_period' ({heartbeat.grace_period}) must be longer than "
            f"'search.heartbeat.interval' ({heartbeat.interval}): a live trial would be taken for a lost one"
        )
    return heartbeat


def _check_key(plan: SearchPlan, search_range: SearchRange) -> None:
    """The recipe's own validation decides whether a key exists and which values it takes: the range's ends (or
    each choice) are applied as overrides and the recipe is loaded."""
    key = search_range.key
    if key.split(".")[0] in RESERVED_KEYS:
        raise HubtuneError(f"search key '{key}' cannot be searched: the search sets it for each trial itself")
    for value in search_range.samples():
        try:
            plan.trial_config({key: value})
        except HubtuneError as error:
            raise HubtuneError(f"search key '{key}' = {value!r}: {error}") from error


def load_search(path: str | Path, overrides: Sequence[str] = ()) -> SearchPlan:
    """Read a recipe with a `search:` section and check it all: the recipe, every range and its key."""
    tree = read_recipe_file(path)
    section = tree.pop("search", None)
    if not section:
        raise HubtuneError(f"recipe file '{path}' has no 'search' section (recipe key -> range) to search over")
    if not isinstance(section, dict):
        raise HubtuneError(f"recipe section 'search' must be a mapping of recipe key -> range, got {section!r}")
    tree = apply_overrides(tree, overrides)
    plan = SearchPlan(tree, load_recipe_config(values=tree), ranges=[])
    for key, spec in section.items():
        key = str(key)
        if key == "direction":
            if spec not in DIRECTIONS:
                raise HubtuneError(f"search option 'direction' must be minimize or maximize, got {spec!r}")
            plan.direction = spec
        elif key == "sampler":
            plan.sampler, plan.sampler_seed = _parse_sampler(spec)
        elif key == "pruner":
            plan.pruner = _parse_pruner(spec, plan.config)
        elif key == "heartbeat":
            plan.heartbeat = _parse_heartbeat(spec)
        else:
            plan.ranges.append(_parse_range(key, spec))
    if not plan.ranges:
        raise HubtuneError("recipe section 'search' has no ranges, only options; add e.g. training.learning_rate")
    for search_range in plan.ranges:
        _check_key(plan, search_range)
    return plan
