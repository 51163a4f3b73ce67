"""A served environment: a small export, a materialized store and three registered models."""

from __future__ import annotations

import pytest

from salesml.settings import Settings

SMALL = dict(accounts=150, leads=600, reps=12, weeks=60, seed=11)  # as tests/conftest.py


@pytest.fixture(scope="session")
def served_settings(tmp_path_factory) -> Settings:
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


@pytest.fixture(scope="session")
def keys(served_settings) -> dict[str, str]:
    from serving.auth import KeyStore

    store = KeyStore(served_settings.api_keys_path)
    return {role: store.add(role, f"test-{role}")[1] for role in ("sales", "csm", "admin", "ingest")}


@pytest.fixture(scope="session")
def core(served_settings):
    from serving.core import ScoringCore

    return ScoringCore.load(served_settings)


@pytest.fixture(scope="session")
def client(served_settings):
    """The BentoML service's ASGI app (real models, real Feast store), without a server process.

    One per session: BentoML registers its Prometheus metrics in the process-wide registry when an
    app is built, so a second app in the same process would fail. The service and its key gate read
    their settings when the app starts and on the first request; SALESML_HOME is set for those only."""
    from starlette.testclient import TestClient

    from serving.service import SalesScoring

    mp = pytest.MonkeyPatch()
    mp.setenv("SALESML_HOME", str(served_settings.root))
    try:
        with TestClient(SalesScoring.to_asgi(), raise_server_exceptions=False) as c:
            c.post("/health", json={})  # builds the middleware stack, so the gate reads its settings now
            mp.undo()
            yield c
    finally:
        mp.undo()
