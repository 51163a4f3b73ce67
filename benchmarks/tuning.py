"""What a shared Optuna study costs per trial: the worker loop of ``training.tuning`` (study lock,
``fail_stale_trials``, counting, ``ask``, heartbeat, ``tell``) around an objective that does nothing,
on SQLite and on PostgreSQL, one after the other in one run.

SQLite runs in a throwaway file in the bench's own home, ``$SALESML_HOME/bench/tuning`` (its study
locks too); PostgreSQL in a throwaway database created on ``settings.postgres_url`` and dropped
afterwards. Writes ``$SALESML_HOME/reports/bench/tuning.{json,md}``.
"""

from __future__ import annotations

import json
import os
import platform
import time
import uuid
from typing import Callable

from salesml.settings import Settings

PHASES = ("lock", "fail_stale", "count", "ask", "heartbeat", "suggest", "tell")


def _objective(trial) -> float:
    return trial.suggest_float("x", -1, 1) ** 2


def _open(settings: Settings, url: str, name: str):
    from training import tuning

    local = settings.model_copy(update={"optuna_storage": url})
    study = tuning.open_study(local, "bench", name, seed=0, heartbeat=10, grace=60)
    return local, study


def worker_loop(settings: Settings, url: str, trials: int) -> dict:
    """``tuning.run_worker`` as the workers run it, one worker; seconds per trial overall and
    for the first and last quarter of the trials (the stale check and the count read every
    trial of the study, so the cost grows with the study)."""
    from training import tuning

    name = f"bench-{uuid.uuid4().hex[:8]}"
    local, study = _open(settings, url, name)
    stamps: list[float] = []
    t0 = time.perf_counter()
    ran = tuning.run_worker(study, trials, _objective, lambda _: stamps.append(time.perf_counter()),
                            lambda: tuning.study_lock(local, url, name), heartbeat=10, seed=0)
    total = time.perf_counter() - t0
    gaps = [b - a for a, b in zip([t0, *stamps[:-1]], stamps)]
    q = max(1, len(gaps) // 4)
    return {"ran": ran, "ms_per_trial": 1000 * total / trials,
            "ms_first_quarter": 1000 * sum(gaps[:q]) / q, "ms_last_quarter": 1000 * sum(gaps[-q:]) / q}


def phases(settings: Settings, url: str, trials: int) -> dict:
    """Milliseconds per trial of each step of the worker loop, timed one by one (same calls as
    ``tuning.next_trial`` + ``run_worker``, objective skipped)."""
    import optuna

    from training import tuning

    name = f"bench-{uuid.uuid4().hex[:8]}"
    local, study = _open(settings, url, name)
    spent = dict.fromkeys(PHASES, 0.0)
    for _ in range(trials):
        t = time.perf_counter()
        lock = tuning.study_lock(local, url, name)
        lock.__enter__()
        try:
            spent["lock"] += time.perf_counter() - t
            t = time.perf_counter()
            optuna.storages.fail_stale_trials(study)
            spent["fail_stale"] += time.perf_counter() - t
            t = time.perf_counter()
            states = [tr.state.name for tr in study.get_trials(deepcopy=False)]
            sum(s in tuning.FINISHED for s in states), sum(s in tuning.ACTIVE for s in states)
            spent["count"] += time.perf_counter() - t
            t = time.perf_counter()
            study.sampler = optuna.samplers.TPESampler(seed=len(states))
            trial = study.ask()
            spent["ask"] += time.perf_counter() - t
            t = time.perf_counter()
            study._storage.record_heartbeat(trial._trial_id)
            trial.set_user_attr("worker", "bench")
            spent["heartbeat"] += time.perf_counter() - t
        finally:
            t = time.perf_counter()
            lock.__exit__(None, None, None)
            spent["lock"] += time.perf_counter() - t
        t = time.perf_counter()
        value = _objective(trial)  # TPE samples here: reads the study's trials
        spent["suggest"] += time.perf_counter() - t
        t = time.perf_counter()
        study.tell(trial, value)
        spent["tell"] += time.perf_counter() - t
    return {k: 1000 * v / trials for k, v in spent.items()}


def _process_worker(home: str, url: str, name: str, trials: int, ready, start, results) -> None:
    from training import tuning

    settings = Settings(home=home, optuna_storage=url)
    study = tuning.open_study(settings, "bench", name, seed=0, heartbeat=10, grace=60)
    ready.put(os.getpid())
    start.wait()
    t0 = time.perf_counter()
    ran = tuning.run_worker(study, trials, _objective, lambda _: None,
                            lambda: tuning.study_lock(settings, url, name), heartbeat=10, poll=0.05, seed=0)
    results.put((ran, t0, time.perf_counter()))


def two_workers(settings: Settings, url: str, trials: int) -> dict:
    """Two worker processes on one study, ``trials`` in all; wall milliseconds per trial."""
    import multiprocessing

    from training import tuning

    name = f"bench-{uuid.uuid4().hex[:8]}"
    _open(settings, url, name)  # create tables and study before the workers race for them
    ctx = multiprocessing.get_context("spawn")
    ready, start, results = ctx.Queue(), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_process_worker, args=(str(settings.root), url, name, trials, ready, start, results))
             for _ in range(2)]
    for p in procs:
        p.start()
    for _ in procs:  # imports take seconds: start the loops together once both opened the study
        ready.get(timeout=300)
    start.set()
    out = [results.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    import optuna

    study = optuna.load_study(study_name=name, storage=url)
    finished = sum(t.state.name in tuning.FINISHED for t in study.get_trials(deepcopy=False))
    wall = max(o[2] for o in out) - min(o[1] for o in out)
    return {"ran": [o[0] for o in out], "finished": finished, "ms_per_trial": 1000 * wall / trials}


def _pg_database(settings: Settings) -> tuple[str, Callable[[], None]]:
    """A fresh database on the configured PostgreSQL server; its URL and a function that drops it."""
    from salesml.team import create_database, drop_database

    url = f"{settings.postgres_url.rstrip('/')}/salesml_bench_tuning_{uuid.uuid4().hex[:8]}"
    create_database(url)

    def drop() -> None:
        from training import tuning

        tuning.release_lock_engine(url)
        drop_database(url)

    return url, drop


def _markdown(result: dict) -> str:
    names = [s["storage"] for s in result["storages"]]
    measured = [s for s in result["storages"] if "error" not in s]
    rows = [("one worker, ms per trial (`run_worker`)", "one_worker", "ms_per_trial"),
            ("  first quarter of the trials", "one_worker", "ms_first_quarter"),
            ("  last quarter of the trials", "one_worker", "ms_last_quarter"),
            ("two worker processes, wall ms per trial", "two_workers", "ms_per_trial")]
    rows += [(f"  step: {p}", "phases", p) for p in PHASES]
    head = ["| per trial | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    body = []
    for label, group, key in rows:
        cells = [f"{s[group][key]:.1f}" if "error" not in s else "-" for s in result["storages"]]
        body.append(f"| {label} | " + " | ".join(cells) + " |")
    lines = [f"# Tuning on a shared study: Optuna overhead per trial ({result['trials']} trials, no-op objective)",
             "", f"Measured {result['measured']} on {result['machine']}; command: `salesml bench tuning`.", "",
             *head, *body, ""]
    for s in result["storages"]:
        if "error" in s:
            lines.append(f"{s['storage']}: not measured ({s['error']})")
    if measured:
        lines.append("Steps are timed one by one in a copy of the loop (suggest = the no-op objective's one "
                     "TPE suggestion); "
                     "two workers split the trials as " +
                     "; ".join(f"{s['storage']} {s['two_workers']['ran']}" for s in measured) + ".")
    return "\n".join(lines) + "\n"


def run(settings: Settings, trials: int = 200, log: Callable[[str], None] = print):
    import warnings

    import pandas as pd

    from benchmarks.home import bench_home

    warnings.filterwarnings("ignore", message="Heartbeat of storage", category=UserWarning)
    out_dir = settings.reports_dir / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    home = bench_home(settings, "tuning")
    home.root.mkdir(parents=True, exist_ok=True)
    storages = []
    sqlite_path = home.root / f"bench-tuning-{uuid.uuid4().hex[:8]}.db"
    targets: list[tuple[str, Callable[[], tuple[str, Callable[[], None]]]]] = [
        ("SQLite (flock)", lambda: (f"sqlite:///{sqlite_path}", lambda: sqlite_path.unlink(missing_ok=True))),
        ("PostgreSQL (advisory lock)", lambda: _pg_database(home)),
    ]
    for label, make in targets:
        entry: dict = {"storage": label}
        try:
            url, cleanup = make()
        except Exception as exc:  # PostgreSQL unreachable: report SQLite alone
            entry["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            storages.append(entry)
            log(f"{label}: not measured ({entry['error']})")
            continue
        try:
            log(f"{label}: {trials} trials, one worker")
            entry["one_worker"] = worker_loop(home, url, trials)
            log(f"{label}: {trials} trials, steps timed")
            entry["phases"] = phases(home, url, trials)
            log(f"{label}: {trials} trials, two worker processes")
            entry["two_workers"] = two_workers(home, url, trials)
        finally:
            cleanup()
        storages.append(entry)
    result = {"trials": trials, "measured": f"{pd.Timestamp.now(tz='UTC'):%Y-%m-%d %H:%M} UTC",
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
              "storages": storages}
    (out_dir / "tuning.json").write_text(json.dumps(result, indent=2))
    report = out_dir / "tuning.md"
    report.write_text(_markdown(result))
    log(f"report: {report}")
    return report
