"""The service's warning endpoints on real models and stores: /warnings (role views), /interventions
(who, scope, errors) and the live check after /events (a worsening raises at once, once)."""

from __future__ import annotations

import pandas as pd
import pytest

from serving.actions.warnings import open_warning_store

pytestmark = pytest.mark.mlflow  # the served environment: three models trained and registered (~20 s)


def _post(client, path, body, key):
    return client.post(path, json=body, headers={"X-API-Key": key})


@pytest.fixture(scope="module")
def store(served_settings):
    with open_warning_store(served_settings) as s:
        yield s


def _accounts(served_settings) -> list[str]:
    return pd.read_parquet(served_settings.raw_dir / "accounts.parquet", columns=["account_id"])["account_id"].tolist()


def _raise(store, account: str, old: str, new: str, as_of: str = "2026-01-05") -> list[dict]:
    return store.raise_warnings(pd.DataFrame([{
        "account_id": account, "as_of": as_of, "old_level": old, "new_level": new, "score": 30.0,
        "previous_score": 55.0, "early_warning": False, "previous_early_warning": False,
        "churn_probability": 0.4, "change_text": "CHS fell 25.0 points, mainly because api_calls fell 80%",
        "change_points": -25.0}]), source="run")


def test_inbox_views_by_role_and_filters(client, keys, store, served_settings):
    account = _accounts(served_settings)[3]
    raised = _raise(store, account, "yellow", "red")
    assert len(raised) == 1
    wid = raised[0]["warning_id"]

    csm = _post(client, "/warnings", {"level": "red", "limit": 1000}, keys["csm"])
    assert csm.status_code == 200, csm.text
    mine = [w for w in csm.json()["warnings"] if w["warning_id"] == wid]
    assert len(mine) == 1 and mine[0]["change_text"].startswith("CHS fell 25.0 points")
    assert mine[0]["new_level"] == "red" and mine[0]["due_at"] > mine[0]["raised_at"]
    assert all(w["level"] == "red" for w in csm.json()["warnings"])

    sales = _post(client, "/warnings", {"limit": 1000}, keys["sales"]).json()["warnings"]
    assert [w for w in sales if w["warning_id"] == wid] and all("change_text" not in w for w in sales)
    assert _post(client, "/warnings", {}, keys["ingest"]).status_code == 403
    bad = _post(client, "/warnings", {"level": "purple"}, keys["csm"])
    assert bad.status_code == 400 and bad.json()["field"]


def test_inbox_answers_get_with_the_filters_as_query(client, keys, store, served_settings):
    account = _accounts(served_settings)[5]
    wid = _raise(store, account, "green", "red")[0]["warning_id"]
    got = client.get("/warnings", params={"level": "red", "limit": "1000"}, headers={"X-API-Key": keys["csm"]})
    assert got.status_code == 200, got.text
    assert got.json() == {**_post(client, "/warnings", {"level": "red", "limit": 1000}, keys["csm"]).json(),
                          "request_id": got.json()["request_id"]}
    assert wid in {w["warning_id"] for w in got.json()["warnings"]}
    assert {w["level"] for w in got.json()["warnings"]} == {"red"}
    sales = client.get("/warnings", headers={"X-API-Key": keys["sales"]})
    assert sales.status_code == 200 and all("change_text" not in w for w in sales.json()["warnings"])
    assert client.get("/warnings", headers={"X-API-Key": keys["ingest"]}).status_code == 403
    assert client.get("/warnings").status_code == 401
    bad = client.get("/warnings", params={"limit": "many"}, headers={"X-API-Key": keys["csm"]})
    assert bad.status_code == 400 and bad.json()["field"] == "limit"
    other = client.get("/health", headers={"X-API-Key": keys["csm"]})
    assert other.status_code == 405 and other.headers["allow"] == "POST"
    wrong = client.put("/warnings", headers={"X-API-Key": keys["csm"]})
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET, POST"


def test_interventions_record_who_and_refuse_what_they_cannot(client, keys, store, served_settings):
    account = _accounts(served_settings)[4]
    wid = _raise(store, account, "green", "orange")[0]["warning_id"]

    assert _post(client, "/interventions", {"warning_id": wid}, keys["sales"]).status_code == 403
    unknown = _post(client, "/interventions", {"warning_id": "w-0123abcd"}, keys["csm"])
    assert unknown.status_code == 404 and unknown.json()["field"] == "warning_id" and "w-0123abcd" in unknown.text
    no_reason = _post(client, "/interventions", {"warning_id": wid, "not_applicable": True}, keys["csm"])
    assert no_reason.status_code == 400 and no_reason.json()["field"] == "reason"
    assert store.get(wid)["interventions"] == []  # refused calls recorded nothing

    ok = _post(client, "/interventions", {"warning_id": wid, "playbook_id": "csm-call"}, keys["csm"])
    assert ok.status_code == 200, ok.text
    record = store.get(wid)
    assert record["status"] == "handled"
    answer = ok.json()["warning"]
    assert answer["status"] == "handled" and "holdout" not in answer and "prompted" not in answer
    assert [i["by"] for i in record["interventions"]] == [i["by"] for i in answer["interventions"]]
    assert record["interventions"][0]["by"].startswith("test-csm-")  # the calling key, not a body field


def test_a_pushed_event_that_worsens_a_level_raises_one_warning_at_once(client, keys, core, store, served_settings):
    from serving.auth import Caller

    ids = _accounts(served_settings)
    scored = core.health(Caller("t", "csm"), ids[:60], record=False)["results"]
    account = next(r["account_id"] for r in scored if "level" in r and r["level"] != "green")
    # its last known level: green on an earlier date (as a run would have left it)
    assert _raise(store, account, "green", "green", as_of="2026-01-12") == []
    usage = pd.read_parquet(served_settings.raw_dir / "usage_weekly.parquet")
    last = usage[usage["account_id"] == account].sort_values("week_start").iloc[-1].to_dict()
    row = {k: (v.isoformat() if isinstance(v, pd.Timestamp) else v) for k, v in last.items() if pd.notna(v)}
    row["week_start"] = (last["week_start"] + pd.Timedelta(weeks=1)).isoformat()

    pushed = _post(client, "/events", {"table": "usage_weekly", "rows": [row]}, keys["admin"])
    assert pushed.status_code == 200, pushed.text
    raised = pushed.json()["warnings"]["raised"]
    assert len(raised) == 1
    warning = store.get(raised[0])
    assert warning["account_id"] == account and warning["source"] == "live" and warning["old_level"] == "green"
    assert warning["playbook_id"] and warning["owner"]

    row["week_start"] = (last["week_start"] + pd.Timedelta(weeks=2)).isoformat()
    again = _post(client, "/events", {"table": "usage_weekly", "rows": [row]}, keys["admin"])
    assert again.status_code == 200 and again.json()["warnings"]["raised"] == []


def test_history_timeline_by_role(client, keys, served_settings):
    from datetime import date

    from serving import scores

    account = _accounts(served_settings)[5]
    base = {"account_id": account, "churn_probability": 0.2, "early_warning": False, "restated": False,
            "model_version": "1", "weights_version": "initial", "run_id": "r"}
    first = pd.DataFrame([{**base, "as_of": date(2026, 8, 31), "score": 61.0, "level": "yellow",
                           "change_points": None, "change_text": None, "previous_as_of": None,
                           "previous_score": None}])
    second = pd.DataFrame([{**base, "as_of": date(2026, 9, 7), "score": 47.5, "level": "orange",
                            "change_points": -13.5, "change_contract": 0.0, "change_behaviour": -13.5,
                            "change_relationship": 0.0, "change_text": "CHS fell 13.5 points, mainly because "
                            "api_calls fell 60%", "previous_as_of": date(2026, 8, 31), "previous_score": 61.0}])
    written = [scores.write(served_settings, "chs", date(2026, 8, 31), first),
               scores.write(served_settings, "chs", date(2026, 9, 7), second)]
    try:
        _check_history(client, keys, served_settings, account)
    finally:  # the served environment is shared: leave no score run behind
        for path in written:
            path.unlink()


def _check_history(client, keys, served_settings, account):

    csm = _post(client, "/health/history", {"account_id": account}, keys["csm"])
    assert csm.status_code == 200, csm.text
    timeline = csm.json()["timeline"]
    assert [(r["as_of"], r["level"], r["score"]) for r in timeline] == [("2026-08-31", "yellow", 61.0),
                                                                       ("2026-09-07", "orange", 47.5)]
    assert timeline[1]["change_text"].startswith("CHS fell 13.5") and timeline[1]["change_behaviour"] == -13.5
    assert "interactions" in csm.json()["sources"]
    sales = _post(client, "/health/history", {"account_id": account}, keys["sales"]).json()["timeline"]
    assert sales[1]["change_points"] == -13.5 and "change_text" not in sales[1] and "change_behaviour" not in sales[1]
    unknown = _post(client, "/health/history", {"account_id": _accounts(served_settings)[6]}, keys["csm"])
    assert unknown.status_code == 404 and unknown.json()["field"] == "account_id"
    assert _post(client, "/health/history", {"account_id": account}, keys["ingest"]).status_code == 403
