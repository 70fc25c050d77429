"""`hubtune search RECIPE --trials N`: hyperparameter search with Optuna over the recipe's `search:` section.

The section maps dotted recipe keys to ranges, plus options:

    search:
      training.learning_rate: {low: 1.0e-5, high: 1.0e-3, log: true}
      training.per_device_train_batch_size: {choices: [8, 16, 32]}
      training.num_train_epochs: {low: 1, high: 4, type: int}
      direction: maximize          # default: from the task (lower is better for loss, wer, cer)
      sampler: {name: tpe, seed: 0}  # tpe or random; the seed defaults to the recipe's seed
      pruner: {name: median}       # median, hyperband or none (the default)
      heartbeat: {interval: 10, grace_period: 60, retries: 1}

Optuna is driven through `Study.optimize` around `Recipe.run`, not through `Trainer.hyperparameter_search`.
That method re-runs one Trainer with `model_init`, sets only `TrainingArguments` attributes (it skips any other
name with a warning) and keeps every trial's checkpoints under the one Trainer's output folder. A hubtune run
is more than one Trainer: the data is prepared from the recipe (`data.max_length`), the model is adapted from it
(`adapt.peft.r`, `adapt.layer_decay` shape the PEFT model and the layer-group optimizer), LP-FT trains two
Trainers in turn, and the run guard, results and report belong to one run folder. So each trial here is a
complete hubtune run of the recipe with the trial's values as overrides, in its own run folder, and any recipe
key can be searched.

The study lives in a storage (default: a SQLite file in the search folder), so a search outgrows one process:
any number of workers run the same command on one storage and share the trials, an interrupted search resumes
with the same command, and `--trials N` counts the finished (complete or pruned) trials of all workers together.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.errors import HubtuneError, RunInterrupted
from pipelines.runner.search_folder import join_search_folder, read_search_folder
from pipelines.runner.search_plan import SearchPlan, load_search
from pipelines.runner.search_report import REPORT_FILE, SearchResult, collect, write_summary
from pipelines.runner.search_study import (
    default_storage,
    fail_lost_trials,
    heartbeat_enabled,
    open_storage,
    open_study,
    optuna_module,
    queue_again,
    sampler,
    trial_counts,
)
from pipelines.runner.search_trial import TrialOutcome, run_in_process, run_launched
from pipelines.runs.guard import check_usable

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)


class TrialFailed(Exception):
    """A trial's own values failed it (a bad value for the data or checkpoint, out of GPU memory): the trial is
    recorded as failed, and the search goes on."""


class SurplusTrial(Exception):
    """Two workers started a trial at the same moment when the study needed one more: the later one stops before
    training, so that the search finishes no more trials than asked."""


def _metric_name(metric: str) -> str:
    """Trials are compared on validation: the test split stays unseen until the chosen recipe is scored."""
    if metric.startswith("test_"):
        raise HubtuneError(f"--metric '{metric}': a search selects on validation; give the metric without 'test_'")
    return metric if metric.startswith("eval_") else f"eval_{metric}"


def _out_of_memory(error: BaseException) -> bool:
    import torch

    # Out of memory during training comes as the cause of the run's one-line failure.
    return any(isinstance(e, torch.cuda.OutOfMemoryError) for e in (error, error.__cause__))


@dataclass
class Worker:
    """One process's share of a search: it runs trials until the study has `trials` finished ones."""

    plan: SearchPlan
    study: optuna.Study
    setup: dict[str, Any]
    out: Path
    trials: int
    launch: str | None = None
    current: int | None = None  # the trial this worker is running

    @property
    def metric(self) -> str:
        return str(self.setup["metric"])

    def objective(self, trial: optuna.Trial) -> float:
        optuna = optuna_module()
        states = optuna.trial.TrialState
        self.current = trial.number
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        # Trial numbers are handed out by the storage in order: of the trials started at the same moment, the
        # ones numbered after the study's last needed one stand down.
        live = trial.study.get_trials(deepcopy=False, states=(states.COMPLETE, states.PRUNED, states.RUNNING))
        if sum(t.number < trial.number for t in live) >= self.trials:
            trial.set_user_attr("stopped", "not run: the study had its trials finished or running when it started")
            raise SurplusTrial(f"the study already has {self.trials} trials finished or running")
        trial.study.sampler = sampler(self.plan, trial.number)
        params = {search_range.key: search_range.suggest(trial) for search_range in self.plan.ranges}
        run = self.out / f"trial-{trial.number}"
        trial.set_user_attr("run", str(run))
        logger.info("search trial %d: %s", trial.number, params)
        try:
            outcome = self._run(trial, params, run)
        except HubtuneError as error:
            if _out_of_memory(error):
                import torch

                torch.cuda.empty_cache()  # the next trial starts with the failed one's cached blocks returned
            message = " ".join(str(error).split())
            trial.set_user_attr("error", message)
            raise TrialFailed(message) from error
        except KeyboardInterrupt:
            trial.set_user_attr("stopped", "interrupted (Ctrl-C or SIGTERM)")
            raise
        if outcome.pruned_at is not None:
            trial.set_user_attr("pruned_at_step", outcome.pruned_at)
            raise optuna.TrialPruned(f"{self.metric} at step {outcome.pruned_at}")
        if self.metric not in outcome.results:
            trial.set_user_attr("error", f"metric '{self.metric}' is not in the run's results")
            raise HubtuneError(
                f"--metric '{self.metric}' is not in the results of '{run}' "
                f"(have: {', '.join(k for k in outcome.results if k.startswith('eval_'))})"
            )
        value = float(outcome.results[self.metric])
        if not math.isfinite(value):
            trial.set_user_attr("error", f"{self.metric} is {value}")
            raise TrialFailed(f"{self.metric} is {value}")
        return value

    def _run(self, trial: optuna.Trial, params: dict[str, Any], run: Path) -> TrialOutcome:
        import torch

        try:
            if self.launch is not None:
                return run_launched(self.launch, self.plan, params, run, trial.number)
            return run_in_process(self.plan, params, run, trial, self.metric)
        except torch.cuda.OutOfMemoryError as error:
            raise HubtuneError(f"out of GPU memory: {error}") from error

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.current = None
        write_summary(collect(study, self.setup, self.out), self.setup)
        if trial_counts(study).failed >= self.trials:
            study.stop()  # every trial failing: more trials would fail alike

    def work(self) -> None:
        """Trials until the study has `trials` finished ones (Optuna's MaxTrialsCallback, counting the running
        trials of all workers too, so that none starts a trial the study will not need). Where heartbeats find lost
        trials, a worker whose share is done waits for the trials still running: one lost with its worker is
        queued again, and this worker runs it."""
        optuna = optuna_module()
        states = optuna.trial.TrialState
        enough = optuna.study.MaxTrialsCallback(self.trials, states=(states.COMPLETE, states.PRUNED, states.RUNNING))
        waits = heartbeat_enabled(self.study)
        while True:
            fail_lost_trials(self.study)
            counts = trial_counts(self.study)
            if counts.finished >= self.trials or counts.failed >= self.trials:
                return
            if counts.finished + counts.running >= self.trials:
                if not waits:
                    logger.warning(
                        "%d trials still running in other workers; without heartbeats (a journal storage) a trial "
                        "lost with its worker is not found",
                        counts.running,
                    )
                    return
                time.sleep(self.plan.heartbeat.interval)
                continue
            self.study.optimize(self.objective, callbacks=[enough, self.after_trial], catch=(TrialFailed, SurplusTrial))

    def interrupted(self, stop: KeyboardInterrupt) -> RunInterrupted:
        """Ctrl-C or SIGTERM: Optuna has marked the running trial failed; it is queued to run again."""
        exit_code, verb = int(getattr(stop, "exit_code", 130)), str(getattr(stop, "verb", "interrupted"))
        what = "the search stopped between trials"
        if self.current is not None:
            queued = queue_again(self.study, self.current, self.plan.heartbeat.retries)
            what = f"trial {self.current} was stopped" + (" and queued to run again" if queued else "")
        return RunInterrupted(
            f"{what}; continue the search with the same command (the study is in '{self.setup['storage']}')",
            exit_code=exit_code,
            verb=verb,
        )


def search(
    recipe_path: str | Path,
    overrides: Sequence[str] = (),
    trials: int = 10,
    metric: str | None = None,
    out_dir: str | Path | None = None,
    storage: str | None = None,
    launch: str | None = None,
) -> SearchResult:
    """Run this worker's share of the search until the study has `trials` finished trials; write search.json,
    search.md, search.png and best_recipe.yaml to `out_dir` (default runs/<name>-search) after every trial.
    `storage`: the study's storage URL (default: a SQLite file in `out_dir`); `launch`: a command that runs each
    trial (`accelerate launch --config_file F`), instead of this process."""
    optuna_module()
    from pipelines.processes import process_state
    from pipelines.tasks import get_task

    if trials < 1:
        raise HubtuneError(f"--trials must be at least 1, got {trials}")
    if process_state().num_processes > 1:
        raise HubtuneError(
            "hubtune search runs each trial in turn from one process; start it without a launcher, and give the "
            "launcher to --launch to run each trial on several processes"
        )
    plan = load_search(recipe_path, overrides)
    config = plan.config
    config.data.check_source()  # every trial reads the recipe's data: none named is refused before anything is written
    if config.data.validation_split is None and config.data.validation_fraction is None:
        raise HubtuneError(
            "a search compares trials on validation, but the recipe has none: set 'data.validation_split' or "
            "'data.validation_fraction'"
        )
    if launch is not None:
        if not shlex.split(launch):
            raise HubtuneError("--launch is empty; give a launcher command, e.g. 'accelerate launch --config_file F'")
        if plan.pruner.name != "none":
            raise HubtuneError(
                "search option 'pruner' needs the trials in this process: with --launch pruning is unavailable; "
                "remove it or set search.pruner: {name: none}"
            )
    task = get_task(config.task)
    metric = _metric_name(metric or task.primary_metric)
    direction = plan.direction or ("minimize" if metric.endswith(task.lower_is_better) else "maximize")
    out = Path(out_dir) if out_dir else Path("runs") / f"{config.name}-search"
    check_usable(out, "--out")
    # The storage named by --storage is opened before the folder is made: a bad URL leaves nothing behind.
    opened = open_storage(storage, plan.heartbeat) if storage is not None else None
    setup = json.loads(
        json.dumps(
            {
                "study": config.name,
                "storage": storage or default_storage(out),
                "metric": metric,
                "direction": direction,
                "keys": [search_range.key for search_range in plan.ranges],
                "recipe": plan.tree,
            }
        )
    )
    if join_search_folder(out, setup):
        logger.info("joining the search in '%s' (study '%s')", out, config.name)
    if opened is None:
        opened = open_storage(setup["storage"], plan.heartbeat)
    study = open_study(opened, config.name, direction, plan)
    worker = Worker(plan, study, setup, out, trials, launch)
    try:
        worker.work()
    except KeyboardInterrupt as stop:
        raise worker.interrupted(stop) from None
    finally:
        write_summary(collect(study, setup, out), setup)
    result = collect(study, setup, out)
    if result.best is None:
        raise HubtuneError(
            f"none of the {len(result.trials)} trials finished; their errors are in '{out / REPORT_FILE}'"
        )
    return result


def search_report(out_dir: str | Path) -> SearchResult:
    """Rewrite a search folder's search.md, search.json, search.png and best_recipe.yaml from its study."""
    out = Path(out_dir)
    setup = read_search_folder(out)
    study = open_study(open_storage(setup["storage"]), setup["study"], setup["direction"])
    result = collect(study, setup, out)
    write_summary(result, setup)
    return result
