"""The served OpenAPI document and the service agree (issue 22 items 7 and 8), through the app in process.

What the document says a request may be, the service accepts; what it refuses, the service refuses
with a 400 naming the field: no null for a field that is not nullable, no field or query parameter
an endpoint does not take, the ids-or-rows rule of /intent and /health (with /health's ``since``),
and the API key each protected path needs. A sales key reads /match reasons in words and a 400
that names the bad field without listing the model's features."""

from __future__ import annotations

import pandas as pd
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.mlflow]


@pytest.fixture(scope="module")
def doc(client) -> dict:
    r = client.get("/docs.json")
    assert r.status_code == 200
    return r.json()


@pytest.fixture(scope="module")
def ids(served_settings) -> dict[str, list[str]]:
    raw = served_settings.raw_dir
    weeks = pd.read_parquet(raw / "usage_weekly.parquet", columns=["week_start"])["week_start"]
    return {"accounts": pd.read_parquet(raw / "accounts.parquet")["account_id"].head(2).tolist(),
            "since": [str(pd.Timestamp(weeks.quantile(0.8)).date())],  # within every account's history
            "leads": pd.read_parquet(raw / "leads.parquet")["lead_id"].tail(2).tolist(),
            "reps": pd.read_parquet(raw / "reps.parquet")["rep_id"].head(2).tolist()}


def post(client, path: str, body: dict, key: str):
    return client.post(path, json=body, headers={"X-API-Key": key})


def body_schema(doc: dict, path: str) -> dict:
    return doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]


def satisfies(body: dict, schema: dict) -> bool:
    """``body`` against the keywords the one-of rules use (required, not, anyOf, oneOf)."""
    if not all(k in body for k in schema.get("required", ())):
        return False
    if "not" in schema and satisfies(body, schema["not"]):
        return False
    if "anyOf" in schema and not any(satisfies(body, s) for s in schema["anyOf"]):
        return False
    return "oneOf" not in schema or sum(satisfies(body, s) for s in schema["oneOf"]) == 1


def test_every_protected_path_declares_the_api_key(doc):
    from serving.gate import PROTECTED

    schemes = doc["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {**schemes["ApiKey"], "type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert schemes["Bearer"]["type"] == "http" and schemes["Bearer"]["scheme"] == "bearer"
    for path in PROTECTED:
        for method, op in doc["paths"][path].items():
            assert {"ApiKey": []} in op["security"], (path, method)
    assert "security" not in doc["paths"]["/livez"]["get"]


@pytest.mark.parametrize("path, body, field", [
    ("/intent", {"lead_ids": "leads", "rows": None}, "rows"),
    ("/intent", {"lead_ids": "leads", "view": None}, "view"),
    ("/match", {"lead_ids": "leads", "rep_ids": None}, "rep_ids"),
    ("/health", {"account_ids": "accounts", "since": None}, "since"),
    ("/warnings", {"owner": None}, "owner"),
])
def test_null_is_refused_where_the_document_declares_no_null(client, doc, keys, ids, path, body, field):
    prop = body_schema(doc, path)["properties"][field]
    assert not prop.get("nullable") and prop.get("type") != "null" and "anyOf" not in prop, prop
    body = {k: ids[v] if isinstance(v, str) and v in ids else v for k, v in body.items()}
    r = post(client, path, body, keys["csm"])
    assert r.status_code == 400 and r.json()["field"] == field, r.text[:500]
    del body[field]  # left out, the same request is answered
    assert post(client, path, body, keys["csm"]).status_code == 200


def test_a_field_or_query_parameter_an_endpoint_does_not_take_is_refused(client, doc, keys, ids):
    for path in ("/intent", "/match", "/health", "/warnings", "/events", "/outcomes", "/interventions"):
        assert body_schema(doc, path).get("additionalProperties") is False or "oneOf" in body_schema(doc, path), path
    k = {"X-API-Key": keys["csm"]}
    r = client.get("/warnings", params={"limit": 5, "colour": "red"}, headers=k)
    assert r.status_code == 400 and r.json()["field"] == "colour", r.text[:300]
    assert client.get("/warnings", params={"limit": 5}, headers=k).status_code == 200
    r = post(client, "/health", {"account_ids": ids["accounts"], "verbose": True}, keys["csm"])
    assert r.status_code == 400 and r.json()["field"] == "verbose", r.text[:300]


def test_ids_or_rows_as_the_document_says(client, doc, keys, ids, core):
    row = core.online(core.specs["chs"].feature_service, "account_id", ids["accounts"][:1]).drop(columns="_known")
    row = {k: (None if pd.isna(v) else (v.item() if hasattr(v, "item") else v)) for k, v in row.iloc[0].items()}
    schema, since = body_schema(doc, "/health"), ids["since"][0]
    cases = [{"account_ids": ids["accounts"]}, {"rows": [row]}, {"account_ids": ids["accounts"], "since": since},
             {"account_ids": ids["accounts"], "rows": [row]}, {"rows": [row], "since": since},
             {"account_ids": ids["accounts"], "rows": [row], "since": since}, {}]
    for body in cases:
        r = post(client, "/health", body, keys["csm"])
        says = satisfies(body, schema)
        assert says == (r.status_code != 400), (sorted(body), says, r.status_code, r.text[:300])
        assert r.status_code in (200, 400), r.text[:300]
    lead_schema = body_schema(doc, "/intent")
    assert not satisfies({"lead_ids": ids["leads"], "rows": [{}]}, lead_schema)
    assert satisfies({"lead_ids": ids["leads"]}, lead_schema) and satisfies({"rows": [{}]}, lead_schema)


def test_sales_reads_match_reasons_in_words(client, keys, ids, core):
    features = set(core.models["lead_match"]["champion"].columns)
    body = {"lead_ids": ids["leads"], "top": 3}
    sales = post(client, "/match", body, keys["sales"])
    assert sales.status_code == 200, sales.text[:300]
    reasons = [x for r in sales.json()["results"] for rep in r["ranked_reps"] for x in rep["reasons"]]
    assert reasons and not set(reasons) & features, reasons

    from serving.service import SALES_REASON_OTHER, SALES_REASONS, SALES_REASONS_BY_VIEW

    assert set(reasons) <= {*SALES_REASONS.values(), *SALES_REASONS_BY_VIEW.values(), SALES_REASON_OTHER}
    csm = post(client, "/match", body, keys["csm"]).json()  # a csm key still reads the drivers' names
    assert {x for r in csm["results"] for rep in r["ranked_reps"] for x in rep["reasons"]} <= features


@pytest.mark.parametrize("role", ["sales", "csm"])
def test_a_bad_row_names_the_field_not_the_model(client, keys, core, role):
    features = core.models["intent"]["champion"].columns
    r = post(client, "/intent", {"rows": [{"colour": "red"}]}, keys[role])
    assert r.status_code == 400 and r.json()["field"] == "rows" and "colour" in r.json()["error"], r.text[:300]
    assert not [f for f in features if f in r.text], r.text[:500]
    admin = post(client, "/intent", {"rows": [{"colour": "red"}]}, keys["admin"])
    assert admin.status_code == 400 and sum(f in admin.text for f in features) > 1  # an admin reads the list
