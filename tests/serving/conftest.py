"""Keys, a scoring core and the service's ASGI app over the served environment (``served_settings``,
tests/conftest.py: a small export, a materialized store and three registered models)."""

from __future__ import annotations

import pytest


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
