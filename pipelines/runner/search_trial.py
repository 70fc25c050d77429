"""One trial of a search: a complete hubtune run of the recipe with the trial's values, in its own run folder,
either in the worker's process or as a launched command (`--launch`, e.g. `accelerate launch --config_file F`),
whose processes train it as `hubtune train` does while the worker waits and then reads its results.
"""

from __future__ import annotations

import json
import logging
import shlex
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipelines.errors import HubtuneError
from pipelines.runner.search_plan import SearchPlan
from pipelines.runner.search_report import best_recipe
from pipelines.runs.folder import RESULTS_FILE, write_json
from pipelines.runs.guard import record_written
from pipelines.training.pruning import PrunableTrial, ReportToTrial

logger = logging.getLogger(__name__)

PRUNED_FILE = "pruned.json"
LAUNCH_FOLDER = "launch"  # the launched trials' recipes, inside the search folder
STOP_WAIT_S = 120  # for a launched trial to save what it can after SIGTERM, before it is killed


@dataclass
class TrialOutcome:
    results: dict[str, Any]
    pruned_at: int | None = None  # the training step at which the pruner stopped it


def trial_overrides(run: Path) -> list[str]:
    # Each trial its own run folder, and no trial uploads to the Hub.
    return [f"output_dir={json.dumps(str(run))}", "hub.push=false"]


def run_in_process(
    plan: SearchPlan, params: dict[str, Any], run: Path, trial: PrunableTrial, metric: str
) -> TrialOutcome:
    from pipelines.runner.recipe import Recipe

    report = ReportToTrial(trial, metric)
    results = Recipe(plan.trial_config(params, trial_overrides(run))).run(callbacks=[report])
    if report.pruned_at is not None:
        mark_pruned(run, report.pruned_at, metric, report.reported)
    return TrialOutcome(dict(results), report.pruned_at)


def mark_pruned(run: Path, step: int, metric: str, reported: dict[int, float]) -> None:
    """The pruned trial's run folder says so: its model is what training had reached when the pruner stopped it."""
    write_json(run / PRUNED_FILE, {"pruned_at_step": step, "metric": metric, "reported": reported})
    record_written(run, [PRUNED_FILE])


def run_launched(launch: str, plan: SearchPlan, params: dict[str, Any], run: Path, number: int) -> TrialOutcome:
    """`launch` runs `-m pipelines train` on the trial's recipe (written into the search folder's launch/ folder);
    the worker then reads the run folder's results. Ctrl-C reaches the launched processes with the worker (one
    process group); SIGTERM to the worker is passed on to them, so they stop as `hubtune train` does."""
    recipe = run.parent / LAUNCH_FOLDER / f"trial-{number}.yaml"
    recipe.parent.mkdir(exist_ok=True)
    recipe.write_text(yaml.safe_dump(best_recipe(plan.tree, params), sort_keys=False))
    command = [*shlex.split(launch), "-m", "pipelines", "train", str(recipe), *trial_overrides(run)]
    logger.info("trial %d: %s", number, shlex.join(command))
    try:
        process = subprocess.Popen(command)
    except OSError as error:
        raise HubtuneError(f"--launch '{launch}' cannot be started: {error}") from error
    try:
        code = process.wait()
    except KeyboardInterrupt:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        raise
    if code != 0:
        raise HubtuneError(f"the launched trial {number} exited with code {code} (its own error line is above)")
    results_file = run / RESULTS_FILE
    if not results_file.is_file():
        raise HubtuneError(f"the launched trial {number} wrote no '{results_file}'")
    return TrialOutcome(json.loads(results_file.read_text()))
