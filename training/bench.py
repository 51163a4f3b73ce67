"""Training benchmark: model quality against the simulator's truth and baselines, and the
assignment solver's speed.  Writes ``$SALESML_HOME/reports/bench_training.md``."""

from __future__ import annotations

import platform
import time
from typing import Callable

import pandas as pd
from sklearn.metrics import roc_auc_score

from salesml.settings import Settings


def run(settings: Settings, accounts: int = 3000, leads: int = 20000, reps: int = 60, weeks: int = 104,
        seed: int = 11, log: Callable[[str], None] = print):
    from features.store import apply, build_feature_files, open_store
    from features.training_sets import build_training_set
    from salesml import simulator
    from training.assignment import benchmark
    from training.pipeline import fit_and_evaluate
    from training.truth import oracle_probabilities

    settings.ensure_dirs()
    raw = settings.root / "bench" / "training-raw"
    log(f"simulating {accounts:,} accounts, {leads:,} leads, {reps} reps, {weeks} weeks (seed {seed})")
    simulator.generate(raw, accounts=accounts, leads=leads, reps=reps, weeks=weeks, seed=seed)
    build_feature_files(settings, raw, progress=lambda _: None)
    apply(settings, progress=lambda _: None)
    store = open_store(settings)

    rows = []
    for name in ("intent", "lead_match", "chs"):
        log(f"training {name}")
        ts = build_training_set(settings, name, raw_dir=raw, store=store)
        t0 = time.perf_counter()
        result = fit_and_evaluate(name, ts.frame, ts.feature_columns, seed)
        secs = time.perf_counter() - t0
        test = result.split.test
        oracle = oracle_probabilities(name, test, raw)
        oracle_auc = roc_auc_score(test["label"], oracle) if oracle is not None else float("nan")
        m = result.metrics
        base = {k.split("_")[1]: v for k, v in m.items() if k.startswith("baseline_") and k.endswith("test_roc_auc")}
        rows.append({"model": name, "rows": len(ts.frame), "test rows": len(test),
                     "test ROC-AUC": m["test_roc_auc"], "truth ROC-AUC": oracle_auc,
                     "ratio to truth": m["test_roc_auc"] / oracle_auc,
                     **{f"{b} baseline ROC-AUC": v for b, v in base.items()},
                     "test ECE": m["test_ece"], "fit seconds": secs})
    quality = pd.DataFrame(rows)

    log("assignment solver, 10,000 leads x 1,000 reps")
    timings = [benchmark(10_000, 1_000, seed=s) for s in range(3)]
    assign = pd.DataFrame(timings)[["optimal_seconds", "optimal_expected", "round_robin_expected",
                                    "least_loaded_expected"]]

    lines = ["# Training benchmark", "",
             f"Measured {pd.Timestamp.now(tz='UTC'):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
             f"Python {platform.python_version()}; command: `make bench` (`salesml bench training`).", "",
             f"## Model quality on the simulated export ({accounts:,} accounts, {leads:,} leads, "
             f"{reps} reps, {weeks} weeks, seed {seed})", "",
             "Test window = newest 20% of label times. Truth = the simulator's true probability on the same rows "
             "(intent: conversion averaged over reps, since intent sees no rep).", "",
             quality.to_markdown(index=False, floatfmt=".3f"), "",
             "## Assignment solver: 10,000 leads x 1,000 reps (3 random problems)", "",
             assign.to_markdown(index=False, floatfmt=".3f"), ""]
    report = settings.reports_dir / "bench_training.md"
    report.write_text("\n".join(lines))
    log(f"report: {report}")
    return report
