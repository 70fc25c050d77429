"""The search's summary, rebuilt from its study: search.json, search.md, search.png and best_recipe.yaml.

Any worker writes it after each of its trials and when it stops, and `hubtune search --report DIR` writes it from
the storage alone; each file is written beside its place and renamed onto it, so a reader (or a worker writing at
the same moment) never sees half of one.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pipelines.config import set_dotted

if TYPE_CHECKING:
    import optuna

SEARCH_FILE, REPORT_FILE, PLOT_FILE, BEST_RECIPE_FILE = "search.json", "search.md", "search.png", "best_recipe.yaml"


@dataclass
class TrialRecord:
    number: int
    params: dict[str, Any]
    run: str | None
    state: str = "failed"  # complete, pruned, failed, running or waiting
    value: float | None = None  # a pruned trial's: its last reported score
    error: str | None = None
    pruned_at_step: int | None = None
    retry_of: int | None = None  # the trial whose values this one runs again


@dataclass
class SearchResult:
    name: str
    metric: str
    direction: str
    out_dir: Path
    trials: list[TrialRecord] = field(default_factory=list)

    @property
    def best(self) -> TrialRecord | None:
        """The best complete trial: a pruned one stopped early, so its score is not the recipe's."""
        done = [t for t in self.trials if t.state == "complete" and t.value is not None]
        if not done:
            return None
        pick = min if self.direction == "minimize" else max
        return pick(done, key=lambda trial: trial.value or 0.0)

    def count(self, state: str) -> int:
        return sum(trial.state == state for trial in self.trials)

    def to_dict(self) -> dict[str, Any]:
        best = self.best
        return {
            "metric": self.metric,
            "direction": self.direction,
            "best": dataclasses.asdict(best) if best else None,
            "best_recipe": str(self.out_dir / BEST_RECIPE_FILE) if best else None,
            "counts": {state: self.count(state) for state in ("complete", "pruned", "failed", "running", "waiting")},
            "trials": [dataclasses.asdict(trial) for trial in self.trials],
        }


def _record(trial: optuna.trial.FrozenTrial) -> TrialRecord:
    state = trial.state.name.lower().replace("fail", "failed")
    error = trial.user_attrs.get("error")
    if state == "failed" and error is None:
        error = trial.user_attrs.get("stopped", "its worker was lost (no heartbeat)")
    return TrialRecord(
        number=trial.number,
        params=dict(trial.params),
        run=trial.user_attrs.get("run"),
        state=state,
        value=trial.value if state in ("complete", "pruned") else None,
        error=error if state == "failed" else None,
        pruned_at_step=trial.user_attrs.get("pruned_at_step"),
        retry_of=trial.system_attrs.get("failed_trial"),
    )


def collect(study: optuna.Study, setup: dict[str, Any], out: Path) -> SearchResult:
    result = SearchResult(study.study_name, setup["metric"], setup["direction"], out)
    result.trials = [_record(trial) for trial in study.get_trials(deepcopy=False)]
    return result


def best_recipe(tree: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The recipe as written (overrides applied), its searched keys set to `params`, without the search section."""
    tree = copy.deepcopy(tree)
    for key, value in params.items():
        set_dotted(tree, key, value)
    return tree


def _replace(path: Path, write: Any) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    write(partial)
    partial.replace(path)


def _format(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _score(trial: TrialRecord, best: TrialRecord | None) -> str:
    if trial.state == "complete":
        score = f"{trial.value:.4f}"
        return f"**{score}** (best)" if best is not None and trial.number == best.number else score
    if trial.state == "pruned":
        return f"pruned at step {trial.pruned_at_step}: {trial.value:.4f}" if trial.value is not None else "pruned"
    if trial.state == "failed":
        return f"failed: {trial.error}"
    return trial.state


def write_summary(result: SearchResult, setup: dict[str, Any]) -> None:
    out, best = result.out_dir, result.best
    _replace(out / SEARCH_FILE, lambda p: p.write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True) + "\n"))
    if best is not None:
        text = yaml.safe_dump(best_recipe(setup["recipe"], best.params), sort_keys=False)
        _replace(out / BEST_RECIPE_FILE, lambda p: p.write_text(text))
    _replace(out / PLOT_FILE, lambda p: _plot(result, p))
    keys = list(setup["keys"])
    done = result.count("complete") + result.count("pruned")
    lines = [
        f"# Hyperparameter search: {result.name}",
        "",
        f"{len(result.trials)} trials ({result.count('complete')} complete, {result.count('pruned')} pruned, "
        f"{result.count('failed')} failed, {result.count('running')} running, {result.count('waiting')} waiting; "
        f"{done} finished count toward --trials), {result.metric} ({result.direction}); "
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
        values = " | ".join(_format(trial.params[key]) if key in trial.params else "" for key in keys)
        folder = Path(trial.run).name if trial.run and Path(trial.run).exists() else "(none)"  # failed before it
        number = f"{trial.number} (retry of {trial.retry_of})" if trial.retry_of is not None else str(trial.number)
        lines.append(f"| {number} | {values} | {_score(trial, best).replace('|', '/')} | {folder} |")
    lines += ["", f"![{result.metric} per trial]({PLOT_FILE})", ""]
    _replace(out / REPORT_FILE, lambda p: p.write_text("\n".join(lines)))


def _plot(result: SearchResult, path: Path) -> None:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    points = [(t.number, t.value) for t in result.trials if t.state == "complete" and t.value is not None]
    pruned = [(t.number, t.value) for t in result.trials if t.state == "pruned" and t.value is not None]
    numbers, values = [n for n, _ in points], [v for _, v in points]
    pick = min if result.direction == "minimize" else max
    best_so_far = [pick(values[: i + 1]) for i in range(len(values))]
    figure = Figure(figsize=(6, 4))
    axis = figure.subplots()
    axis.plot(numbers, values, "o", label=f"{result.metric} of the trial")
    if pruned:
        axis.plot([n for n, _ in pruned], [v for _, v in pruned], "x", label="pruned (last score)")
    axis.step(numbers, best_so_far, where="post", label="best so far")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    failed = result.count("failed")
    axis.set(
        xlabel="trial",
        ylabel=result.metric,
        title=f"Search: {result.name}" + (f" ({failed} failed)" if failed else ""),
    )
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100, format="png")
