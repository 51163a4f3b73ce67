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
