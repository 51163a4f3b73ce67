"""The key gate and the key file, without models: a tiny ASGI app stands behind the real Gate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from salesml.settings import Settings
from serving.auth import SCOPES, Caller, KeyFileError, KeyStore
from serving.gate import SCOPE, Gate
from serving.predlog import PredictionLog

SALESML = str(Path(sys.executable).with_name("salesml"))


async def _ok(scope, receive, send):
    """Stands in for the scoring service: answers 200 to whatever passes the gate."""
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b"{}"})


async def _streamed(scope, receive, send):
    """Answers as BentoML's ``IterableResponse`` does: a status with a content-length, the body as a part
    with ``more_body``, then an empty last part. The client has the whole answer with the body part."""
    await receive()
    body = b'{"request_id": "r"}'
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


@pytest.fixture
def gated(tmp_path):
    settings = Settings(home=tmp_path)
    keys = {role: KeyStore(settings.api_keys_path).add(role, f"t-{role}")[1] for role in SCOPES}
    return settings, keys, TestClient(Gate(_ok, settings))


def test_scopes_per_role_and_endpoint(gated):
    settings, keys, client = gated
    for role, key in keys.items():
        for path, scope in SCOPE.items():
            r = client.post(path, json={"account_ids": ["A1"]}, headers={"X-API-Key": key})
            assert r.status_code == (200 if Caller("k", role).may(scope) else 403), (role, path, r.text)
    assert not Caller("k", "ingest").may("read") and not Caller("k", "csm").may("write")
    access = PredictionLog(settings.prediction_log_path).access()
    assert len(access) == len(keys) * len(SCOPE)
    refused = access[access["status"] == 403]
    # sales: 2 writes + /interventions; csm: 2 writes; ingest: 5 reads + /interventions
    assert len(refused) == 3 + 2 + 6
    assert refused["client"].notna().all() and refused["api_key_id"].notna().all()
    assert (refused["entities"].map(lambda e: e == ["A1"])).all()


def test_a_corrupt_key_file_is_a_503_with_an_access_row_and_stops_serve_at_start(gated):
    settings, keys, client = gated
    path = settings.api_keys_path
    path.write_text(path.read_text()[:40])  # truncated mid-entry
    r = client.post("/health", json={"account_ids": ["A1"]}, headers={"X-API-Key": keys["csm"]})
    assert r.status_code == 503 and "key file" in r.json()["error"]
    assert client.get("/livez").status_code == 200  # other paths go by
    access = PredictionLog(settings.prediction_log_path).access()
    assert list(access["status"]) == [503] and access["client"].notna().all()
    with pytest.raises(KeyFileError, match="api_keys.json"):
        KeyStore(path).check()
    env = {**os.environ, "SALESML_HOME": str(settings.root)}
    run = subprocess.run([SALESML, "serve", "--port", "1"], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "api_keys.json is unreadable" in run.stderr and "salesml keys add" in run.stderr


def test_a_key_file_with_a_bad_entry_names_it(tmp_path):
    path = tmp_path / "keys.json"
    path.write_text(json.dumps([{"key_id": "a", "role": "root", "sha256": "0" * 64}]))
    with pytest.raises(KeyFileError, match=r"entry 0\.role"):
        KeyStore(path).check()


def test_concurrent_keys_add_keeps_every_key(tmp_path):
    env = {**os.environ, "SALESML_HOME": str(tmp_path)}
    procs = [subprocess.Popen([SALESML, "keys", "add", "--role", "csm", "--name", f"n{i}"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(6)]
    printed = [p.communicate(timeout=120)[0].strip().splitlines()[-1] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    store = KeyStore(Settings(home=tmp_path).api_keys_path)
    assert store.check() == 6
    assert all(store.resolve(key) is not None for key in printed)


def _call(gate: Gate, key: str, on_send) -> None:
    """One POST /health through ``gate`` as the ASGI server makes it; ``on_send(message)`` sees what leaves."""
    import asyncio

    body = json.dumps({"account_ids": ["A1"]}).encode()
    scope = {"type": "http", "method": "POST", "path": "/health", "query_string": b"", "client": ("127.0.0.1", 5),
             "headers": [(b"x-api-key", key.encode()), (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())]}

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        on_send(message)

    asyncio.run(gate(scope, receive, send))


@pytest.mark.parametrize("app", [_ok, _streamed], ids=["one-part", "bentoml-parts"])
def test_no_byte_of_an_answer_leaves_before_its_access_row_is_committed(tmp_path, app):
    """The guarantee the SIGKILL test (tests/serving/test_server.py) checks: when the status line and the
    body leave, the call's row is already in the log, as another process reads it. A row committed only
    at the empty last part (as before) was lost when the server was killed after the client had read the
    whole answer (content-length bytes) and before that last part."""
    settings = Settings(home=tmp_path)
    key = KeyStore(settings.api_keys_path).add("csm", "t-csm")[1]
    reader = PredictionLog(settings.prediction_log_path)
    seen = []
    _call(Gate(app, settings), key, lambda m: seen.append((m["type"], m.get("body"), reader.count("access"))))
    assert seen[0] == ("http.response.start", None, 1), seen
    assert all(rows == 1 for _, _, rows in seen), seen
    assert b"".join(b or b"" for _, b, _ in seen) == (b"{}" if app is _ok else b'{"request_id": "r"}')
    assert list(reader.access()["status"]) == [200]


async def _fails_after_start(scope, receive, send):
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    raise RuntimeError("the scoring code failed after its status")


def test_an_app_that_fails_after_its_status_is_logged_as_the_500_the_client_gets(tmp_path):
    settings = Settings(home=tmp_path)
    key = KeyStore(settings.api_keys_path).add("csm", "t-csm")[1]
    client = TestClient(Gate(_fails_after_start, settings), raise_server_exceptions=False)
    r = client.post("/health", json={"account_ids": ["A1"]}, headers={"X-API-Key": key})
    assert r.status_code == 500
    assert list(PredictionLog(settings.prediction_log_path).access()["status"]) == [500]


@pytest.mark.parametrize("app", [_ok, _streamed], ids=["one-part", "bentoml-parts"])
def test_an_answer_whose_access_row_cannot_be_written_is_withheld(tmp_path, app):
    """Every access to scores is attributable: no row, no data (503), and nothing half-sent."""
    settings = Settings(home=tmp_path)
    key = KeyStore(settings.api_keys_path).add("csm", "t-csm")[1]
    gate = Gate(app, settings)

    class Broken:
        def append_access(self, record):
            raise OSError("disk full")

    gate._log = Broken()
    r = TestClient(gate).post("/health", json={"account_ids": ["A1"]}, headers={"X-API-Key": key})
    assert r.status_code == 503 and "access log" in r.json()["error"] and r.headers["x-request-id"]
    assert "request_id" not in r.text  # none of the app's answer went out, before or after the 503
