"""The object-level checks over HTTP (issue 22 item 6): a csm key with an owner and a team records an
intervention only on its own and its team's warnings, a sales key reads only its own/team inbox, a
client cannot date an intervention at the warning's raised_at, and one key cannot freeze a playbook."""

from __future__ import annotations

import pandas as pd
import pytest

from serving.actions.warnings import open_warning_store

pytestmark = pytest.mark.mlflow  # the served environment


def _post(client, path, body, key):
    return client.post(path, json=body, headers={"X-API-Key": key})


@pytest.fixture(scope="module")
def store(served_settings):
    with open_warning_store(served_settings) as s:
        yield s


def _raise(store, account: str, as_of: str) -> dict:
    return store.raise_warnings(pd.DataFrame([{"account_id": account, "as_of": as_of, "old_level": "green",
                                               "new_level": "orange", "score": 40.0}]), source="run",
                              now=pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=3))[0]  # raised 3 h ago


def test_one_key_marking_not_applicable_cannot_freeze_a_playbook(client, keys, store, served_settings):
    accounts = pd.read_parquet(served_settings.raw_dir / "accounts.parquet", columns=["account_id"])["account_id"]
    ids = [_raise(store, a, "2026-03-02")["warning_id"] for a in accounts.iloc[30:40]]
    codes = [_post(client, "/interventions", {"warning_id": wid, "not_applicable": True, "reason": "fuzz"},
                   keys["csm"]).status_code for wid in ids]
    assert set(codes) == {200}, codes
    state = store.playbook_states().set_index("playbook_id").loc["csm-call"]
    assert not state["frozen"] and state["not_applicable_people"] == 1


def _fresh_warnings(store, accounts, as_of: str, n: int) -> list[str]:
    """``n`` new warnings, from accounts that other tests of the session left without an open one."""
    ids: list[str] = []
    for a in accounts:
        raised = store.raise_warnings(pd.DataFrame([{"account_id": a, "as_of": as_of, "old_level": "green",
                                                     "new_level": "orange", "score": 40.0}]), source="run",
                                      now=pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=3))
        ids += [w["warning_id"] for w in raised]
        if len(ids) == n:
            return ids
    raise AssertionError(f"only {len(ids)} of the served accounts could take a new warning, {n} needed")


def _scoped_key(settings, role: str, owner: str | None, team: str | None) -> str:
    from serving.auth import KeyStore

    return KeyStore(settings.api_keys_path).add(role, f"reach-{role}", owner=owner, team=team)[1]


def _accounts_by_owner(store, settings) -> dict[str, list[tuple[str, str]]]:
    """owner -> [(account, team)] for the served export's accounts (its CSMs are not in reps: one team)."""
    accounts = pd.read_parquet(settings.raw_dir / "accounts.parquet", columns=["account_id"])["account_id"]
    out: dict[str, list[tuple[str, str]]] = {}
    for account, (owner, team) in store.owners.lookup(accounts.iloc[60:150]).items():
        out.setdefault(owner, []).append((account, team))
    return {o: a for o, a in out.items() if len(a) >= 3}


def test_http_a_csm_key_acts_on_its_own_and_its_teams_warnings_only(client, store, served_settings):
    owners = _accounts_by_owner(store, served_settings)
    assert len(owners) >= 2, owners.keys()
    (owner, mine), (other_owner, theirs) = list(owners.items())[:2]
    solo = _scoped_key(served_settings, "csm", owner, None)  # an owner, no team: its own warnings only
    own = _fresh_warnings(store, [a for a, _ in mine], "2026-03-09", 1)[0]
    ok = _post(client, "/interventions", {"warning_id": own, "playbook_id": "csm-call"}, solo)
    assert ok.status_code == 200, ok.text
    other = store.get(_fresh_warnings(store, [a for a, _ in theirs], "2026-03-09", 1)[0])
    refused = _post(client, "/interventions", {"warning_id": other["warning_id"], "playbook_id": "csm-call"}, solo)
    assert refused.status_code == 403, refused.text
    assert refused.json()["field"] == "warning_id" and other_owner in refused.json()["error"]
    assert store.get(other["warning_id"])["interventions"] == []  # nothing written
    assert store.get(other["warning_id"])["status"] == "open"
    teamed = _scoped_key(served_settings, "csm", owner, theirs[0][1])  # the other owner's team: reaches it
    assert _post(client, "/interventions", {"warning_id": other["warning_id"], "playbook_id": "csm-call"},
                 teamed).status_code == 200


def test_http_a_scoped_sales_key_reads_its_own_inbox_only(client, store, served_settings):
    (owner, mine), (other_owner, theirs) = list(_accounts_by_owner(store, served_settings).items())[:2]
    _fresh_warnings(store, [a for a, _ in mine], "2026-03-16", 1)
    _fresh_warnings(store, [a for a, _ in theirs], "2026-03-16", 1)
    key = _scoped_key(served_settings, "sales", owner, None)
    got = _post(client, "/warnings", {"limit": 1000}, key)
    assert got.status_code == 200, got.text
    assert {w["owner"] for w in got.json()["warnings"]} == {owner}
    refused = _post(client, "/warnings", {"owner": other_owner}, key)
    assert refused.status_code == 403 and refused.json()["field"] == "owner", refused.text
    # an unscoped admin key still reads the other owner's warnings
    assert _post(client, "/warnings", {"owner": other_owner, "limit": 1000},
                 _scoped_key(served_settings, "admin", None, None)).json()["warnings"]


def test_http_an_intervention_cannot_be_dated_back_to_the_warnings_raise(client, store, served_settings):
    accounts = [a for owned in _accounts_by_owner(store, served_settings).values() for a, _ in owned]
    w = store.get(_fresh_warnings(store, accounts, "2026-03-23", 1)[0])
    key = _scoped_key(served_settings, "admin", None, None)
    back = _post(client, "/interventions", {"warning_id": w["warning_id"], "playbook_id": "csm-call",
                                            "at": w["raised_at"]}, key)
    assert back.status_code == 400 and back.json()["field"] == "at", back.text
    assert "before the request arrived" in back.json()["error"]
    assert store.get(w["warning_id"])["interventions"] == []


def test_http_a_key_over_its_mark_rate_gets_429(client, store, served_settings):
    accounts = pd.read_parquet(served_settings.raw_dir / "accounts.parquet", columns=["account_id"])["account_id"]
    key = _scoped_key(served_settings, "admin", None, None)
    rate = served_settings.playbook_marks_per_key_hour
    ids = _fresh_warnings(store, accounts, "2026-03-30", rate + 1)
    codes = [_post(client, "/interventions", {"warning_id": wid, "not_applicable": True, "reason": "rate"},
                   key).status_code for wid in ids]
    assert codes == [200] * rate + [429], codes
    assert store.get(ids[-1])["interventions"] == []
