"""Scoring-job benchmark: how fast the whole book is scored in process (CHS with the change since the
previous run attributed), and beside it the /health batch path of the same models.

Builds once, under ``$SALESML_HOME/bench/scoring``, a simulated export with a trained CHS champion.
Every account's features are read point in time at the export's end and four weeks earlier (what
a run attributes against its previous run), and the pairs are resampled to N accounts. Resampled
rows would repeat a thousand accounts over and over, which flatters any shortcut that works per
distinct row, so each resampled account's numeric features are scaled by its own random factors
(lognormal, 5%; the same factor before and after, so what did not change stays unchanged; flags
and two-valued columns untouched). The timed part is ``scoring_job.chs_frame`` (health, drivers,
attribution, texts) plus the transitions, with the features already in memory; the previous run's
scores are computed beforehand. Writes ``$SALESML_HOME/reports/bench_scoring.md``.
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from salesml.settings import Settings

REPEATS = 3  # timed runs per size up to 200,000 accounts (the median is reported); one above


def _prepare(settings: Settings, accounts: int, seed: int, log) -> Settings:
    from benchmarks.home import bench_home, simulated_store
    from training import pipeline

    home = bench_home(settings, "scoring")
    if not (home.root / "mlflow.db").exists():
        log(f"scoring bench: simulating {accounts:,} accounts; building the store; training chs")
        simulated_store(home, online=True, accounts=accounts, leads=200, reps=10, weeks=60, seed=seed)
        pipeline.run(home, "chs", seed=seed, raw_dir=home.raw_dir, log=lambda _: None)
    return home


def book_pairs(home: Settings, core) -> tuple[pd.DataFrame, pd.DataFrame, date]:
    """(features at the previous run, features at the run, the run's date) of the active accounts."""
    from serving.scoring_book import end_of_day, read_book, resolve_as_of

    spec = home.spec("chs")
    service = core.store.get_feature_service(spec.feature_service)
    as_of, _ = resolve_as_of(home, spec, service, None)
    after = read_book(home, spec, core.store, service, as_of).frame
    entity = pd.DataFrame({"account_id": after["account_id"], "event_timestamp": end_of_day(as_of - timedelta(28))})
    before = core.store.get_historical_features(entity_df=entity, features=service).to_df()
    return before, after, as_of


def resample(before: pd.DataFrame, after: pd.DataFrame, n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(after), n)
    b, a = before.iloc[pick].reset_index(drop=True), after.iloc[pick].reset_index(drop=True)
    ids = pd.Series([f"B{i:08d}" for i in range(n)])
    b["account_id"], a["account_id"] = ids, ids
    both = pd.concat([before, after])
    scaled = [c for c in a.columns if a[c].dtype.kind == "f" and both[c].nunique() > 2]
    factor = rng.lognormal(0.0, 0.05, size=(n, len(scaled)))
    b[scaled] = b[scaled].to_numpy() * factor
    a[scaled] = a[scaled].to_numpy() * factor
    return b, a


def _http_rate(home: Settings, ids: list[str], log) -> float:
    """Accounts/s of POST /health with 1,000 ids per call, one client, against a real server."""
    from salesml.processes import free_port
    from serving.auth import KeyStore
    from serving.runner import post, start_background, stop

    port = free_port()
    log("scoring bench: starting the service for the HTTP batch path")
    key = KeyStore(home.api_keys_path).add("csm", "bench-scoring")[1]
    start_background(home, port)
    try:
        post(port, "/health", {"account_ids": ids}, key, timeout=120)  # warm
        t0 = time.perf_counter()
        for _ in range(5):
            status, body = post(port, "/health", {"account_ids": ids}, key, timeout=120)
            if status != 200:
                raise RuntimeError(f"/health answered {status}: {body}")
        return 5 * len(ids) / (time.perf_counter() - t0)
    finally:
        stop(home)


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def _restore(saved: str | None) -> None:
    if saved is None:
        os.environ.pop("SALESML_TRAIN_THREADS", None)
    else:
        os.environ["SALESML_TRAIN_THREADS"] = saved


def run(settings: Settings, sizes=(100_000, 1_000_000), log: Callable[[str], None] = print,
        accounts: int = 1000, seed: int = 7, threads=(1, 2)) -> Path:
    """Measure at each size with each thread count (``SALESML_TRAIN_THREADS`` for the run); the report's path."""
    from benchmarks.home import measured, write_report
    from serving import scores
    from serving.auth import Caller
    from serving.core import ScoringCore
    from serving.scoring_job import chs_frame, level_transitions
    from training import treeshap
    from training.data import prepare_features

    saved = os.environ.get("SALESML_TRAIN_THREADS")
    started = time.perf_counter()
    home = _prepare(settings, accounts, seed, log)
    core = ScoringCore.load(home)
    model = core.models["chs"]["champion"].model
    before, after, as_of = book_pairs(home, core)
    prev_date = as_of - timedelta(28)
    log(f"scoring bench: {len(after):,} real accounts at {as_of} and {prev_date}")
    for lm in [*model.layers.values(), model.full]:  # the per-model TreeSHAP tables, built once per load
        treeshap.contributions(lm, prepare_features(after.head(treeshap.MIN_ROWS), lm.spec))
    rows = []
    for n in sizes:
        b, a = resample(before, after, n, seed)
        prev = model.health_frame(b)[["score", "level", "early_warning"]].assign(account_id=b["account_id"])
        for t in threads:
            os.environ["SALESML_TRAIN_THREADS"] = str(t)
            try:
                log(f"scoring bench: {n:,} accounts, {t} thread(s), scoring with attribution")
                times = []
                for _ in range(REPEATS if n <= 200_000 else 1):  # short runs: the median of three
                    t0 = time.perf_counter()
                    frame = chs_frame(model, a, b, prev, prev_date)
                    frame.insert(1, "as_of", as_of)
                    moved = level_transitions(frame, as_of)
                    times.append(time.perf_counter() - t0)
                secs = float(np.median(times))
            finally:
                _restore(saved)
            with tempfile.TemporaryDirectory(dir=home.root) as tmp:
                t1 = time.perf_counter()
                scores.write_atomic(frame, Path(tmp) / "run.parquet")
                write_s = time.perf_counter() - t1
            layers = frame[["change_contract", "change_behaviour", "change_relationship"]].abs() >= 0.05
            rows.append({"accounts": f"{n:,}", "threads": t, "seconds": f"{secs:.2f}", "runs": len(times),
                         "accounts/s": f"{n / secs:,.0f}",
                         "rows with a layer moved >= 0.05": f"{layers.any(axis=1).mean():.0%}",
                         "transitions": f"{len(moved):,}", "parquet write s": f"{write_s:.1f}",
                         "peak RSS GB": f"{_rss_gb():.1f}"})
            log(f"scoring bench: {n:,} accounts, {t} thread(s): {secs:.1f} s ({n / secs:,.0f}/s); "
                f"written in {write_s:.1f} s")
            del frame, moved
        del b, a, prev
    # the per-account path: /health's scoring core in process, batches of 1,000 ids (online features)
    ids = after["account_id"].tolist()
    caller = Caller("bench", "csm")
    batch = ids[:1000] * (1000 // max(len(ids[:1000]), 1) + 1)
    core.health(caller, batch[:1000])  # warm
    t0 = time.perf_counter()
    for _ in range(3):
        core.health(caller, batch[:1000])
    health_rate = 3000 / (time.perf_counter() - t0)
    since = pd.Timestamp(prev_date, tz="UTC").to_pydatetime()
    t0 = time.perf_counter()
    core.health(caller, ids[:100], since=since)
    since_rate = 100 / (time.perf_counter() - t0)
    http_rate = _http_rate(home, batch[:1000], log)
    took = time.perf_counter() - started
    full = type(model.full).__name__
    trees = {k: v._trees[1] for k, v in model.layers.items()}
    lines = ["# Scoring-job benchmark", "",
             f"{measured()} (CPUs shared with other work); threads: "
             "`SALESML_TRAIN_THREADS` (chunks scored side by side, one XGBoost thread each); command: "
             f"`benchmarks.scoring.run` (`salesml bench scoring`), {took:.0f} s in all.", "",
             f"Model: the CHS champion of a {accounts:,}-account simulated export; churn model {full}, "
             f"layer models {', '.join(f'{k} {v} trees' for k, v in trees.items())}, weights "
             f"{model.weights_version}. Features: {len(after):,} real accounts at {as_of} and four weeks "
             "earlier, resampled to N with each account's numeric features scaled by its own 5% lognormal "
             "factors (so rows are distinct, as in a real book).", "",
             "Timed (the median of `runs`): `chs_frame` (score, level, churn probability, layer sub-scores, "
             "early warning, three drivers, and the change since the previous run by layer and feature with its "
             "text) plus the "
             "transitions, in memory. Not timed: reading the features (two point-in-time reads of the "
             "book), the parquet write (shown), MLflow, the online publish.", "",
             pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True), "",
             "Goal (issue [2.3]): >= 50,000 accounts/s with attribution on 2 cores; 1,000,000 in under a minute.",
             "", "## The request path, for comparison", "",
             f"`ScoringCore.health` in process (what `/health` runs, without HTTP), batches of 1,000 account "
             f"ids read from the online store: {health_rate:,.0f} accounts/s. With `since` (change attributed "
             f"per account, previous features read offline): {since_rate:,.0f} accounts/s (one call of 100). "
             f"Over HTTP (`salesml serve` on this bench's store, `POST /health` with 1,000 ids, one client, "
             f"5 calls): {http_rate:,.0f} accounts/s.", ""]
    return write_report(settings, "scoring", lines, log)
