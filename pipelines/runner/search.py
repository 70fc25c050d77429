"""`hubtune search RECIPE --trials N`: hyperparameter search with Optuna over the recipe's `search:` section.

The section maps dotted recipe keys to ranges, plus two options:

    search:
      training.learning_rate: {low: 1.0e-5, high: 1.0e-3, log: true}
      training.per_device_train_batch_size: {choices: [8, 16, 32]}
      training.num_train_epochs: {low: 1, high: 4, type: int}
      direction: maximize          # default: from the task (lower is better for loss, wer, cer)
      sampler: {name: tpe, seed: 0}  # tpe or random; the seed defaults to the recipe's seed

Optuna is driven directly (ask and tell) around `Recipe.run`, not through `Trainer.hyperparameter_search`.
That method re-runs one Trainer with `model_init`, sets only `TrainingArguments` attributes (it skips any other
name with a warning) and keeps every trial's checkpoints under the one Trainer's output folder. A hubtune run
is more than one Trainer: the data is prepared from the recipe (`data.max_length`), the model is adapted from it
(`adapt.peft.r`, `adapt.layer_decay` shape the PEFT model and the layer-group optimizer), LP-FT trains two
Trainers in turn, and the run guard, results and report belong to one run folder. So each trial here is a
complete hubtune run of the recipe with the trial's values as overrides, in its own run folder, and any recipe
key can be searched.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pipelines.config import (
    set_dotted,
)
from pipelines.errors import HubtuneError
from pipelines.runner.search_plan import SearchPlan, load_search
from pipelines.runs.folder import write_json
from pipelines.runs.guard import check_usable

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)

SEARCH_FILE, REPORT_FILE, PLOT_FILE, BEST_RECIPE_FILE = "search.json", "search.md", "search.png", "best_recipe.yaml"


@dataclass
class TrialRecord:
    number: int
    params: dict[str, Any]
    run: str
    state: str = "failed"  # complete or failed
    value: float | None = None
    error: str | None = None


@dataclass
class SearchResult:
    name: str
    metric: str
    direction: str
    out_dir: Path
    trials: list[TrialRecord] = field(default_factory=list)

    @property
    def best(self) -> TrialRecord | None:
        done = [(t.value, t) for t in self.trials if t.value is not None]
        if not done:
            return None
        pick = min if self.direction == "minimize" else max
        return pick(done, key=lambda pair: pair[0])[1]

    def to_dict(self) -> dict[str, Any]:
        best = self.best
        return {
            "metric": self.metric,
            "direction": self.direction,
            "best": dataclasses.asdict(best) if best else None,
            "best_recipe": str(self.out_dir / BEST_RECIPE_FILE) if best else None,
            "trials": [dataclasses.asdict(trial) for trial in self.trials],
        }


def optuna_module() -> Any:
    """Optuna, an optional dependency (the `search` extra): missing, it is one error line saying how to get it."""
    try:
        import optuna
    except ImportError as error:
        raise HubtuneError("hubtune search needs Optuna: pip install 'hubtune[search]'") from error
    return optuna


def _metric_name(metric: str) -> str:
    """Trials are compared on validation: the test split stays unseen until the chosen recipe is scored."""
    if metric.startswith("test_"):
        raise HubtuneError(f"--metric '{metric}': a search selects on validation; give the metric without 'test_'")
    return metric if metric.startswith("eval_") else f"eval_{metric}"


def _sampler(plan: SearchPlan) -> optuna.samplers.BaseSampler:
    optuna = optuna_module()
    seed = plan.sampler_seed if plan.sampler_seed is not None else plan.config.seed
    return (
        optuna.samplers.RandomSampler(seed=seed) if plan.sampler == "random" else optuna.samplers.TPESampler(seed=seed)
    )


def search(
    recipe_path: str | Path,
    overrides: Sequence[str] = (),
    trials: int = 10,
    metric: str | None = None,
    out_dir: str | Path | None = None,
) -> SearchResult:
    """Run `trials` trials of the recipe's search section; write search.json, search.md, search.png and
    best_recipe.yaml to `out_dir` (default runs/<name>-search) after every trial."""
    optuna = optuna_module()
    import torch

    from pipelines.processes import process_state
    from pipelines.runner.recipe import Recipe
    from pipelines.tasks import get_task

    if trials < 1:
        raise HubtuneError(f"--trials must be at least 1, got {trials}")
    if process_state().num_processes > 1:
        raise HubtuneError(
            "hubtune search runs its trials one after another in one process; start it without a launcher"
        )
    plan = load_search(recipe_path, overrides)
    config = plan.config
    config.data.check_source()  # every trial reads the recipe's data: none named is refused before anything is written
    if config.data.validation_split is None and config.data.validation_fraction is None:
        raise HubtuneError(
            "a search compares trials on validation, but the recipe has none: set 'data.validation_split' or "
            "'data.validation_fraction'"
        )
    task = get_task(config.task)
    metric = _metric_name(metric or task.primary_metric)
    direction = plan.direction or ("minimize" if metric.endswith(task.lower_is_better) else "maximize")
    out = Path(out_dir) if out_dir else Path("runs") / f"{config.name}-search"
    check_usable(out, "--out")
    if out.exists() and any(out.iterdir()):
        raise HubtuneError(f"search folder '{out}' already exists; remove it or give another --out")
    out.mkdir(parents=True, exist_ok=True)
    result = SearchResult(config.name, metric, direction, out)
    study = optuna.create_study(direction=direction, sampler=_sampler(plan), study_name=config.name)
    for _ in range(trials):
        trial = study.ask()
        params = {search_range.key: search_range.suggest(trial) for search_range in plan.ranges}
        record = TrialRecord(trial.number, params, str(out / f"trial-{trial.number}"))
        result.trials.append(record)
        logger.info("search trial %d (%d of %d): %s", trial.number, trial.number + 1, trials, params)
        try:
            results = Recipe(
                plan.trial_config(params, [f"output_dir={json.dumps(record.run)}", "hub.push=false"])
            ).run()
        except (HubtuneError, torch.cuda.OutOfMemoryError) as error:
            # One trial's values can fail where the range's ends did not (a checkpoint's config, the data, a batch
            # size the GPU cannot hold): a failed trial, and the search goes on.
            record.error = " ".join(str(error).split())
            # Out of memory during training comes as the cause of the run's one-line failure.
            if any(isinstance(e, torch.cuda.OutOfMemoryError) for e in (error, error.__cause__)):
                torch.cuda.empty_cache()  # the next trial starts with the failed one's cached blocks returned
            logger.warning("search trial %d failed: %s", trial.number, error)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            _write(result, plan)
            continue
        if metric not in results:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            record.error = f"metric '{metric}' is not in the run's results"
            _write(result, plan)
            raise HubtuneError(
                f"--metric '{metric}' is not in the results of '{record.run}' "
                f"(have: {', '.join(k for k in results if k.startswith('eval_'))})"
            )
        value = float(results[metric])
        if math.isfinite(value):
            record.state, record.value = "complete", value
            study.tell(trial, value)
            best = result.best or record
            logger.info(
                "search trial %d: %s %.4f; best so far: trial %d, %.4f",
                trial.number,
                metric,
                value,
                best.number,
                best.value,
            )
        else:
            record.error = f"{metric} is {value}"
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        _write(result, plan)
    if result.best is None:
        raise HubtuneError(f"none of the {trials} trials finished; their errors are in '{out / REPORT_FILE}'")
    return result


def best_recipe(plan: SearchPlan, params: dict[str, Any]) -> dict[str, Any]:
    """The recipe as written (overrides applied), its searched keys set to `params`, without the search section."""
    tree = copy.deepcopy(plan.tree)
    for key, value in params.items():
        set_dotted(tree, key, value)
    return tree


def _format(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _write(result: SearchResult, plan: SearchPlan) -> None:
    """The summary so far, rewritten after every trial: an interrupted search keeps what its trials found."""
    out, best = result.out_dir, result.best
    write_json(out / SEARCH_FILE, result.to_dict())
    if best is not None:
        tree = best_recipe(plan, best.params)
        (out / BEST_RECIPE_FILE).write_text(yaml.safe_dump(tree, sort_keys=False))
    _plot(result)
    keys = [search_range.key for search_range in plan.ranges]
    lines = [
        f"# Hyperparameter search: {result.name}",
        "",
        f"{len(result.trials)} trials, {result.metric} ({result.direction}); "
        + (
            f"best: trial {best.number}, {best.value:.4f}; `hubtune train {BEST_RECIPE_FILE}` trains it."
            if best is not None and best.value is not None
            else "no trial has finished yet."
        ),
        "",
        f"| trial | {' | '.join(keys)} | {result.metric} | run |",
        "|---|" + "---|" * len(keys) + "---|---|",
    ]
    for trial in result.trials:
        score = f"{trial.value:.4f}" if trial.value is not None else f"failed: {trial.error}"
        if best is not None and trial.number == best.number:
            score = f"**{score}** (best)"
        values = " | ".join(_format(trial.params[key]) for key in keys)
        folder = Path(trial.run).name if Path(trial.run).exists() else "(none)"  # failed before its folder
        row = f"| {trial.number} | {values} | {score.replace('|', '/')} | {folder} |"
        lines.append(row)
    lines += ["", f"![{result.metric} per trial]({PLOT_FILE})", ""]
    (out / REPORT_FILE).write_text("\n".join(lines))


def _plot(result: SearchResult) -> None:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    points = [(t.number, t.value) for t in result.trials if t.value is not None]
    numbers, values = [n for n, _ in points], [v for _, v in points]
    pick = min if result.direction == "minimize" else max
    best_so_far = [pick(values[: i + 1]) for i in range(len(values))]
    figure = Figure(figsize=(6, 4))
    axis = figure.subplots()
    axis.plot(numbers, values, "o", label=f"{result.metric} of the trial")
    axis.step(numbers, best_so_far, where="post", label="best so far")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    failed = len(result.trials) - len(points)
    axis.set(
        xlabel="trial",
        ylabel=result.metric,
        title=f"Search: {result.name}" + (f" ({failed} failed)" if failed else ""),
    )
    axis.legend()
    figure.tight_layout()
    figure.savefig(result.out_dir / PLOT_FILE, dpi=100)
