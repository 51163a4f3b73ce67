"""Shared fixtures: one small simulated export and one Feast store built from it per session."""

from __future__ import annotations

import os

import pandas as pd
import pytest

import features  # noqa: F401  # before any test module imports feast: Feast as the product imports it (features/__init__.py)
from salesml.settings import Settings

SMALL = dict(accounts=150, leads=600, reps=12, weeks=60, seed=11)


@pytest.fixture(autouse=True)
def _cli_environment_restored():
    """What an in-process CLI invocation (``CliRunner``) puts in ``os.environ`` is put back after the test:
    ``salesml.cli.base.quiet`` sets PYTHONWARNINGS, MLflow's log level and progress bar (``QUIET_ENV``)
    and SALESML_VERBOSE for the servers a command starts, and left there they reached every later test
    and every server later tests started (those of tests/serving/test_server.py among them)."""
    import sys

    saved = dict(os.environ)
    yield
    base = sys.modules.get("salesml.cli.base")
    if base is None:  # no command ran in this process yet
        return
    for name in (*base.QUIET_ENV, "SALESML_VERBOSE"):
        if name in saved:
            os.environ[name] = saved[name]
        else:
            os.environ.pop(name, None)
    base._verbose_env_ours = False


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory):
    from salesml.simulator import generate

    out = tmp_path_factory.mktemp("export")
    generate(out, **SMALL)
    return out


@pytest.fixture(scope="session")
def raw(export_dir) -> dict[str, pd.DataFrame]:
    from salesml.validation import load_valid_export

    return load_valid_export(export_dir)


@pytest.fixture(scope="session")
def store_settings(tmp_path_factory, export_dir) -> Settings:
    """A materialized local Feast store (DuckDB offline, SQLite online) over the small export."""
    from features.store import apply, build_feature_files, materialize

    settings = Settings(home=tmp_path_factory.mktemp("home"))
    build_feature_files(settings, export_dir, progress=lambda _: None)
    apply(settings, progress=lambda _: None)
    materialize(settings)
    return settings


@pytest.fixture(scope="session")
def store(store_settings):
    from features.store import open_store

    return open_store(store_settings)


@pytest.fixture(scope="session")
def served_settings(tmp_path_factory) -> Settings:
    """A served environment: a small export, a materialized store and three registered models (one per
    session, for tests/serving and for the benchmarks' short runs in tests/benchmarks)."""
    from features.store import apply, build_feature_files, materialize
    from salesml.simulator import generate
    from training import pipeline

    settings = Settings(home=tmp_path_factory.mktemp("served"))
    settings.ensure_dirs()
    generate(settings.raw_dir, truth_samples=0, **SMALL)  # no served test reads the Monte Carlo churn truth
    build_feature_files(settings, settings.raw_dir, progress=lambda _: None)
    apply(settings, progress=lambda _: None)
    materialize(settings)
    for name in ("intent", "lead_match", "chs"):
        pipeline.run(settings, name, seed=3, raw_dir=settings.raw_dir, log=lambda _: None)
    return settings


@pytest.fixture
def chromium() -> str:
    """Debian's chromium (``make browser`` installs it): skipped where it is missing, failed under
    SALESML_REQUIRE_SERVICES (CI)."""
    from experiments.ui import chromium_path

    try:
        return chromium_path()
    except RuntimeError as exc:
        if os.environ.get("SALESML_REQUIRE_SERVICES"):
            pytest.fail(f"{exc}; SALESML_REQUIRE_SERVICES is set, so this is an error")
        pytest.skip(str(exc))


def require_service(name: str, host: str, port: int) -> None:
    """Skip when a service is unreachable, unless SALESML_REQUIRE_SERVICES is set (CI): then fail."""
    import os
    import socket

    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError as exc:
        msg = f"{name} not reachable at {host}:{port} ({exc})"
        if os.environ.get("SALESML_REQUIRE_SERVICES"):
            pytest.fail(f"{msg}; SALESML_REQUIRE_SERVICES is set, so this is an error")
        pytest.skip(msg)


@pytest.fixture
def postgres_database():
    """A fresh PostgreSQL database for one test, dropped afterwards; yields its SQLAlchemy URL."""
    import uuid

    require_service("PostgreSQL", "127.0.0.1", 5432)
    from salesml.team import create_database, drop_database

    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/salesml_test_{uuid.uuid4().hex[:10]}"
    create_database(url)
    try:
        yield url
    finally:
        drop_database(url)


@pytest.fixture
def redis_prefix():
    """A unique Feast project name; its Redis keys are removed afterwards."""
    import uuid

    require_service("Redis", "127.0.0.1", 6379)
    from salesml.team import delete_feast_keys

    project = f"t{uuid.uuid4().hex[:10]}"
    yield project
    delete_feast_keys("127.0.0.1:6379", project)


@pytest.fixture(scope="session")
def team_env(tmp_path_factory):
    """The team profile on the real services, once per session: PostgreSQL databases with a unique
    prefix, an MLflow server on them (``salesml team up``), a unique Feast project (Redis keys).

    Yields the environment (``SALESML_*``) a command needs to run under this profile (pass it to the
    subprocess, or to ``Settings(**...)``-style code; the test process's own environment is left
    alone so other tests keep the local profile); afterwards the server is stopped, the databases
    are dropped and the project's Redis keys deleted.
    """
    import uuid

    require_service("PostgreSQL", "127.0.0.1", 5432)
    require_service("Redis", "127.0.0.1", 6379)
    from experiments.ui import _free_port
    from salesml.team import delete_feast_keys, down, drop_database, postgres_urls, up

    port = _free_port()
    tag = uuid.uuid4().hex[:8]
    env = {"SALESML_PROFILE": "team", "SALESML_HOME": str(tmp_path_factory.mktemp("team-home")),
           "SALESML_TEAM_DB_PREFIX": f"salesml_t{tag}", "SALESML_FEAST_PROJECT": f"t{tag}",
           "SALESML_MLFLOW_SERVER_PORT": str(port)}
    settings = Settings(profile="team", home=env["SALESML_HOME"], team_db_prefix=env["SALESML_TEAM_DB_PREFIX"],
                        feast_project=env["SALESML_FEAST_PROJECT"], mlflow_server_port=port)
    try:
        up(settings, show=lambda _: None)
        yield env
    finally:
        # `salesml team down` as a user runs it (the README's command); the library call is the fallback
        import subprocess
        import sys
        from pathlib import Path

        salesml = str(Path(sys.executable).with_name("salesml"))
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("SALESML_", "MLFLOW_"))}
        stopped = subprocess.run([salesml, "team", "down"], env={**inherited, **env}, capture_output=True, text=True)
        if stopped.returncode != 0:
            down(settings, show=lambda _: None)
        for url in postgres_urls(settings).values():
            drop_database(url)
        delete_feast_keys(settings.redis_url, settings.feast_project)
        assert stopped.returncode == 0 and "Traceback" not in stopped.stderr, (
            f"salesml team down failed ({stopped.returncode}): {stopped.stderr[-3000:]}")
