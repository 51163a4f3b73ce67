"""Optuna tuning: TPE over XGBoost parameters, pruning on the validation window.

The objective calls the same ``fit_and_evaluate`` as ``salesml train``; each trial is a nested
MLflow run under one parent; the best parameters are retrained and registered as challenger.
The study lives in persistent storage (SQLite under SALESML_HOME by default,
``SALESML_OPTUNA_STORAGE`` for a database URL; PostgreSQL under the team profile) so several
workers share it: ``--trials`` is the study's total, each worker takes trials under a study lock
until that many have finished, and a worker that dies mid-trial stops sending heartbeats, so
another worker fails its trial after the grace period and runs the slot again.

A study's trials are comparable only on one training set and one split: the study records the
training set's digest (the one MLflow logs) and the seed (which draws the split). Without
``--study`` its name carries both, so new data or another seed starts a fresh study; a named
study measured on other data or another seed is refused with both named.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    from salesml.settings import Settings


def suggest(trial) -> dict:
    return {
        "max_depth": trial.suggest_int("max_depth", 2, 7),
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
        "min_child_weight": trial.suggest_float("min_child_weight", 1.0, 50.0, log=True),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.4, 1.0),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
    }


def pruning_callback(trial, every: int = 10):
    """Report validation log loss to Optuna as boosting goes; stop hopeless trials early."""
    import optuna
    import xgboost as xgb

    class Prune(xgb.callback.TrainingCallback):
        def after_iteration(self, model, epoch, evals_log):
            if epoch % every == 0:
                loss = next(iter(evals_log.values()))["logloss"][-1]
                trial.report(-loss, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at iteration {epoch}")
            return False

    return Prune()


def storage_url(settings: Settings) -> str:
    return settings.optuna_storage_url


FINISHED = ("COMPLETE", "PRUNED")
ACTIVE = ("RUNNING", "WAITING")


_LOCK_ENGINES: dict = {}


def _lock_engine(url: str):
    """One small pool per storage URL and process: connecting for every trial cost ~7 ms."""
    engine = _LOCK_ENGINES.get(url)
    if engine is None:
        import sqlalchemy

        engine = _LOCK_ENGINES[url] = sqlalchemy.create_engine(url, pool_size=1, max_overflow=2,
                                                              pool_pre_ping=True)
    return engine


def release_lock_engine(url: str) -> None:
    """Close this process's pool for the storage ``url`` (before its database is dropped)."""
    engine = _LOCK_ENGINES.pop(url, None)
    if engine is not None:
        engine.dispose()


@contextlib.contextmanager
def study_lock(settings: Settings, url: str, study_name: str):
    """One worker at a time decides whether the study needs another trial and asks for it.

    PostgreSQL: a session advisory lock keyed by the study name (workers on any machine); other
    storages: an exclusive ``flock`` on a file under SALESML_HOME (workers on this machine).
    """
    key = zlib.crc32(f"salesml-optuna:{study_name}".encode()) - 2**31
    if url.startswith("postgresql"):
        import sqlalchemy

        with _lock_engine(url).connect() as con:
            con.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                try:
                    con.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    con.commit()
                except Exception:
                    con.invalidate()  # closing the session is what releases its lock then
                    raise
        return
    import fcntl

    path = settings.root / f".optuna-{key & 0xFFFFFFFF:08x}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class Heartbeat:
    """Records a trial's heartbeat every ``interval`` seconds from a thread while it runs, so
    that another worker fails the trial (``fail_stale_trials``) once this process is gone."""

    def __init__(self, storage, trial_id: int, interval: float):
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self.stop.wait(self.interval):
            self.storage.record_heartbeat(self.trial_id)

    def __enter__(self):
        self.storage.record_heartbeat(self.trial_id)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


class StudyMismatch(ValueError):
    """A named study whose trials were measured on another training set or split."""


def default_study_name(name: str, digest: str | None, seed: int) -> str:
    """``salesml-<model>``, then the training set's digest and the seed when known."""
    return f"salesml-{name}" + (f"-{digest}-seed{seed}" if digest is not None else "")


def _check_measured_on(study, digest: str, seed: int) -> None:
    """Record what the study's trials are measured on, or refuse a study measured on something else."""
    want = {"dataset_digest": digest, "seed": seed}
    have = {k: study.user_attrs[k] for k in want if k in study.user_attrs}
    if have == want:
        return
    if not have and not study.get_trials(deepcopy=False):
        for key, value in want.items():
            study.set_user_attr(key, value)
        return
    was = (f"training set {have.get('dataset_digest', '?')} with --seed {have.get('seed', '?')}" if have
           else "a training set and split it does not record")
    raise StudyMismatch(f"study '{study.study_name}' holds trials measured on {was}; this run has training set "
                        f"{digest} with --seed {seed}, on which those scores do not compare. Leave --study out "
                        "(a study per training set and seed) or name a new one.")


def open_study(settings: Settings, name: str, study_name: str | None, seed: int, heartbeat: float, grace: float,
               digest: str | None = None):
    """Create or load the study; under the study lock, as workers starting together would race
    to create the tables and the study. With ``digest`` (the training set's), the study is tied to
    it and to ``seed``: see the module docstring."""
    import warnings

    import optuna

    warnings.filterwarnings("ignore", message="Heartbeat of storage", category=UserWarning)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # "A new study created in RDB with name: ..." and a line per trial: with --verbose only (the
    # command prints its own progress); optuna sets its logger to INFO when first imported
    optuna.logging.set_verbosity(optuna.logging.INFO if settings.verbose else optuna.logging.WARNING)
    study_name = study_name or default_study_name(name, digest, seed)
    with study_lock(settings, storage_url(settings), study_name):
        storage = optuna.storages.RDBStorage(storage_url(settings), heartbeat_interval=max(1, int(heartbeat)),
                                             grace_period=max(2, int(grace)),
                                             heartbeat_stale_trial_callback=functools.partial(
                                                 mark_run_killed, settings=settings))
        study = optuna.create_study(
            study_name=study_name, storage=storage, load_if_exists=True,
            direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=20),
        )
        if digest is not None:
            _check_measured_on(study, digest, seed)
        return study


def mark_run_killed(study, trial, *, settings: Settings) -> None:
    """A trial failed for a dead worker: its MLflow run (left RUNNING) is ended as KILLED."""
    run_id = trial.user_attrs.get("mlflow_run_id")
    if run_id:
        from training import tracking

        tracking.client(settings).set_terminated(run_id, status="KILLED")


def next_trial(study, target: int, seed: int | None = None):
    """Under the study lock: the next trial to run, "done" when ``target`` trials finished, or
    None when every remaining slot is taken by another worker's running trial (wait, then ask
    again: a dead worker's trial turns FAIL after the grace period and frees its slot).

    The sampler is seeded by ``seed`` + the number of trials so far: workers that all started
    with the same seed would otherwise propose the same parameters, and one worker alone still
    proposes the same sequence every time.
    """
    import optuna

    optuna.storages.fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    if _fail_unclaimed(study, trials):
        trials = study.get_trials(deepcopy=False)
    finished = sum(t.state.name in FINISHED for t in trials)
    active = sum(t.state.name in ACTIVE for t in trials)
    if finished >= target:
        return "done"
    if finished + active >= target:
        return None
    if seed is not None:  # TPE reads the history from the storage; only its random state is here
        study.sampler = optuna.samplers.TPESampler(seed=seed + len(trials))
    return study.ask()


def _fail_unclaimed(study, trials) -> bool:
    """Fail RUNNING trials that no worker claimed within the grace period.

    ``fail_stale_trials`` only looks at trials that have a heartbeat. A worker killed between
    ``ask`` and its first heartbeat (both under the study lock, milliseconds apart) leaves a
    RUNNING trial without one, which would hold its slot forever. A worker records the heartbeat
    and then the ``worker`` attribute before it lets go of the lock, so a trial without that
    attribute older than the grace period has no worker.
    """
    from datetime import datetime

    import optuna
    from optuna.trial import TrialState

    grace = getattr(getattr(study._storage, "_backend", study._storage), "grace_period", None)
    if not grace:
        return False
    now, failed = datetime.now(), False
    for t in trials:
        if (t.state == TrialState.RUNNING and "worker" not in t.user_attrs and t.datetime_start is not None
                and (now - t.datetime_start).total_seconds() > grace):
            try:
                failed |= study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass
    return failed


def run_worker(study, target: int, objective: Callable, log: Callable[[str], None], lock, heartbeat: float,
               poll: float = 1.0, seed: int | None = None, worker: str | None = None) -> int:
    """Take trials from the shared study until it holds ``target`` finished ones; trials run here."""
    import optuna
    from optuna.trial import TrialState

    ran = 0
    while True:
        with lock():
            trial = next_trial(study, target, seed)
            if trial is not None and trial != "done":
                study._storage.record_heartbeat(trial._trial_id)
                trial.set_user_attr("worker", worker or _worker_id())
        if trial == "done":
            return ran
        if trial is None:
            time.sleep(poll)
            continue
        with Heartbeat(study._storage, trial._trial_id, heartbeat):
            try:
                value = objective(trial)
            except optuna.TrialPruned as exc:
                frozen = study.tell(trial, state=TrialState.PRUNED)
                log(f"trial {trial.number}: pruned ({exc})")
            except BaseException:
                study.tell(trial, state=TrialState.FAIL)
                raise
            else:
                frozen = study.tell(trial, value)
        ran += 1
        done = [t for t in study.get_trials(deepcopy=False) if t.state.name in FINISHED]
        if frozen.state == TrialState.COMPLETE:
            log(f"trial {trial.number}: complete, valid ROC-AUC {frozen.value:.4f} (best {study.best_value:.4f}; "
                f"{len(done)}/{target} finished)")


def _worker_id() -> str:
    import os
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def run(settings: Settings, name: str, trials: int, seed: int = 42, raw_dir: Path | None = None,
        study_name: str | None = None, log: Callable[[str], None] = print, register: bool = True,
        heartbeat: float = 10.0, grace: float = 60.0) -> dict:
    """Work on the study until it holds ``trials`` finished trials (all workers together).

    Any number of workers may run this on one study (same ``study_name`` and storage): each takes
    trials while the study needs more. All trials are nested MLflow runs under one parent run,
    created by the first worker and shared through the study's user attributes. With
    ``register``, the best parameters are then retrained and registered as challenger.
    """
    import mlflow

    from features.training_sets import build_training_set
    from training import pipeline, tracking

    tracking.configure(settings)
    raw_dir = raw_dir or settings.export_dir
    spec = settings.spec(name, raw_dir)
    # Trials tune the spec's first XGBoost candidate; the final retrain selects among all candidates.
    tuned = next((c for c in spec.candidates if c.startswith("xgboost")), None)
    if tuned is None:
        raise ValueError(f"model '{name}': its spec names no xgboost candidate to tune ({', '.join(spec.candidates)})")
    ts = build_training_set(settings, name, raw_dir=raw_dir, spec=spec)
    digest = tracking.training_set_digest(ts.frame)
    study = open_study(settings, name, study_name, seed, heartbeat, grace, digest=digest)
    url = storage_url(settings)
    experiment = tracking.use_experiment(settings, spec.experiment)
    worker = _worker_id()

    with study_lock(settings, url, study.study_name):
        parent_id = study.user_attrs.get("mlflow_parent_run_id")
        if parent_id is None:
            parent = tracking.client(settings).create_run(
                experiment, run_name=f"{name}-tune",
                tags={"model": name, "study": study.study_name, "git_commit": tracking.git_commit(),
                      "optuna_storage": url.split("@")[-1]})
            parent_id = parent.info.run_id
            study.set_user_attr("mlflow_parent_run_id", parent_id)

    def objective(trial) -> float:
        params = suggest(trial)
        with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True,
                              tags={"worker": worker, "trial_number": str(trial.number)}) as child:
            trial.set_user_attr("mlflow_run_id", child.info.run_id)
            mlflow.log_params(params)
            result = pipeline.fit_and_evaluate(spec, ts.frame, ts.feature_columns, seed, params,
                                               callbacks=[pruning_callback(trial)], candidates=[tuned])
            metrics = {k: v for k, v in result.metrics.items() if k.startswith("valid_") and np.isfinite(v)}
            mlflow.log_metrics(metrics)
            return result.metrics["valid_roc_auc"]

    with mlflow.start_run(run_id=parent_id):
        ran = run_worker(study, trials, objective, log, lambda: study_lock(settings, url, study.study_name),
                         heartbeat, seed=seed)
        done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
        if done:  # every worker of a shared study ends here: one at a time, and a param is logged once
            with study_lock(settings, url, study.study_name):
                logged = mlflow.get_run(parent_id).data.params
                best = {f"best_{k}": v for k, v in study.best_params.items() if f"best_{k}" not in logged}
                if best:
                    mlflow.log_params(best)
                mlflow.log_metric("best_valid_roc_auc", study.best_value)
    log(f"worker {worker}: ran {ran} trial(s); study {study.study_name} holds {trials} finished")
    summary = {"study": study.study_name, "best_params": study.best_params if done else {},
               "best_value": study.best_value if done else float("nan"), "parent_run_id": parent_id,
               "ran": ran}
    if register and done:
        summary["retrained"] = pipeline.run(settings, name, seed=seed, params=study.best_params,
                                            raw_dir=raw_dir, log=log, training_set=ts, spec=spec)
    return summary
