"""Feature transforms on tiny inline frames: windows, streaks, missing history."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from features import transforms


def ts(values):
    return pd.to_datetime(values, utc=True)


def weekly_usage(kfu, api, account="a1", start="2024-01-01"):
    n = len(kfu)
    return pd.DataFrame({
        "account_id": [account] * n,
        "week_start": ts(pd.date_range(start, periods=n, freq="W-MON")),
        "logins": [10] * n, "active_users": [5] * n, "key_feature_uses": kfu,
        "api_calls": api, "config_changes": [3] * n,
    })


def test_behaviour_row_is_known_at_week_end():
    out = transforms.behaviour_features(weekly_usage([10, 10], [100, 50]))
    assert out["event_timestamp"].tolist() == list(ts(["2024-01-08", "2024-01-15"]))
    assert out["api_calls_wow"].iloc[1] == pytest.approx(-0.5)


def test_below_baseline_streak_and_early_warning():
    # 5 normal weeks, then key-feature uses and API calls collapse for 3 weeks, then recover.
    out = transforms.behaviour_features(
        weekly_usage([10] * 5 + [2, 2, 2, 10], [100] * 5 + [10, 10, 10, 100]))
    assert out["below_baseline_measures"].tolist()[4:] == [0, 2, 2, 2, 0]
    assert out["below_baseline_streak"].tolist()[4:] == [0, 1, 2, 3, 0]
    assert out["early_warning"].tolist()[4:] == [0, 0, 0, 1, 0]


def test_short_history_gives_missing_trends_not_errors():
    out = transforms.behaviour_features(weekly_usage([10], [100]))
    assert len(out) == 1
    for col in ("api_calls_wow", "api_calls_mom", "below_baseline_streak", "early_warning"):
        assert pd.isna(out[col].iloc[0])
    assert out["key_feature_uses"].iloc[0] == 10


def test_relationship_windows_forget_old_touchpoints():
    interactions = pd.DataFrame({
        "interaction_id": ["i1", "i2"], "account_id": ["a1", "a1"],
        "occurred_at": ts(["2024-01-03", "2024-01-10"]), "channel": ["call", "survey"],
        "communication_quality": [4.0, 2.0], "nps": [pd.NA, 9],
    })
    grid = pd.DataFrame({"account_id": ["a1"] * 3,
                         "event_timestamp": ts(["2024-01-08", "2024-01-15", "2024-05-06"])})
    out = transforms.relationship_features(interactions, grid)
    assert out["touchpoints_90d"].tolist() == [1, 2, 0]
    assert out["communication_quality_90d"].iloc[1] == pytest.approx(3.0)
    assert out["nps_last"].tolist()[1:] == [9, 9]
    assert out["days_since_last_touch"].tolist() == [5, 5, 117]


def test_lead_activity_counts_only_the_trailing_window():
    events = pd.DataFrame({
        "event_id": ["e1", "e2", "e3"], "lead_id": ["l1"] * 3,
        "occurred_at": ts(["2024-01-01", "2024-01-05", "2024-01-20"]),
        "event_type": ["page_view"] * 3, "page": ["pricing", "pricing", "blog"],
        "dwell_seconds": [30.0, 60.0, 5.0],
    })
    out = transforms.lead_activity_features(events)
    assert out["pricing_page_views_7d"].tolist() == [1, 2, 0]
    assert out["pricing_dwell_seconds_7d"].tolist() == [30, 90, 0]
    assert out["events_total"].tolist() == [1, 2, 3]


def test_lead_rep_fit_matches_pipe_separated_skills():
    df = pd.DataFrame({"lead_industry": ["saas", "retail", None], "lead_product": ["edr", "siem", "edr"],
                       "lead_region": ["emea", "na", "na"], "rep_industries": ["finance|saas"] * 3,
                       "rep_products": ["edr"] * 3, "rep_region": ["emea", "emea", "na"]})
    out = transforms.lead_rep_fit(df)
    assert out["industry_match"].tolist() == [1, 0, 0]
    assert out["product_match"].tolist() == [1, 0, 1]
    assert out["region_match"].tolist() == [1, 0, 1]


def test_usage_trend_is_filled_without_the_optional_measures():
    """scans_run / custom_rules left out of the export: the trend averages the measures present."""
    out = transforms.behaviour_features(weekly_usage([10] * 12 + [5] * 4, [100] * 12 + [50] * 4))
    assert "scans_run" not in weekly_usage([1], [1]).columns
    trend = out["usage_trend_4v12"]
    assert trend.iloc[:15].isna().all() and trend.iloc[15] < -0.3
    expected = (math.log(6 / 11) + math.log(51 / 101)) / 2  # key_feature_uses and api_calls only
    assert trend.iloc[15] == pytest.approx(expected)


def test_a_silent_account_stays_below_baseline_and_warned():
    """Usage that stops (weeks missing from the export) is zero activity, not a healthy account:
    the streak keeps counting once the 12-week baseline itself has worn down to zero."""
    usage = weekly_usage([10] * 8, [100] * 8)
    out = transforms.behaviour_features(usage, until=pd.Timestamp("2024-05-27", tz="UTC"))
    assert len(out) == 21  # 8 weeks with rows, 13 silent weeks up to the export end
    silent = out.iloc[8:]
    assert (silent["api_calls"] == 0).all()
    assert (silent["below_baseline_streak"] == list(range(1, 14))).all()
    assert (silent["early_warning"].iloc[2:] == 1).all()
    assert silent["weeks_since_active"].tolist() == list(range(1, 14))
    assert out["active_weeks_26w"].iloc[-1] == 8


def test_a_churned_account_is_not_extended_past_its_churn():
    usage = weekly_usage([10] * 8, [100] * 8)
    stops = pd.Series({"a1": pd.Timestamp("2024-02-27", tz="UTC")})
    out = transforms.behaviour_features(usage, until=pd.Timestamp("2024-05-27", tz="UTC"), stops=stops)
    assert len(out) == 8


def test_custom_usage_measures_become_features_and_activity():
    from features.custom import custom_features
    from salesml.project import ProjectConfig

    project = ProjectConfig.model_validate({"custom_columns": {"usage_weekly": {
        "orders": {"type": "numeric", "min": 0, "aggregations": [{"fn": "mean", "days": 28}]}}}})
    custom = custom_features(project)["usage_weekly"]
    assert [f.name for f in custom] == ["orders", "orders_sum_26w", "orders_sum_52w", "orders_total",
                                        "orders_mean_28d"]
    usage = pd.DataFrame({"account_id": ["a1"] * 3, "week_start": ts(["2024-01-01", "2024-01-08", "2024-01-29"]),
                          "orders": [2, 4, 6]})
    out = transforms.behaviour_features(usage, custom, activity="orders")
    assert out["orders"].tolist() == [2, 4, 0, 0, 6]  # the two missing weeks had no orders
    assert out["orders_total"].tolist() == [2, 6, 6, 6, 12]
    assert out["orders_mean_28d"].iloc[-1] == pytest.approx((4 + 0 + 0 + 6) / 4)
    assert out["weeks_since_active"].tolist() == [0, 0, 1, 2, 0]
    assert out["logins"].isna().all()  # not in this export: empty, and reported by features build
