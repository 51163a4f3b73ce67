"""Shared fixtures: one small simulated export and one Feast store built from it per session."""

from __future__ import annotations

import pandas as pd
import pytest

from salesml.settings import Settings

SMALL = dict(accounts=150, leads=600, reps=12, weeks=60, seed=11)


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
    import psycopg

    name = f"salesml_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as con:
            con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_prefix():
    """A unique Feast project name; its Redis keys are removed afterwards."""
    import uuid

    require_service("Redis", "127.0.0.1", 6379)
    import redis

    project = f"t{uuid.uuid4().hex[:10]}"
    yield project
    client = redis.Redis(host="127.0.0.1", port=6379)
    keys = [k for k in client.scan_iter(count=1000) if project.encode() in k]
    if keys:
        client.delete(*keys)
