"""The Feast store for real: apply, materialize, online reads, pushes, failed builds."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from features.store import build_feature_files, online_features, push_lead_events
from salesml.validation import ContractError

pytestmark = pytest.mark.integration


def test_registry_has_views_and_services(store):
    views = {v.name for v in store.list_feature_views()}
    assert {"contract", "behaviour", "relationship", "lead_activity", "lead_profile", "rep_state"} <= views
    assert {s.name for s in store.list_feature_services()} >= {
        "intent", "lead_match", "chs", "chs_contract_behaviour", "chs_behaviour_only"}
    assert [o.name for o in store.list_on_demand_feature_views()] == ["lead_rep_fit"]


def test_online_values_are_the_latest_as_of_materialization(store_settings, store, raw):
    usage = raw["usage_weekly"].sort_values("week_start")
    last = usage.groupby("account_id").tail(1).set_index("account_id")
    churned = set(raw["churn_events"].query("kind == 'churn'")["account_id"])
    accounts = list(dict.fromkeys(last.index[:10].tolist() + sorted(churned & set(last.index))[:5]))
    online = online_features(store_settings, "chs", [{"account_id": a} for a in accounts], store)
    online = online.set_index("account_id")
    assert churned & set(accounts), "the sample must include churned accounts"
    for a in accounts:  # churned accounts keep their last known values
        assert online.loc[a, "api_calls"] == float(last.loc[a, "api_calls"])
        assert online.loc[a, "key_feature_uses"] == float(last.loc[a, "key_feature_uses"])


def test_pushed_lead_event_changes_online_value_without_materialize(store_settings, store, export_dir, raw):
    lead = raw["leads"]["lead_id"].iloc[3]
    now = pd.Timestamp.now(tz="UTC").floor("s")
    new = pd.DataFrame({"event_id": ["live-1", "live-2"], "lead_id": [lead, lead],
                        "occurred_at": [now - pd.Timedelta(minutes=1), now],
                        "event_type": ["page_view", "tender_signal"], "page": ["pricing", None],
                        "dwell_seconds": [120.0, None]})
    pushed = push_lead_events(store_settings, export_dir, new, store)
    after = online_features(store_settings, "intent", [{"lead_id": lead}], store)
    assert after["pricing_page_views_7d"].iloc[0] == 1  # history is months old: only the new view
    assert after["tender_signals_90d"].iloc[0] >= 1
    assert pushed["lead_id"].tolist() == [lead]
    assert after["events_total"].iloc[0] == len(raw["lead_events"].query("lead_id == @lead")) + 2


def test_invalid_push_is_rejected_and_changes_nothing(store_settings, store, export_dir, raw):
    lead = raw["leads"]["lead_id"].iloc[4]
    before = online_features(store_settings, "intent", [{"lead_id": lead}], store)
    bad = pd.DataFrame({"event_id": ["b1"], "lead_id": [lead], "occurred_at": ["yesterday"],
                        "event_type": ["page_view"]})
    with pytest.raises(ContractError, match="lead_events.occurred_at"):
        push_lead_events(store_settings, export_dir, bad, store)
    after = online_features(store_settings, "intent", [{"lead_id": lead}], store)
    pd.testing.assert_frame_equal(before, after)


def test_failed_build_writes_nothing(store_settings, export_dir, tmp_path):
    files = sorted(store_settings.feature_data_dir.glob("*.parquet"))
    before = {f.name: f.read_bytes() for f in files}
    broken = tmp_path / "broken"
    shutil.copytree(export_dir, broken)
    df = pd.read_parquet(broken / "usage_weekly.parquet")
    df.loc[7, "api_calls"] = -3
    df.to_parquet(broken / "usage_weekly.parquet", index=False)
    with pytest.raises(ContractError, match=r"usage_weekly.api_calls: rows 8"):
        build_feature_files(store_settings, broken, progress=lambda _: None)
    after = {f.name: f.read_bytes() for f in sorted(store_settings.feature_data_dir.glob("*.parquet"))}
    assert after == before
    assert not list(store_settings.feature_data_dir.parent.glob(".staging-*"))


def test_pushed_usage_week_updates_behaviour_online(store_settings, store, export_dir, raw):
    from features.store import push_events

    usage = raw["usage_weekly"]
    alive = usage.groupby("account_id")["week_start"].max()
    account = alive[alive == alive.max()].index[0]
    last = usage[usage["account_id"] == account].sort_values("week_start").iloc[-1]
    week = pd.DataFrame([{**last.to_dict(), "week_start": last["week_start"] + pd.Timedelta(weeks=1),
                          "api_calls": 0}])
    push_events(store_settings, export_dir, "usage_weekly", week, store)
    online = online_features(store_settings, "chs", [{"account_id": account}], store)
    assert online["api_calls"].iloc[0] == 0
    assert online["api_calls_wow"].iloc[0] == -1.0


def test_opening_a_store_leaves_the_environment_as_it_was(store_settings, monkeypatch):
    # The yaml's ${VARS} double as SALESML_* settings: left behind, one store's registry URL would
    # override the next Settings() in this process and in every subprocess started from it.
    import os

    from features.store import open_store

    monkeypatch.setenv("SALESML_FEAST_PROJECT", "kept")
    monkeypatch.delenv("SALESML_FEAST_REGISTRY_URL", raising=False)
    before = dict(os.environ)
    opened = open_store(store_settings)
    assert opened.project == store_settings.feast_project  # the yaml did see the store's own values
    assert dict(os.environ) == before
