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
