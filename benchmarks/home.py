"""Where a benchmark works and what it leaves: its own home, ``$SALESML_HOME/bench/<name>``, and one
report under ``$SALESML_HOME/reports``.

A benchmark rebuilds what it measures (an export, feature files, the Feast registry and online
store, MLflow runs, models, a prediction log), so it must never do that in the demo's stores:
``make bench`` after ``make demo`` leaves the demo's export, feature files, online store, runs and
models exactly as they were.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from salesml.settings import Settings


def bench_home(settings: Settings, name: str) -> Settings:
    """Settings whose every store lives under ``<settings' home>/bench/<name>``.

    Always the local profile (file registry, SQLite online store, MLflow and Optuna on SQLite under
    that home): the team profile's Redis keys and MLflow server are the demo's. Nothing that points
    at the demo's files or sends messages is carried over (tracking URI, Optuna storage, API keys,
    prediction log, project configuration, export date, webhooks); the rest of the environment is
    (engine, threads, serving limits, the PostgreSQL and Redis addresses a benchmark may open
    throwaway stores on).
    """
    from salesml.settings import FEATURE_REPO

    return Settings(home=settings.root / "bench" / name, profile="local",
                    feast_yaml=FEATURE_REPO / "feature_store.yaml", feast_registry_url=None,
                    mlflow_tracking_uri=None, optuna_storage=None, api_keys_file=None, prediction_log=None,
                    config_file=None, export_as_of=None, warning_webhook_url=None, drift_webhook_url=None)


def write_report(settings: Settings, name: str, lines: list[str], log: Callable[[str], None] = print) -> Path:
    """``$SALESML_HOME/reports/bench_<name>.md`` (``settings`` is the caller's, not a bench home)."""
    report = settings.reports_dir / f"bench_{name}.md"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(lines))
    log(f"report: {report}")
    return report


def simulated_store(home: Settings, online: bool = False, **simulate: Any) -> dict[str, int]:
    """Simulate an export (``salesml.simulator.generate`` arguments) into ``home``'s raw folder, build
    its feature files and Feast registry and, with ``online``, its online store; rows per table."""
    from features.store import apply, build_feature_files, materialize
    from salesml.simulator import generate

    home.ensure_dirs()
    rows = generate(home.raw_dir, **simulate)
    build_feature_files(home, home.raw_dir, progress=lambda _: None)
    apply(home, progress=lambda _: None)
    if online:
        materialize(home)
    return rows


def measured() -> str:
    """The opening of a report's first line: when, on what (``Measured <UTC time> on <machine>, <n>
    CPUs, Python <version>``); the report goes on with its command."""
    import os
    import platform

    import pandas as pd

    return (f"Measured {pd.Timestamp.now(tz='UTC'):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
            f"{os.cpu_count()} CPUs, Python {platform.python_version()}")


def pct(values, q: float) -> float:
    """The ``q``-th percentile of ``values`` (NaN when there are none): every benchmark's latency figures."""
    import numpy as np

    return float(np.percentile(values, q)) if len(values) else float("nan")
