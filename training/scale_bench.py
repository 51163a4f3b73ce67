"""Scale-path benchmark: Optuna trial overhead on SQLite vs PostgreSQL, and CHS training time
in-process vs ``xgboost.dask`` on a LocalCluster. Writes ``$SALESML_HOME/reports/bench_scale.md``.

Both sides of each comparison run in the same process on the same data, one after the other.
"""

from __future__ import annotations

import os
import platform
import time
import uuid
from typing import Callable

import pandas as pd

from salesml.settings import Settings


def optuna_overhead(settings: Settings, url: str, trials: int) -> dict:
    """Seconds per trial of the shared-study worker loop (lock, stale check, ask, heartbeat, tell)
    around an objective that does nothing, i.e. what the storage costs per trial."""
    from training import tuning

    local = settings.model_copy(update={"optuna_storage": url})
    name = f"bench-{uuid.uuid4().hex[:8]}"
    study = tuning.open_study(local, "bench", name, seed=0, heartbeat=10, grace=60)

    def objective(trial) -> float:
        return trial.suggest_float("x", -1, 1) ** 2

    t0 = time.perf_counter()
    tuning.run_worker(study, trials, objective, lambda _: None,
                      lambda: tuning.study_lock(local, url, name), heartbeat=10, seed=0)
    per_trial = (time.perf_counter() - t0) / trials
    finished = sum(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False))
    return {"seconds_per_trial": per_trial, "finished": finished}


def run(settings: Settings, accounts: int = 10_000, weeks: int = 104, trials: int = 100, seed: int = 11,
        log: Callable[[str], None] = print):
    import psycopg
    from sqlalchemy.engine import make_url

    from features.store import apply, build_feature_files, open_store
    from features.training_sets import build_training_set
    from salesml import simulator
    from salesml.team import ServiceError, _sync_url, ensure_databases
    from training import engine
    from training.pipeline import fit_and_evaluate

    settings.ensure_dirs()
    lines = ["# Scale-path benchmark", "",
             f"Measured {pd.Timestamp.now(tz='UTC'):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
             f"{os.cpu_count()} CPUs, Python {platform.python_version()}; "
             "command: `make bench` (`salesml bench scale`).", ""]

    log(f"Optuna overhead: {trials} trials of a no-op objective, SQLite vs PostgreSQL")
    rows = [{"storage": "SQLite (file under SALESML_HOME)",
             **optuna_overhead(settings, f"sqlite:///{settings.root / 'bench-optuna.db'}", trials)}]
    (settings.root / "bench-optuna.db").unlink(missing_ok=True)
    db = f"salesml_bench_optuna_{uuid.uuid4().hex[:6]}"
    pg_url = f"{settings.postgres_url.rstrip('/')}/{db}"
    try:
        ensure_databases(settings.model_copy(update={"optuna_storage": pg_url}))
        rows.append({"storage": "PostgreSQL (advisory lock)", **optuna_overhead(settings, pg_url, trials)})
    except ServiceError as exc:
        rows.append({"storage": f"PostgreSQL: not measured ({exc})"})
    finally:
        admin = _sync_url(str(make_url(pg_url).set(database="postgres")))
        try:
            with psycopg.connect(admin, autocommit=True, connect_timeout=5) as con:
                con.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        except psycopg.OperationalError:
            pass
    table = pd.DataFrame(rows)
    table["ms per trial"] = table.get("seconds_per_trial", pd.Series(dtype=float)) * 1000
    lines += [f"## Optuna trial overhead ({trials} trials, one worker, no-op objective)", "",
              table.drop(columns=[c for c in ("seconds_per_trial",) if c in table]).to_markdown(
                  index=False, floatfmt=".1f"), ""]

    log(f"simulating {accounts:,} accounts x {weeks} weeks for the training comparison")
    raw = settings.root / "bench" / "scale-raw"
    simulator.generate(raw, accounts=accounts, leads=200, reps=20, weeks=weeks, seed=seed, truth_samples=0)
    build_feature_files(settings, raw, progress=lambda _: None)
    apply(settings, progress=lambda _: None)
    ts = build_training_set(settings, "chs", raw_dir=raw, store=open_store(settings))
    results = []
    for label, engine_name in (("in-process XGBoost (1 thread)", "local"),
                               (f"xgboost.dask, LocalCluster({settings.dask_workers} workers x 1 thread)", "dask")):
        log(f"training CHS: {label}")
        with engine.session(settings.model_copy(update={"train_engine": engine_name})) as eng:
            t0 = time.perf_counter()
            result = fit_and_evaluate("chs", ts.frame, ts.feature_columns, seed)
            secs = time.perf_counter() - t0
        results.append({"engine": label, "cluster": eng.cluster, "fit seconds": secs,
                        "trees kept": result.model.booster.best_iteration + 1,
                        "test ROC-AUC": result.metrics["test_roc_auc"]})
    train = pd.DataFrame(results)
    diff = abs(train["test ROC-AUC"].iloc[1] - train["test ROC-AUC"].iloc[0])
    lines += [f"## CHS training: {len(ts.frame):,} rows x {len(ts.feature_columns)} features "
              f"({accounts:,} accounts, {weeks} weeks)", "",
              "Fit = the full churn model with early stopping plus the logistic baseline, same data and seed; "
              "cluster start-up is outside the timing.", "",
              train.to_markdown(index=False, floatfmt=".3f"), "",
              f"Test ROC-AUC difference: {diff:.4f} (goal <= 0.005).", ""]
    report = settings.reports_dir / "bench_scale.md"
    report.write_text("\n".join(lines))
    log(f"report: {report}")
    return report
