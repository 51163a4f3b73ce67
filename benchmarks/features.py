"""Feature-store benchmark: simulator, materialize, point-in-time joins, online reads.

Works in its own home, ``$SALESML_HOME/bench/features`` (``benchmarks.home``), and writes
``$SALESML_HOME/reports/bench_features.md``.  Every figure in it is measured in the
same run on the same machine, so ratios (our ASOF path vs a plain DuckDB ASOF JOIN vs Feast's
own duckdb join) compare like with like.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from salesml.settings import Settings


def _timed(fn: Callable, repeat: int = 1) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def _latency_ms(fn: Callable, n: int) -> tuple[float, float]:
    fn()  # warm caches and connections
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    q = statistics.quantiles(samples, n=100)
    return statistics.median(samples), q[98]


def plain_asof_join(labels: pd.DataFrame, feature_file: Path, columns: list[str],
                    ttl_days: int) -> pd.DataFrame:
    """The same point-in-time join written by hand: ASOF JOIN, the view's TTL, input order."""
    import duckdb

    fresh = f"f.event_timestamp >= l.event_timestamp - INTERVAL {ttl_days} DAY"
    cols = ", ".join(f'CASE WHEN {fresh} THEN f."{c}" END AS "{c}"' for c in columns)
    with duckdb.connect() as con:
        con.register("labels", labels.assign(_row=np.arange(len(labels))))
        return con.sql(
            f"SELECT l.*, {cols} FROM labels l ASOF LEFT JOIN read_parquet('{feature_file}') f "
            "ON l.account_id = f.account_id AND l.event_timestamp >= f.event_timestamp ORDER BY l._row"
        ).df().drop(columns="_row")


def online_read_latency(store, account_ids) -> dict[int, tuple[float, float]]:
    """p50/p99 ms of reading the `chs` service for 1 entity (300 calls) and 100 entities (100 calls)."""
    chs = store.get_feature_service("chs")
    one = [{"account_id": account_ids[0]}]
    hundred = [{"account_id": a} for a in account_ids[:100]]
    return {1: _latency_ms(lambda: store.get_online_features(features=chs, entity_rows=one).to_dict(), 300),
            100: _latency_ms(lambda: store.get_online_features(features=chs, entity_rows=hundred).to_dict(), 100)}


def redis_read_latency(settings: Settings, account_ids) -> tuple[dict[int, tuple[float, float]], str]:
    """The same reads from the team profile's Redis online store, on the same feature files.

    Uses a throwaway Feast project (its Redis keys are deleted afterwards) and a throwaway
    PostgreSQL database for the SQL registry; skipped, with the reason in the note, when
    Redis or PostgreSQL is not reachable.
    """
    import uuid

    from features.store import apply, materialize, open_store
    from salesml.settings import FEATURE_REPO
    from salesml.team import ServiceError, check_redis, delete_feast_keys, drop_database, ensure_databases

    tag = uuid.uuid4().hex[:8]
    db = f"salesml_bench_{tag}"
    team = settings.model_copy(update={"feast_yaml": FEATURE_REPO / "feature_store.team.yaml",
                                       "feast_project": f"bench{tag}",
                                       "feast_registry_url": f"{settings.postgres_url.rstrip('/')}/{db}"})
    try:
        check_redis(team)
        ensure_databases(team)
    except ServiceError as exc:
        return {}, f"Redis column not measured: {exc}"
    try:
        apply(team, progress=lambda _: None)
        secs, counts = _timed(lambda: materialize(team))
        reads = online_read_latency(open_store(team), account_ids)
        note = (f"Redis: `{team.redis_url}`, Feast project `{team.feast_project}` (throwaway), "
                f"materialized {sum(counts.values()):,} entity-view pairs in {secs:.1f} s.")
    finally:
        delete_feast_keys(team.redis_url, team.feast_project)
        drop_database(team.feast_registry)
    return reads, note


def _floats(column: pd.Series) -> np.ndarray:
    """A feature column as float64 with NaN for missing (counts are Int64 and flags boolean in Feast)."""
    return pd.to_numeric(column, errors="coerce").astype("Float64").to_numpy(dtype="float64", na_value=np.nan)


def run(settings: Settings, accounts: int = 12_500, weeks: int = 104, label_rows: int = 200_000,
        seed: int = 3, log: Callable[[str], None] = print, redis: bool = True) -> Path:
    """``redis``: also read from the team profile's Redis online store (skipped, with the reason in
    the report, when Redis or PostgreSQL does not answer)."""
    from benchmarks.home import bench_home, measured, write_report
    from features.store import apply, build_feature_files, materialize, open_store
    from salesml import simulator

    home = bench_home(settings, "features")
    home.ensure_dirs()
    raw = home.raw_dir
    lines: list[str] = []

    log(f"simulating {accounts:,} accounts x {weeks} weeks")
    secs, counts = _timed(lambda: simulator.generate(raw, accounts=accounts, leads=accounts // 2,
                                                     reps=60, weeks=weeks, seed=seed, truth_samples=0))
    rows = sum(counts.values())
    lines += ["## Simulator", "",
              f"`salesml data generate --accounts {accounts} --leads {accounts // 2} --reps 60 --weeks {weeks}`: "
              f"{rows:,} rows in {secs:.1f} s = **{rows / secs:,.0f} rows/s** "
              f"({counts['usage_weekly']:,} usage rows)", ""]

    log("building feature files and applying definitions")
    secs, built = _timed(lambda: build_feature_files(home, raw, progress=lambda _: None))
    apply(home, progress=lambda _: None)
    lines += ["## Feature build (validation + DuckDB transforms)", "",
              f"{sum(built.values()):,} feature rows in {secs:.1f} s", ""]

    log("materializing")
    behaviour_rows = built["behaviour"]
    secs, online_counts = _timed(lambda: materialize(home))
    total_rows = sum(built.values())
    written = sum(online_counts.values())
    lines += ["## Materialize (all views, SQLite online store)", "",
              f"{total_rows:,} offline rows scanned, latest row of {written:,} entity-view pairs written, "
              f"in {secs:.1f} s = **{total_rows / secs:,.0f} offline rows/s**", ""]

    store = open_store(home)
    feature_file = home.feature_data_dir / "behaviour.parquet"
    behaviour = pd.read_parquet(feature_file, columns=["account_id", "event_timestamp"])
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(behaviour), label_rows)
    jitter = pd.to_timedelta(rng.integers(0, 7 * 24 * 3600, label_rows), unit="s")
    labels = pd.DataFrame({
        "account_id": behaviour["account_id"].to_numpy()[pick],
        "event_timestamp": (behaviour["event_timestamp"].to_numpy()[pick] + jitter),
        "label": rng.integers(0, 2, label_rows),
    })
    labels["event_timestamp"] = pd.to_datetime(labels["event_timestamp"], utc=True).astype(
        pd.DatetimeTZDtype("us", "UTC"))
    service = store.get_feature_service("chs_behaviour_only")
    behaviour_view = store.get_feature_view("behaviour")
    feature_cols = [f.name for f in behaviour_view.features]
    ttl_days = int(behaviour_view.ttl.total_seconds() // 86400)

    log(f"point-in-time join: {label_rows:,} labels x {behaviour_rows:,} behaviour rows")
    t_plain, plain = _timed(lambda: plain_asof_join(labels, feature_file, feature_cols, ttl_days), repeat=3)
    t_ours, ours = _timed(lambda: store.get_historical_features(entity_df=labels, features=service).to_df(),
                          repeat=3)
    os.environ["SALESML_FEAST_STOCK_JOIN"] = "1"
    try:
        t_stock, stock = _timed(lambda: store.get_historical_features(entity_df=labels, features=service).to_df())
    finally:
        del os.environ["SALESML_FEAST_STOCK_JOIN"]
    same = all(np.allclose(_floats(ours[c]), _floats(plain[c]), equal_nan=True) for c in feature_cols)
    lines += [f"## Point-in-time training set: {label_rows:,} label rows x {behaviour_rows:,} feature rows", "",
              "| method | seconds | vs plain ASOF JOIN |", "|---|---:|---:|",
              f"| plain DuckDB `ASOF JOIN` (no Feast) | {t_plain:.2f} | 1.0x |",
              f"| Feast `get_historical_features`, our ASOF offline store | {t_ours:.2f} | {t_ours / t_plain:.1f}x |",
              f"| Feast `get_historical_features`, Feast's own duckdb join (ibis) | {t_stock:.2f} "
              f"| {t_stock / t_plain:.1f}x |",
              "", f"Rows out: ours {len(ours):,}, plain {len(plain):,}, Feast's {len(stock):,}; "
              f"ours equals the plain join on every row: {same}. Best of 3 for ours and plain, 1 run for Feast's.", ""]

    log("online reads (SQLite)")
    accounts_online = behaviour["account_id"].drop_duplicates().to_numpy()
    sqlite_reads = online_read_latency(store, accounts_online)
    chs = store.get_feature_service("chs")
    n_feat = sum(len(p.features) for p in chs.feature_view_projections)
    log("online reads (Redis, team profile)")
    redis_reads, redis_note = (redis_read_latency(home, accounts_online) if redis
                               else ({}, "Redis column not measured: not asked for (`redis=False`)."))
    lines += [f"## Online reads (in-process `get_online_features`, service `chs` = {n_feat} features)", "",
              "| entities | SQLite p50 ms | SQLite p99 ms | Redis p50 ms | Redis p99 ms |",
              "|---:|---:|---:|---:|---:|"]
    for n in (1, 100):
        r = redis_reads.get(n, (float("nan"), float("nan")))
        lines.append(f"| {n} | {sqlite_reads[n][0]:.2f} | {sqlite_reads[n][1]:.2f} | {r[0]:.2f} | {r[1]:.2f} |")
    lines += ["", redis_note, ""]

    t_help, _ = _timed(lambda: subprocess.run([sys.executable, "-m", "salesml.cli", "--help"],
                                              capture_output=True, check=True), repeat=3)
    lines += ["## Command line", "", f"`salesml --help`: {t_help:.2f} s (best of 3, new process)", ""]

    header = ["# Feature-store benchmark", "",
              f"{measured()}; command: `make bench` (`salesml bench features`).", ""]
    return write_report(settings, "features", header + lines, log)
