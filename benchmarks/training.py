"""Training benchmark: model quality against the simulator's truth and baselines, the assignment
solver's speed, and CHS training time in-process vs ``xgboost.dask`` on a LocalCluster.
Works in its own homes, ``$SALESML_HOME/bench/training`` and ``bench/training-engine``
(``benchmarks.home``); writes ``$SALESML_HOME/reports/bench_training.md``."""

from __future__ import annotations

import time
from typing import Callable

import pandas as pd
from sklearn.metrics import roc_auc_score

from salesml.settings import Settings


def engine_comparison(settings: Settings, accounts: int, weeks: int = 104, seed: int = 11, workers: int = 2,
                      log: Callable[[str], None] = print) -> tuple[pd.DataFrame, dict]:
    """The CHS XGBoost fit (early stopping, monotone constraints, default parameters) timed in this
    process (1 thread) and with ``xgboost.dask`` on a fresh LocalCluster of ``workers`` x 1 thread,
    same rows and seed; test ROC-AUC of each.

    The dask side is timed twice: the first fit on a new cluster also pays for the workers'
    imports and first task round-trips, the second is what each later fit of a session costs.
    Works in ``$SALESML_HOME/bench/training-engine`` (``settings`` gives that home and the engine)."""
    from benchmarks.home import bench_home, simulated_store
    from features.store import open_store
    from features.training_sets import build_training_set
    from training import engine
    from training.data import LABEL, infer_spec, time_split
    from training.models import fit_xgboost

    settings = bench_home(settings, "training-engine")
    raw = settings.raw_dir
    log(f"engine comparison: simulating {accounts:,} accounts x {weeks} weeks (CHS only, no truth)")
    simulated_store(settings, accounts=accounts, leads=200, reps=20, weeks=weeks, seed=seed, truth_samples=0)
    ts = build_training_set(settings, "chs", raw_dir=raw, store=open_store(settings))
    split = time_split(ts.frame)
    spec = infer_spec(split.train, ts.feature_columns)

    def fit() -> dict:
        t0 = time.perf_counter()
        model = fit_xgboost(split.train, split.valid, spec, seed, None, settings.spec("chs", raw).constraints, "chs")
        secs = time.perf_counter() - t0
        return {"fit seconds": secs, "trees kept": model.booster.best_iteration + 1,
                "test ROC-AUC": roc_auc_score(split.test[LABEL], model.predict_proba(split.test))}

    log(f"engine comparison: CHS in-process on {len(ts.frame):,} rows")
    rows = [{"engine": "local (in-process, 1 thread)", **fit()}]
    dask_settings = settings.model_copy(update={"train_engine": "dask", "dask_scheduler": None,
                                                "dask_workers": workers})
    t0 = time.perf_counter()
    with engine.session(dask_settings) as eng:
        started = time.perf_counter() - t0
        log(f"engine comparison: CHS with xgboost.dask on {eng.cluster} (started in {started:.1f} s)")
        cold, warm = fit(), fit()
    rows += [{"engine": f"dask, {eng.cluster} x 1 thread: first fit", **cold},
             {"engine": f"dask, {eng.cluster} x 1 thread: next fit", **warm}]
    info = {"rows": len(ts.frame), "train rows": len(split.train), "test rows": len(split.test),
            "features": len(spec.columns), "cluster start seconds": started, "accounts": accounts, "weeks": weeks}
    return pd.DataFrame(rows), info


def run(settings: Settings, accounts: int = 3000, leads: int = 20000, reps: int = 60, weeks: int = 104,
        seed: int = 11, log: Callable[[str], None] = print, engine_accounts: int = 40_000):
    """``engine_accounts`` sizes the in-process vs dask comparison (0 skips it): 40,000 accounts x
    104 weeks = ~665k CHS rows, about 1.5 minutes on 2 cores, most of it building the training set."""
    from benchmarks.home import bench_home, measured, simulated_store, write_report
    from features.store import open_store
    from features.training_sets import build_training_set
    from salesml.modelspec import MODEL_NAMES
    from training.assignment import benchmark
    from training.pipeline import fit_and_evaluate
    from training.truth import oracle_probabilities

    home = bench_home(settings, "training")
    raw = home.raw_dir
    log(f"simulating {accounts:,} accounts, {leads:,} leads, {reps} reps, {weeks} weeks (seed {seed})")
    simulated_store(home, accounts=accounts, leads=leads, reps=reps, weeks=weeks, seed=seed)
    store = open_store(home)

    rows = []
    for name in MODEL_NAMES:
        log(f"training {name}")
        spec = home.spec(name, raw)
        ts = build_training_set(home, name, raw_dir=raw, store=store, spec=spec)
        t0 = time.perf_counter()
        result = fit_and_evaluate(spec, ts.frame, ts.feature_columns, seed)
        secs = time.perf_counter() - t0
        test = result.split.test
        oracle = oracle_probabilities(spec, test, raw)
        oracle_auc = roc_auc_score(test["label"], oracle) if oracle is not None else float("nan")
        m = result.metrics
        base = {k.split("_")[1]: v for k, v in m.items() if k.startswith("baseline_") and k.endswith("test_roc_auc")}
        rows.append({"model": name, "chosen": result.selection.chosen, "rows": len(ts.frame), "test rows": len(test),
                     "test ROC-AUC": m["test_roc_auc"], "truth ROC-AUC": oracle_auc,
                     "ratio to truth": m["test_roc_auc"] / oracle_auc,
                     **{f"{b} baseline ROC-AUC": v for b, v in base.items()},
                     "test ECE": m["test_ece"], "fit seconds": secs})
    quality = pd.DataFrame(rows)

    log("assignment solver, 10,000 leads x 1,000 reps")
    timings = [benchmark(10_000, 1_000, seed=s) for s in range(3)]
    assign = pd.DataFrame(timings)[["optimal_seconds", "optimal_expected", "round_robin_expected",
                                    "least_loaded_expected"]]

    engines = None
    if engine_accounts:  # its own, larger export, in a home of its own
        engines, info = engine_comparison(settings, engine_accounts, weeks, seed, log=log)

    lines = ["# Training benchmark", "",
             f"{measured()}; command: `make bench` (`salesml bench training`).", "",
             f"## Model quality on the simulated export ({accounts:,} accounts, {leads:,} leads, "
             f"{reps} reps, {weeks} weeks, seed {seed})", "",
             "Test window = newest 20% of label times. Truth = the simulator's true probability on the same rows "
             "(intent: conversion averaged over reps, since intent sees no rep).", "",
             quality.to_markdown(index=False, floatfmt=".3f"), "",
             "## Assignment solver: 10,000 leads x 1,000 reps (3 random problems)", "",
             assign.to_markdown(index=False, floatfmt=".3f"), ""]
    if engines is not None:
        local_auc, dask_auc = engines["test ROC-AUC"].iloc[0], engines["test ROC-AUC"].iloc[-1]
        lines += [f"## CHS training time: in-process vs xgboost.dask ({info['rows']:,} rows = "
                  f"{info['train rows']:,} train, {info['test rows']:,} test, {info['features']} features; "
                  f"{info['accounts']:,} accounts x {info['weeks']} weeks)", "",
                  "The XGBoost fit alone (early stopping on the validation window, default parameters, same "
                  f"seed). Starting the LocalCluster took {info['cluster start seconds']:.1f} s and is not in "
                  "the fit times; the first fit on a new cluster includes the workers' warm-up.", "",
                  engines.to_markdown(index=False, floatfmt=("", ".2f", ".0f", ".4f")), "",
                  f"Test ROC-AUC difference dask - local: {dask_auc - local_auc:+.4f}.", ""]
    return write_report(settings, "training", lines, log)
