"""Drift that does not cry wolf on time alone: clocks are reported apart from the verdict, a feature that
varies over the reference's own time (a season) is judged against that variation, nullable columns work.

Small inline frames; every check runs Evidently in process (about a second each)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from drift.evidently_check import DriftConfig, check, summary

pytestmark = [pytest.mark.evidently]

START = pd.Timestamp("2024-01-01", tz="UTC")


def _reference(n: int = 1_200, seed: int = 1) -> pd.DataFrame:
    """Two years of observations, one per entity: a seasonal ``trend`` (a yearly cycle, as in a 4-vs-12-week
    usage ratio), a stationary ``usage``, a ``tier`` category and ``age_days``, a clock."""
    rng = np.random.default_rng(seed)
    ts = START + pd.to_timedelta(rng.uniform(0, 730, n), unit="D")
    doy = ts.dayofyear.to_numpy()
    return pd.DataFrame({
        "event_timestamp": ts,
        "trend": 0.08 * np.sin(2 * np.pi * doy / 365.25) + rng.normal(0, 0.02, n),
        "usage": rng.lognormal(5, 0.5, n),
        "tier": rng.choice(["basic", "pro", "enterprise"], n, p=[0.5, 0.35, 0.15]),
        "age_days": (ts - START).days.to_numpy() + rng.integers(0, 400, n),
    })


def _served(n: int, at: pd.Timestamp, seed: int) -> pd.DataFrame:
    """Every entity's values at one moment ``at``, months after the reference ends."""
    rng = np.random.default_rng(seed)
    doy = at.dayofyear
    return pd.DataFrame({
        "trend": 0.08 * np.sin(2 * np.pi * doy / 365.25) + rng.normal(0, 0.02, n),
        "usage": rng.lognormal(5, 0.5, n),
        "tier": rng.choice(["basic", "pro", "enterprise"], n, p=[0.5, 0.35, 0.15]),
        "age_days": (at - START).days + rng.integers(0, 400, n),
    })


FEATURES = ["trend", "usage", "tier", "age_days"]


def _config(**kw) -> DriftConfig:
    return DriftConfig(prediction_column=None, clocks=frozenset({"age_days"}), **kw)


def test_a_clock_is_reported_apart_and_left_out_of_the_verdict():
    reference = _reference()
    current = _served(800, pd.Timestamp("2026-06-20", tz="UTC"), seed=2)
    result = check(reference, current, FEATURES, _config())
    assert "age_days" not in set(result.columns["column"])
    assert result.clocks["column"].tolist() == ["age_days"] and bool(result.clocks["drifted"].iloc[0])
    # the family of the correction is the three features the verdict counts
    assert result.tests["family_size"] == 3 and result.tests["clocks"] == ["age_days"]
    assert not result.dataset_drift and result.drifted_share == 0.0
    s = summary(result)
    assert s["clocks"][0]["column"] == "age_days" and s["clocks"][0]["moved"] is True
    assert "age_days" not in s["drifted_columns"]


def test_a_season_inside_the_references_own_variation_is_not_drift():
    """In June the seasonal feature sits at one end of its yearly cycle: against the pooled two years it is
    significant (p far below alpha / m), but no further from the reference than its own quarters are."""
    reference = _reference()
    current = _served(800, pd.Timestamp("2026-06-20", tz="UTC"), seed=3)
    result = check(reference, current, FEATURES, _config())
    row = result.columns.set_index("column").loc["trend"]
    assert bool(row["significant"]) and row["score"] < 1e-10
    assert row["distance"] <= row["yardstick"], row
    assert not bool(row["drifted"]) and not result.dataset_drift
    # without the reference's timestamps there is no yardstick: the pooled test alone flags the season
    pooled = check(reference.drop(columns="event_timestamp"), current, FEATURES, _config())
    assert pooled.columns.set_index("column").loc["trend", "drifted"] and pooled.dataset_drift


def test_a_shift_beyond_the_references_own_variation_is_still_drift():
    reference = _reference()
    current = _served(800, pd.Timestamp("2026-06-20", tz="UTC"), seed=4)
    current["usage"] = current["usage"] * 1.8
    current["tier"] = np.random.default_rng(5).choice(["basic", "pro", "enterprise"], len(current), p=[0.7, 0.25, 0.05])
    result = check(reference, current, FEATURES, _config())
    flagged = set(result.columns.loc[result.columns["drifted"], "column"])
    assert flagged == {"usage", "tier"}, result.columns.to_string()
    assert result.dataset_drift


def test_period_settings_are_checked():
    with pytest.raises(ValueError, match="period_days must be a positive number of days"):
        check(_reference(100), _served(100, pd.Timestamp("2026-06-20", tz="UTC"), 1), FEATURES,
              _config(period_days=0))
    with pytest.raises(ValueError, match="clocks name columns that are not features: \\['nope'\\]"):
        check(_reference(100), _served(100, pd.Timestamp("2026-06-20", tz="UTC"), 1), FEATURES,
              DriftConfig(prediction_column=None, clocks=frozenset({"nope"})))


def test_nullable_int_and_boolean_columns_as_in_the_raw_feature_files():
    """Feature files hold counts as Int64 and flags as boolean, with gaps (pd.NA): the check reads them as
    the training set does (float64 with NaN, flags as categories) and gives the same answer."""
    rng = np.random.default_rng(7)

    def frame(n: int) -> pd.DataFrame:
        return pd.DataFrame({"tickets": pd.array(rng.poisson(30, n), dtype="Int64"),
                             "tier_rank": pd.array(rng.integers(1, 4, n), dtype="Int64"),
                             "sla_breached": pd.array(rng.random(n) < 0.3, dtype="boolean")})

    reference, current = frame(400), frame(300)
    reference.loc[[3, 9], "tickets"] = pd.NA
    current.loc[[5], "sla_breached"] = pd.NA
    current.loc[[7], "tier_rank"] = pd.NA
    features = ["tickets", "tier_rank", "sla_breached"]
    result = check(reference, current, features, DriftConfig(prediction_column=None))
    plain = {name: f.astype({"tickets": "float64", "tier_rank": "float64"}).assign(
                 sla_breached=f["sla_breached"].astype(object).where(f["sla_breached"].notna(), np.nan))
             for name, f in (("reference", reference), ("current", current))}
    expected = check(plain["reference"], plain["current"], features, DriftConfig(prediction_column=None))
    assert result.columns[["column", "type", "method", "score"]].equals(
        expected.columns[["column", "type", "method", "score"]])
    assert result.columns.set_index("column")["type"].to_dict() == {
        "tickets": "numeric", "tier_rank": "numeric", "sla_breached": "categorical"}
    assert not result.dataset_drift


def test_the_clocks_are_facts_of_the_feature_definitions():
    from features.transforms import CLOCK_FEATURES, FEATURE_TYPES

    known = {name for view in FEATURE_TYPES.values() for name in view}
    assert CLOCK_FEATURES <= known
    assert {"contract_age_days", "weeks_of_history", "active_weeks_total"} <= CLOCK_FEATURES
