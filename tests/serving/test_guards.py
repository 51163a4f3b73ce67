"""What the service refuses: writes without a write scope, writes that break the contract, values
that used to end in a 500, and questions it cannot answer honestly. Real models, real Feast store,
through the BentoML ASGI app; every refusal is checked for what it must not have written."""

from __future__ import annotations

import pandas as pd
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.mlflow]


def post(client, path, body, key=None):
    return client.post(path, json=body, headers={"X-API-Key": key} if key else {})


@pytest.fixture(scope="module")
def ids(served_settings) -> dict[str, list[str]]:
    raw = served_settings.raw_dir
    return {"accounts": pd.read_parquet(raw / "accounts.parquet")["account_id"].head(5).tolist(),
            "leads": pd.read_parquet(raw / "leads.parquet")["lead_id"].tail(5).tolist()}


@pytest.fixture
def counts(served_settings):
    """What a refused write must leave as it was: stored outcomes, predictions, live events."""
    from features.live import LiveStore, live_path
    from serving.predlog import PredictionLog

    def now() -> dict[str, int]:
        with PredictionLog(served_settings.prediction_log_path) as log:
            out = {t: log.count(t) for t in ("outcomes", "predictions")}
        live = LiveStore(live_path(served_settings))
        out.update({t: live.count(t) for t in ("lead_events", "usage_weekly")})
        return out

    return now


def _event(lead: str, i: int = 0) -> dict:
    return {"event_id": f"E-guard-{lead[:20]}-{i}", "lead_id": lead, "occurred_at": "2026-01-05T10:00:00Z",
            "event_type": "page_view", "page": "pricing", "dwell_seconds": 30.0}


def _outcome(entity_type: str, entity_id: str, outcome: str, at: str = "2026-01-05T10:00:00Z") -> dict:
    return {"entity_type": entity_type, "entity_id": entity_id, "outcome": outcome, "value": True, "occurred_at": at}


@pytest.mark.parametrize("role", ["sales", "csm"])
def test_read_roles_cannot_write_and_each_refusal_is_logged(client, keys, ids, counts, served_settings, role):
    from serving.predlog import PredictionLog

    before = counts()
    lead = ids["leads"][0]
    r = post(client, "/events", {"table": "lead_events", "rows": [_event(lead)]}, keys[role])
    assert r.status_code == 403 and r.json()["field"] == "X-API-Key" and "write" in r.json()["error"]
    r = post(client, "/outcomes", {"outcomes": [_outcome("lead", lead, "converted")]}, keys[role])
    assert r.status_code == 403
    assert counts() == before
    with PredictionLog(served_settings.prediction_log_path) as log:
        access = log.access()
    refused = access[(access["status"] == 403) & access["api_key_id"].str.startswith(f"test-{role}-")
                     & access["endpoint"].isin(["/events", "/outcomes"])]
    assert set(refused["endpoint"]) == {"/events", "/outcomes"}
    assert refused["client"].notna().all() and (refused["entities"].map(lambda e: e == [lead])).all()


def test_ingest_writes_and_reads_no_score(client, keys, ids, counts):
    before = counts()
    r = post(client, "/health", {"account_ids": ids["accounts"][:1]}, keys["ingest"])
    assert r.status_code == 403 and "read" in r.json()["error"]
    r = post(client, "/outcomes", {"outcomes": [_outcome("account", ids["accounts"][0], "churned")]}, keys["ingest"])
    assert r.status_code == 200 and r.json()["stored"] == 1
    r = post(client, "/events", {"table": "lead_events", "rows": [_event(ids["leads"][1])]}, keys["admin"])
    assert r.status_code == 200, r.text
    after = counts()
    assert after["outcomes"] == before["outcomes"] + 1 and after["lead_events"] == before["lead_events"] + 1


@pytest.mark.parametrize("case, field", [
    (dict(entity_type="lead", outcome="churned"), "outcomes[0].outcome"),          # a lead does not churn
    (dict(entity_type="account", outcome="converted"), "outcomes[0].outcome"),
    (dict(entity_type="lead", entity_id="L-never-exported"), "outcomes[0].entity_id"),
    (dict(entity_type="account", entity_id="../../x"), "outcomes"),              # refused by the id pattern
    (dict(at="0001-01-01T00:00:00Z"), "outcomes[0].occurred_at"),
    (dict(at="3000-01-01T00:00:00Z"), "outcomes[0].occurred_at"),
])
def test_bad_outcomes_are_refused_and_nothing_is_stored(client, keys, ids, counts, case, field):
    etype = case.get("entity_type", "lead")
    entity = case.get("entity_id", ids["leads" if etype == "lead" else "accounts"][0])
    kind = case.get("outcome", "converted" if etype == "lead" else "churned")
    good = _outcome("lead", ids["leads"][2], "converted")
    bad = _outcome(etype, entity, kind, case.get("at", "2026-01-05T10:00:00Z"))
    before = counts()
    r = post(client, "/outcomes", {"outcomes": [bad, good]}, keys["ingest"])
    assert r.status_code == 400, r.text
    assert field in r.text
    assert counts() == before  # one bad outcome refuses the batch


@pytest.mark.parametrize("lead", ["L-never-exported", "../../x", "x' OR '1'='1", "L" * 500])
def test_events_for_unknown_or_malformed_ids_are_refused(client, keys, counts, lead):
    before = counts()
    r = post(client, "/events", {"table": "lead_events", "rows": [_event(lead)]}, keys["ingest"])
    assert r.status_code == 400, r.text
    assert "lead_id" in r.text and lead[:20] in r.text
    assert counts() == before


def _row(client, keys, account: str) -> dict:
    """An account's served feature values, as a rows= request would send them."""
    r = post(client, "/health", {"account_ids": [account]}, keys["csm"])
    assert r.status_code == 200, r.text
    return {"account_id": account, **r.json()["results"][0]["features"]}


def test_extreme_values_in_rows_are_a_400_not_a_500(client, keys, ids, counts):
    row = _row(client, keys, ids["accounts"][0])
    numeric = next(k for k, v in row.items() if isinstance(v, float) and k != "account_id")
    before = counts()
    for value in (3.5e38, -1e39):
        r = post(client, "/health", {"rows": [{**row, numeric: value}]}, keys["csm"])
        assert r.status_code == 400 and r.json()["field"] == "rows" and numeric in r.json()["error"], r.text
    assert counts() == before
    r = post(client, "/health", {"rows": [{**row, numeric: 3.0e38}]}, keys["csm"])  # large but representable
    assert r.status_code == 200, r.text


def test_rows_scores_are_logged_as_direct_and_left_out_of_drift(client, keys, ids, served_settings):
    from serving.predlog import PredictionLog

    account = ids["accounts"][1]
    row = _row(client, keys, account)
    flag = "early_warning"
    assert flag in row, sorted(row)
    r = post(client, "/health", {"rows": [{**row, flag: True}]}, keys["csm"])  # a flag sent as JSON true
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["results"][0]["features"][flag] == 1.0
    with PredictionLog(served_settings.prediction_log_path) as log:
        mine = log.predictions(model="chs")
        mine = mine[mine["request_id"] == body["request_id"]]
        assert list(mine["variant"]) == ["direct"] and list(mine["entity_id"]) == [account]
        served = log.feature_frame("chs")
    assert body["request_id"] not in set(served["request_id"])  # drift windows do not count it
    assert (served["variant"] != "direct").all()


@pytest.mark.parametrize("since", ["0001-01-01", "1980-06-30", "9999-12-31"])
def test_since_outside_the_known_history_is_a_400_naming_the_range(client, keys, ids, counts, since):
    before = counts()
    r = post(client, "/health", {"account_ids": ids["accounts"][:2], "since": since}, keys["csm"])
    assert r.status_code == 400, r.text[:500]
    body = r.json()
    assert body["field"] == "since" and "available from" in body["error"]
    assert counts() == before  # nothing served, nothing logged


def test_match_with_only_unknown_reps_is_a_400(client, keys, ids, counts):
    before = counts()
    r = post(client, "/match", {"lead_ids": ids["leads"][:2], "rep_ids": ["R-none-1", "R-none-2"]}, keys["sales"])
    assert r.status_code == 400 and r.json()["field"] == "rep_ids" and "R-none-1" in r.json()["error"]
    assert counts() == before


def test_wrong_method_answers_405_with_allow(client, keys):
    r = client.get("/health", headers={"X-API-Key": keys["csm"]})
    assert r.status_code == 405 and r.headers["allow"] == "POST"


def test_a_pushed_column_the_contract_does_not_know_is_refused(client, keys, ids, counts):
    before = counts()
    row = {**_event(ids["leads"][3], 7), "bogus_column": 1.0}
    r = post(client, "/events", {"table": "lead_events", "rows": [row]}, keys["ingest"])
    assert r.status_code == 400 and "bogus_column" in r.text, r.text
    assert counts() == before
