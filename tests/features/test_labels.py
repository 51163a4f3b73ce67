"""Label rows from the model specs on tiny inline exports: snapshots, inactivity churn, comebacks, export end."""

from __future__ import annotations

import pandas as pd
import pytest

from features.training_sets import IncompleteWindows, export_end, label_rows
from salesml.modelspec import SpecError, load_spec
from salesml.project import ProjectConfig


def ts(values):
    return pd.to_datetime(values, utc=True)


def purchases_spec(**churn):
    project = ProjectConfig.model_validate({"models": {"chs": {"churn": {"inactive_weeks": 26, **churn}}}})
    return load_spec("chs", project)


def weeks(account: str, starts: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"account_id": account, "week_start": ts(starts)})


def test_a_single_snapshot_is_observed_at_its_date():
    contracts = pd.DataFrame({"account_id": ["a", "b"], "snapshot_at": ts(["2025-01-06"] * 2)})
    churn = pd.DataFrame({"account_id": ["a"], "occurred_at": ts(["2025-03-01"]), "kind": ["churn"]})
    labels, keys, end = label_rows(load_spec("chs"), {"contracts": contracts, "churn_events": churn},
                                   as_of=pd.Timestamp("2025-08-01", tz="UTC"))
    assert keys == ["account_id"] and end.source == "declared export.as_of"
    assert labels.set_index("account_id")["label"].to_dict() == {"a": 1, "b": 0}
    assert (labels["event_timestamp"] == ts(["2025-01-06"])[0]).all()


def test_incomplete_windows_name_the_horizon_the_end_and_each_table():
    contracts = pd.DataFrame({"account_id": ["a"], "snapshot_at": ts(["2025-01-06"])})
    churn = pd.DataFrame({"account_id": ["a"], "occurred_at": ts(["2025-03-01"]), "kind": ["churn"]})
    with pytest.raises(IncompleteWindows) as err:
        label_rows(load_spec("chs"), {"contracts": contracts, "churn_events": churn})
    msg = str(err.value)
    assert "182-day outcome window" in msg and "label.horizon_days" in msg
    assert "2025-03-01" in msg and "inferred from the latest churn_events.occurred_at" in msg
    assert "contracts.snapshot_at 2025-01-06" in msg and "churn_events.occurred_at 2025-03-01" in msg
    assert "export.as_of" in msg and "2025-07-07" in msg  # the end the earliest observation needs


def test_inactivity_churn_with_a_comeback_is_observed_again():
    """Active weekly until 2024-03-25, silent 30 weeks, back from 2024-10-21 on."""
    active = list(pd.date_range("2024-01-01", "2024-03-25", freq="W-MON").strftime("%Y-%m-%d"))
    back = list(pd.date_range("2024-10-21", "2025-12-29", freq="W-MON").strftime("%Y-%m-%d"))
    usage = weeks("a", active + back)
    end = pd.Timestamp("2026-01-05", tz="UTC")
    labels, _, _ = label_rows(purchases_spec(), {"usage_weekly": usage}, as_of=end)
    t = labels.set_index("event_timestamp")["label"]
    before = t[t.index < ts(["2024-04-02"])[0]]
    assert len(before) and before.iloc[-1] == 1  # the last look before the silence: no purchase for 26 weeks
    after = t[t.index > ts(["2024-10-28"])[0]]
    assert len(after) >= 5 and (after == 0).all()  # back and buying: observed again
    lapsed = t[(t.index > ts(["2024-09-30"])[0]) & (t.index <= ts(["2024-10-21"])[0])]
    assert lapsed.empty  # 26+ weeks silent: not scored until it comes back
    assert (labels["event_timestamp"] + pd.Timedelta(days=182) <= end).all()
    steps = labels["event_timestamp"].sort_values().diff().dropna().dt.days
    assert (steps % 28 == 0).all()  # one global 4-week grid counted back from the export end


def test_without_reactivation_a_lapsed_customer_is_gone():
    active = list(pd.date_range("2024-01-01", "2024-03-25", freq="W-MON").strftime("%Y-%m-%d"))
    back = list(pd.date_range("2024-10-21", "2025-12-29", freq="W-MON").strftime("%Y-%m-%d"))
    labels, _, _ = label_rows(purchases_spec(reactivation=False), {"usage_weekly": weeks("a", active + back)},
                              as_of=pd.Timestamp("2026-01-05", tz="UTC"))
    assert labels["event_timestamp"].max() < ts(["2024-10-01"])[0]


def test_activity_column_decides_what_counts():
    usage = weeks("a", ["2024-01-01", "2024-01-08"]).assign(orders=[1, 0])
    spec = purchases_spec(activity="orders")
    labels, _, _ = label_rows(spec, {"usage_weekly": usage}, as_of=pd.Timestamp("2024-12-30", tz="UTC"))
    assert labels["label"].tolist() == [1] * len(labels)
    with pytest.raises(ValueError, match="label.churn.activity: usage_weekly has no column 'revenue'"):
        label_rows(purchases_spec(activity="revenue"), {"usage_weekly": usage},
                   as_of=pd.Timestamp("2024-12-30", tz="UTC"))


def test_export_end_prefers_the_declared_date():
    usage = weeks("a", ["2024-01-01"])
    assert export_end({"usage_weekly": usage}).at == ts(["2024-01-08"])[0]  # a week is known at its end
    declared = export_end({"usage_weekly": usage}, pd.Timestamp("2024-06-01", tz="UTC"))
    assert declared.at == ts(["2024-06-01"])[0] and declared.source == "declared export.as_of"


def test_project_overrides_reach_the_spec_and_bad_fields_are_named():
    project = ProjectConfig.model_validate({"models": {"chs": {
        "horizon_days": 91, "observe_every_weeks": 2, "monotone": {"api_calls": 0, "orders": -1},
        "selection_margin": 0.02, "label": {"outcome": {"kinds": ["churn"], "terminal": ["churn"]}}}}})
    spec = load_spec("chs", project)
    assert spec.horizon_days == 91 and spec.label.observe.every_weeks == 2
    assert spec.selection_margin == 0.02 and spec.label.outcome.kinds == ["churn"]
    assert spec.label.observe.tables == ["usage_weekly", "contracts"]  # merged, not replaced
    assert "api_calls" not in spec.constraints and spec.constraints["orders"] == -1
    assert spec.constraints["logins"] == -1  # the shipped directions stay unless overridden
    shipped = load_spec("chs")
    assert shipped.horizon_days == 182 and shipped.constraints["api_calls"] == -1
    bad = ProjectConfig.model_validate({"models": {"intent": {"candidates": ["xgboost", "forest"]}}})
    with pytest.raises(SpecError, match="models.intent.candidates"):
        load_spec("intent", bad)
    with pytest.raises(SpecError, match="unknown model 'nope'"):
        load_spec("nope")
