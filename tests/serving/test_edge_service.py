"""The probe's deep-JSON case on the real service (BentoML's ASGI app, real models and store): JSON
nested 999+ levels on a protected endpoint with a valid key used to hang 60 s and end in a plain-text
500 with no log line (a RecursionError is not a ValueError). Now a fast 400 in the service's error
shape, with an access row."""

from __future__ import annotations

import time

import pytest

from serving.gate import MAX_JSON_DEPTH, SCOPE

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.mlflow]


@pytest.mark.parametrize("path", sorted(SCOPE))
def test_edge_deep_json_on_every_protected_endpoint_is_a_fast_400(client, keys, served_settings, path):
    from serving.predlog import PredictionLog

    body = b'{"account_ids": ["A1"], "rows": ' + b"[" * 2000 + b"]" * 2000 + b"}"
    t0 = time.perf_counter()
    r = client.post(path, content=body, headers={"X-API-Key": keys["admin"], "Content-Type": "application/json"})
    assert time.perf_counter() - t0 < 2.0
    assert r.status_code == 400, r.text
    assert r.json() == {"error": f"the body nests arrays and objects deeper than {MAX_JSON_DEPTH} levels",
                        "field": None}
    request_id = r.headers["x-request-id"]
    with PredictionLog(served_settings.prediction_log_path) as log:
        access = log.access()
    row = access[access["request_id"] == request_id]
    assert list(row["status"]) == [400] and list(row["endpoint"]) == [path]
