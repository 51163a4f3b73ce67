"""Point-in-time training sets through Feast: no leakage, duplicates, fast path == Feast's join."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.training_sets import build_training_set, collapse_duplicates

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def chs_set(store_settings, export_dir, store):
    return build_training_set(store_settings, "chs", raw_dir=export_dir, store=store)


@pytest.fixture(scope="module")
def intent_set(store_settings, export_dir, store):
    return build_training_set(store_settings, "intent", raw_dir=export_dir, store=store)


def test_training_sets_have_labels_and_features(store_settings, export_dir, store, chs_set, intent_set):
    match = build_training_set(store_settings, "lead_match", raw_dir=export_dir, store=store)
    for ts, n_min in ((chs_set, 200), (intent_set, 100), (match, 100)):
        assert len(ts.frame) >= n_min
        assert 0.02 < ts.frame["label"].mean() < 0.9
        assert ts.frame[ts.feature_columns].notna().any().all()
    assert {"industry_match", "product_match", "region_match"} <= set(match.feature_columns)
    assert "expected_deal_amount" not in match.frame.columns  # subjective field, never a feature


def test_no_behaviour_value_from_after_the_label_time(chs_set, raw):
    """Checked against the raw usage table: each row carries the last week *finished* by then."""
    usage = raw["usage_weekly"].assign(known_at=lambda d: d["week_start"] + pd.Timedelta(days=7))
    rows = chs_set.frame[["account_id", "event_timestamp", "api_calls", "key_feature_uses"]]
    merged = rows.merge(usage, on="account_id", suffixes=("", "_raw"))
    known = merged[merged["known_at"] <= merged["event_timestamp"]]
    latest = known.sort_values("known_at").groupby(["account_id", "event_timestamp"]).tail(1)
    future = merged[merged["known_at"] > merged["event_timestamp"]]
    assert len(future) > 0, "the fixture must contain usage after label times"
    check = rows.merge(latest, on=["account_id", "event_timestamp"], suffixes=("", "_y"))
    assert len(check) == len(rows)
    np.testing.assert_array_equal(check["api_calls"], check["api_calls_raw"].astype(float))
    np.testing.assert_array_equal(check["key_feature_uses"], check["key_feature_uses_raw"].astype(float))


def test_no_lead_event_from_after_the_assignment(intent_set, raw):
    events = raw["lead_events"]
    rows = intent_set.frame[["lead_id", "event_timestamp", "events_total"]]
    merged = rows.merge(events[["lead_id", "occurred_at"]], on="lead_id")
    assert (merged["occurred_at"] > merged["event_timestamp"]).any()
    upto = merged[merged["occurred_at"] <= merged["event_timestamp"]]
    counts = upto.groupby(["lead_id", "event_timestamp"]).agg(n=("occurred_at", "size"),
                                                             last=("occurred_at", "max"))
    check = rows.set_index(["lead_id", "event_timestamp"]).join(counts)
    fresh = check["last"] >= check.index.get_level_values(1) - pd.Timedelta(days=90)
    assert fresh.sum() > 50
    np.testing.assert_array_equal(check.loc[fresh, "events_total"], check.loc[fresh, "n"].astype(float))
    assert check.loc[~fresh, "events_total"].isna().all()  # older than the view's TTL


def test_fast_asof_path_equals_feasts_own_join(store_settings, chs_set, intent_set, monkeypatch, store,
                                               export_dir):
    for fast in (chs_set, intent_set):
        monkeypatch.setenv("SALESML_FEAST_STOCK_JOIN", "1")
        stock = build_training_set(store_settings, fast.model, raw_dir=export_dir, store=store)
        monkeypatch.delenv("SALESML_FEAST_STOCK_JOIN")
        keys = fast.entity_columns + ["event_timestamp"]
        a = fast.frame.sort_values(keys).reset_index(drop=True)
        b = stock.frame.sort_values(keys).reset_index(drop=True)[a.columns]
        pd.testing.assert_frame_equal(a, b, check_dtype=False)


def test_duplicate_label_rows_are_collapsed_positive_wins(store_settings, store):
    t = pd.Timestamp("2024-06-03", tz="UTC")
    labels = pd.DataFrame({"lead_id": ["x1", "x1", "x1", "x2"], "event_timestamp": [t, t, t, t],
                           "label": [0, 1, 0, 0]})
    collapsed, n = collapse_duplicates(labels, ["lead_id"])
    assert n == 2
    assert collapsed.set_index("lead_id")["label"].to_dict() == {"x1": 1, "x2": 0}
    ts = build_training_set(store_settings, "intent", labels=labels, store=store)
    assert len(ts.frame) == 2 and ts.duplicates_collapsed == 2


def test_fast_path_keeps_entity_order_and_count(store_settings, store, raw):
    leads = raw["leads"]["lead_id"].tolist()[:5]
    t = raw["lead_assignments"]["assigned_at"].max()
    entity = pd.DataFrame({"lead_id": leads[::-1] + leads[:1],
                           "event_timestamp": [t] * 6, "label": range(6)})
    frame = store.get_historical_features(entity_df=entity,
                                          features=store.get_feature_service("intent")).to_df()
    assert frame["lead_id"].tolist() == entity["lead_id"].tolist()
    assert frame["label"].tolist() == list(range(6))


def test_single_snapshot_export_yields_training_rows_with_missing_trends(raw, tmp_path):
    """An export with one usage week per account still trains; trend features are just missing."""
    from features.store import apply, build_feature_files
    from salesml.settings import Settings

    usage = raw["usage_weekly"]
    last = usage["week_start"].max() - pd.Timedelta(weeks=30)
    export = tmp_path / "export"
    export.mkdir()
    for name, df in raw.items():
        if name == "usage_weekly":
            df = df[df["week_start"] == last]
        df.to_parquet(export / f"{name}.parquet", index=False)
    settings = Settings(home=tmp_path / "home")
    build_feature_files(settings, export, progress=lambda _: None)
    apply(settings, progress=lambda _: None)
    ts = build_training_set(settings, "chs", raw_dir=export)
    assert len(ts.frame) > 50
    assert ts.frame["api_calls"].notna().all()
    assert ts.frame["api_calls_wow"].isna().all() and ts.frame["early_warning"].isna().all()
