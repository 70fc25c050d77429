"""The Optuna side of a search: the storage that holds the study, the study, its sampler and pruner, and what the
study's trials add up to. Every worker of a search opens the same study here; Optuna's storage hands out trial
numbers, so two workers never run the same trial.

Storage: a database URL (`sqlite:///PATH`, `postgresql://...`, `mysql://...`, via Optuna's RDBStorage, which has
heartbeats) or `journal:PATH`, an append-only file (Optuna's JournalStorage with a JournalFileBackend, whose lock
works on NFS where SQLite's does not). Optuna 5 gives heartbeats to RDBStorage only: on a journal, a trial left
running by a killed worker is not found (docs/strategies.md says so).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.errors import HubtuneError
from pipelines.runner.search_plan import HeartbeatOption, SearchPlan

if TYPE_CHECKING:
    import optuna

JOURNAL_PREFIX = "journal:"
STUDY_FILE = "study.db"
SQLITE_TIMEOUT_S = 60  # workers wait for each other's writes instead of failing with "database is locked"
SCHEMA_TRIES, SCHEMA_RETRY_S = 10, 0.5


def optuna_module() -> Any:
    """Optuna, an optional dependency (the `search` extra): missing, it is one error line saying how to get it."""
    try:
        import optuna
    except ImportError as error:
        raise HubtuneError("hubtune search needs Optuna: pip install 'hubtune[search]'") from error
    return optuna


def default_storage(out: Path) -> str:
    """A SQLite file in the search folder: the same command finds it again and resumes the search."""
    return f"sqlite:///{(out / STUDY_FILE).resolve()}"


def open_storage(url: str, heartbeat: HeartbeatOption | None = None) -> optuna.storages.BaseStorage:
    """The storage `url` names, opened now so that a bad URL is one line before anything runs."""
    optuna = optuna_module()
    if url.startswith(JOURNAL_PREFIX):
        path = Path(url.removeprefix(JOURNAL_PREFIX)).expanduser()
        if not path.parent.is_dir():
            raise HubtuneError(f"--storage '{url}': the journal file's folder '{path.parent}' does not exist")
        try:
            return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
        except (OSError, ValueError) as error:
            raise HubtuneError(f"--storage '{url}' cannot be opened: {error}") from error
    if "://" not in url:
        raise HubtuneError(
            f"--storage '{url}' is neither a database URL (sqlite:///PATH, postgresql://...) nor journal:PATH"
        )
    import sqlalchemy.exc

    options: dict[str, Any] = {}
    if url.startswith("sqlite"):
        options["engine_kwargs"] = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
    tries = 0
    while True:
        tries += 1
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5, and what a lost trial needs
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                if heartbeat is not None:
                    options.update(
                        heartbeat_interval=heartbeat.interval,
                        grace_period=heartbeat.grace_period,
                        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                            max_retry=heartbeat.retries
                        ),
                    )
                return optuna.storages.RDBStorage(url, **options)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError) as error:
            # Workers started together on a new database all create Optuna's tables; the ones that lose the race
            # fail on the winner's tables ("already exists", a duplicate schema version) and find them on a retry.
            racing = isinstance(error, sqlalchemy.exc.IntegrityError) or "already exists" in str(error)
            if not racing or tries == SCHEMA_TRIES:
                raise HubtuneError(f"--storage '{url}' cannot be opened: {type(error).__name__}: {error}") from error
            time.sleep(SCHEMA_RETRY_S)
        except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as error:
            # ImportError: the URL's database driver (psycopg2, pymysql) is not installed.
            raise HubtuneError(f"--storage '{url}' cannot be opened: {type(error).__name__}: {error}") from error


def sampler(plan: SearchPlan, number: int) -> optuna.samplers.BaseSampler:
    """The sampler for trial `number`, seeded by the search's seed and the trial number: workers started
    together draw different values, and a one-worker search draws the same ones every time."""
    optuna = optuna_module()
    base = plan.sampler_seed if plan.sampler_seed is not None else plan.config.seed
    seed = base * 100_003 + number
    if plan.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def pruner(plan: SearchPlan) -> optuna.pruners.BasePruner:
    optuna = optuna_module()
    option = dict(vars(plan.pruner))
    name = option.pop("name")
    if name == "median":
        return optuna.pruners.MedianPruner(**option)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=option["min_resource"],
            max_resource=option["max_resource"] or "auto",
            reduction_factor=option["reduction_factor"],
        )
    return optuna.pruners.NopPruner()


def open_study(
    storage: optuna.storages.BaseStorage, name: str, direction: str, plan: SearchPlan | None = None
) -> optuna.Study:
    """The study `name` in `storage`, created by the first worker and loaded by the others."""
    optuna = optuna_module()
    if plan is None:
        try:
            return optuna.load_study(study_name=name, storage=storage)
        except KeyError as error:
            raise HubtuneError(f"the search's storage holds no study '{name}'") from error
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        direction=direction,
        sampler=sampler(plan, 0),
        pruner=pruner(plan),
        load_if_exists=True,
    )
    if study.direction.name.lower() != direction:
        raise HubtuneError(
            f"study '{name}' in the storage is a {study.direction.name.lower()} search; this one would {direction}: "
            "give another --storage or --metric"
        )
    return study


@dataclass
class Counts:
    finished: int  # complete or pruned: what --trials counts
    running: int
    failed: int  # failed by their own values (not the lost, interrupted or surplus ones)


def trial_counts(study: optuna.Study) -> Counts:
    states = optuna_module().trial.TrialState
    trials = study.get_trials(deepcopy=False)
    return Counts(
        finished=sum(t.state in (states.COMPLETE, states.PRUNED) for t in trials),
        running=sum(t.state == states.RUNNING for t in trials),
        failed=sum(t.state == states.FAIL and "error" in t.user_attrs for t in trials),
    )


def heartbeat_enabled(study: optuna.Study) -> bool:
    from optuna.storages._heartbeat import is_heartbeat_enabled  # Optuna exports no public form of this check

    return is_heartbeat_enabled(study._storage)


def fail_lost_trials(study: optuna.Study) -> None:
    """Trials whose worker stopped sending heartbeats are failed and queued again (the storage's callback)."""
    optuna = optuna_module()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def queue_again(study: optuna.Study, number: int, retries: int) -> bool:
    """Queue trial `number` (failed by an interruption) to run again with its values, as Optuna's retry callback
    does for a lost trial; False when it was not failed or has used its retries."""
    optuna = optuna_module()
    frozen = next((t for t in study.get_trials(deepcopy=True) if t.number == number), None)
    if frozen is None or frozen.state != optuna.trial.TrialState.FAIL:
        return False
    before = len(study.get_trials(deepcopy=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=retries)(study, frozen)
    return len(study.get_trials(deepcopy=False)) > before
