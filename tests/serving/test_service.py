"""The BentoML service through its ASGI app (real models, real Feast store, no server process)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.mlflow]


@pytest.fixture(scope="module")
def accounts(served_settings):
    return pd.read_parquet(served_settings.raw_dir / "accounts.parquet")["account_id"].head(5).tolist()


def post(client, path, body, key=None, **kw):
    headers = {"X-API-Key": key} if key else {}
    return client.post(path, json=body, headers=headers, **kw)


def test_probes_and_metrics(client):
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200
    metrics = client.get("/metrics").text
    assert "bentoml_service_request" in metrics or "# TYPE" in metrics


def test_health_by_id_with_roles(client, keys, accounts):
    r = post(client, "/health", {"account_ids": accounts[:2] + ["A9999999"]}, keys["csm"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert r.headers["x-request-id"] and len(body["results"]) == 3
    assert body["results"][2]["error"].startswith("unknown account_id")
    assert {"score", "level", "layers", "drivers", "early_warning"} <= set(body["results"][0])
    sales = post(client, "/health", {"account_ids": accounts[:1]}, keys["sales"]).json()["results"][0]
    assert "layers" not in sales and "drivers" not in sales and "score" in sales


def test_auth_and_role_escalation(client, keys, accounts):
    assert post(client, "/health", {"account_ids": accounts[:1]}).status_code == 401
    assert post(client, "/health", {"account_ids": accounts[:1]}, "sml_wrong").status_code == 401
    r = post(client, "/health", {"account_ids": accounts[:1], "view": "admin"}, keys["csm"])
    assert r.status_code == 403 and r.json()["field"] == "view", r.text[:300]
    narrow = post(client, "/health", {"account_ids": accounts[:1], "view": "sales"}, keys["admin"])
    assert narrow.status_code == 200 and "notes" not in narrow.json()["results"][0]
    bearer = client.post("/health", json={"account_ids": accounts[:1]},
                         headers={"Authorization": f"Bearer {keys['sales']}"})
    assert bearer.status_code == 200


@pytest.mark.parametrize("body, field", [
    ({"account_ids": "A0000001"}, "account_ids"),            # wrong type
    ({"account_ids": []}, "account_ids"),                    # empty list
    ({"account_ids": [1, 2]}, "account_ids"),                # numbers for ids
    ({}, "account_ids"),                                     # nothing to score
    ({"account_ids": ["A0000001"], "rows": [{}]}, "account_ids"),  # both
    ({"account_ids": ["A" + "0" * 80]}, "account_ids"),      # absurd id
    ({"account_ids": ["A0000001"], "since": "yesterday"}, "since"),
    ({"account_ids": ["A0000001"], "view": "root"}, "view"),
    ({"rows": [{"api_calls": "NaN"}]}, "rows"),
    ({"rows": [{"api_calls": 1e400}]}, "rows"),
    ({"rows": [{"not_a_feature": 1.0}]}, "rows"),
])
def test_bad_input_is_a_4xx_naming_the_field(client, keys, body, field):
    r = client.post("/health", content=json.dumps(body).replace("Infinity", "1e400"),
                    headers={"X-API-Key": keys["csm"], "Content-Type": "application/json"})
    assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
    assert field in r.text, r.text


def test_transport_errors(client, keys, accounts):
    k = {"X-API-Key": keys["csm"]}
    r = client.post("/health", content=b"account_ids=A1", headers={**k, "Content-Type": "text/plain"})
    assert r.status_code == 415 and "Content-Type" in r.json()["error"]
    r = client.post("/health", content=b"{not json", headers={**k, "Content-Type": "application/json"})
    assert r.status_code == 400
    big = json.dumps({"account_ids": ["A0000001"] * 200_000})
    r = client.post("/health", content=big, headers={**k, "Content-Type": "application/json"})
    assert r.status_code == 413
    many = {"account_ids": [f"A{i:07d}" for i in range(10_000)]}
    r = post(client, "/health", many, keys["csm"])
    assert r.status_code == 400 and "account_ids" in r.text
    assert client.get("/readyz").status_code == 200  # still up


def test_intent_match_events_outcomes(client, keys, served_settings):
    leads = pd.read_parquet(served_settings.raw_dir / "leads.parquet")["lead_id"].tail(4).tolist()
    r = post(client, "/intent", {"lead_ids": leads}, keys["sales"])
    assert r.status_code == 200 and all("probability" in x for x in r.json()["results"])
    r = post(client, "/match", {"lead_ids": leads, "assign": True, "top": 2}, keys["sales"])
    assert r.status_code == 200, r.text
    assert r.json()["assignment"]["status"] == "proposal"
    r = post(client, "/events", {"table": "lead_events", "rows": [{"event_id": "E-bad", "lead_id": leads[0]}]},
             keys["ingest"])
    assert r.status_code == 400 and "occurred_at" in r.text  # the contract names the missing column
    r = post(client, "/outcomes", {"outcomes": [{"entity_type": "lead", "entity_id": leads[0],
                                                 "outcome": "converted", "value": True,
                                                 "occurred_at": "2026-10-01T10:00:00Z"}]}, keys["ingest"])
    assert r.status_code == 200 and r.json()["stored"] == 1


def test_access_log_attributes_every_call(client, keys, accounts, served_settings):
    from serving.predlog import PredictionLog

    post(client, "/health", {"account_ids": accounts[3:5]}, keys["sales"])
    post(client, "/health", {"account_ids": accounts[:1]})
    access = PredictionLog(served_settings.prediction_log_path).access()
    ok = access[(access["status"] == 200) & access["key_id" if "key_id" in access else "api_key_id"].notna()]
    assert any(sorted(e) == sorted(accounts[3:5]) for e in ok["entities"])
    assert (access["status"] == 401).any()


def test_openapi_document(client):
    doc = client.get("/docs.json").json()
    assert {"/intent", "/match", "/health", "/events", "/outcomes"} <= set(doc["paths"])
