"""The drift check on simulator data: ``--drift-after`` is flagged on exactly the features it moves,
and drift-free windows raise no more alarms than the configured level.

Two exports with one seed, one with ``drift_after=DRIFT`` and one without (for a given seed every
column outside ``salesml.simulator.DRIFTED_COLUMNS`` is identical in both). Model inputs are built
with the project's own feature code (``features.transforms.build_all``) and joined point in time the
way the Feast views do (latest row at or before the observation, within the view's TTL): CHS rows are
account-weeks (behaviour + relationship + contract), intent rows are leads at assignment (lead
activity + lead profile).

Rows are independent draws only if every entity counts once per window: the windows below hold one
row per account (one week) or per lead. (Several rows per account in one window make an unchanged
distribution look significantly different: the tests assume independent rows.)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from drift.evidently_check import DriftConfig, check

pytestmark = [pytest.mark.slow, pytest.mark.evidently]

WEEK = pd.Timedelta(weeks=1)
END = "2026-09-28"  # the simulator's default last week end; weeks start 2026-01-12 (after the year-end dip)
DRIFT = pd.Timestamp("2026-08-10", tz="UTC")
# truth_samples=0: only the exported columns are compared (5.3 s -> 0.7 s per export)
SIM = dict(accounts=3_000, leads=12_000, reps=30, weeks=36, seed=13, end=END, truth_samples=0)
ALPHA = DriftConfig().alpha

# The simulator's --drift-after shifts (salesml/simulator/export.py): usage_weekly.api_calls x1.8 and
# usage_weekly.logins x Gamma(mean 1.4) for weeks starting on/after DRIFT; 35% of leads created after it
# recorded as latam; pricing-page dwell_seconds x1.6 for events after it. Model inputs that move with them
# (features/transforms.py), comparing the last week before DRIFT with the first week on/after it:
SHIFTED_ACCOUNT_FEATURES = {
    "api_calls",          # the raw count, x1.8
    "api_calls_wow",      # this week / last week: x1.8 in the first drifted week (two drifted weeks: x1)
    "api_calls_mom",      # last 4 weeks / the 4 before: x1.2 while 1 of the 4 recent weeks is drifted
    "usage_trend_4v12",   # mean log ratio (last 4 weeks / 12 before) over 4 measures, one of them api_calls
    "logins",             # the raw count, x Gamma(mean 1.4, CV 0.5)
}
# These move too, but too little to see in one week of ~2,900 accounts at the corrected level, and the test
# asserts they are NOT flagged: logins_4w_avg (1 of its 4 weeks drifted: x1.1 on average) and the
# below-baseline measures (api_calls can no longer be below 0.8 x its own 12-week mean, which changes a few
# per cent of the rows).
MOVED_TOO_LITTLE = {"logins_4w_avg", "below_baseline_measures", "below_baseline_streak", "early_warning"}
# weeks_of_history counts weeks since the account's first usage week, and the active-week counts over the
# lifetime and over 52 weeks (longer than this 36-week export) count nearly the same: clocks that differ
# between ANY two weeks, so they are flagged with or without drift (the undrifted export shows it).
CLOCK = {"weeks_of_history", "active_weeks_total", "active_weeks_52w"}
SHIFTED_LEAD_FEATURES = {
    "lead_region",               # latam for 35% of the leads created after DRIFT
    "pricing_dwell_seconds_7d",  # sum of pricing-page dwell over 7 days, x1.6
}


def _chs_rows(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    rows = tables["behaviour"].merge(tables["relationship"], on=["account_id", "event_timestamp"], how="left")
    contract = tables["contract"].astype({"account_id": str}).sort_values("event_timestamp")
    rows = rows.astype({"account_id": str}).sort_values("event_timestamp")
    return pd.merge_asof(rows, contract, on="event_timestamp", by="account_id", direction="backward",
                         tolerance=pd.Timedelta(days=400))  # the contract view's TTL


def _intent_rows(frames: dict[str, pd.DataFrame], tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    activity = tables["lead_activity"].astype({"lead_id": str}).sort_values("event_timestamp")
    obs = (frames["lead_assignments"][["lead_id", "assigned_at"]]
           .merge(frames["leads"][["lead_id", "created_at"]], on="lead_id")
           .rename(columns={"assigned_at": "event_timestamp"}).astype({"lead_id": str}))
    obs["event_timestamp"] = obs["event_timestamp"].astype(activity["event_timestamp"].dtype)
    rows = pd.merge_asof(obs.sort_values("event_timestamp"), activity, on="event_timestamp", by="lead_id",
                         direction="backward", tolerance=pd.Timedelta(days=90))  # the lead_activity view's TTL
    profile = tables["lead_profile"].drop(columns="event_timestamp").astype({"lead_id": str})
    return rows.merge(profile, on="lead_id", how="left")


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[bool, dict]:
    """{drifted: {"chs": account-week rows, "intent": lead rows, "chs_features": [...], "intent_features": [...]}}"""
    from features.transforms import build_all
    from salesml.simulator import generate
    from salesml.validation import load_valid_export

    out = {}
    for drifted in (False, True):
        folder = tmp_path_factory.mktemp("drift_sim" if drifted else "plain_sim")
        generate(folder, drift_after=str(DRIFT.date()) if drifted else None, **SIM)
        frames = load_valid_export(folder)
        # counts and flags as floats, as in a training set (features.training_sets.numbers_as_floats)
        tables = {k: v.astype({c: "float64" for c in v.columns if str(v[c].dtype) in ("Int64", "boolean")})
                  for k, v in build_all(frames).items()}
        out[drifted] = {
            "chs": _chs_rows(tables),
            "intent": _intent_rows(frames, tables),
            "chs_features": [c for v in ("contract", "behaviour", "relationship") for c in tables[v].columns
                             if c not in ("account_id", "event_timestamp")],
            "intent_features": [c for v in ("lead_activity", "lead_profile") for c in tables[v].columns
                                if c not in ("lead_id", "event_timestamp")],
        }
    return out


def _week(rows: pd.DataFrame, start: pd.Timestamp) -> pd.DataFrame:
    """Account rows of the usage week starting at ``start`` (their event_timestamp is the week's end)."""
    return rows[rows["event_timestamp"] - WEEK == start]


def _flagged(reference: pd.DataFrame, current: pd.DataFrame, features: list[str]):
    result = check(reference, current, features, DriftConfig(drift_share=0.05, prediction_column=None))
    return set(result.columns.loc[result.columns["drifted"], "column"]), result


def test_drift_after_flags_exactly_the_shifted_account_features(exports):
    """Last week before the shift against the first week after it, one row per account."""
    plain, drifted = exports[False], exports[True]
    assert plain["chs_features"] == drifted["chs_features"] and len(drifted["chs_features"]) == 34
    expected = SHIFTED_ACCOUNT_FEATURES | CLOCK
    assert expected <= set(drifted["chs_features"])
    results = {}
    for name, export in (("plain", plain), ("drifted", drifted)):
        reference, current = _week(export["chs"], DRIFT - WEEK), _week(export["chs"], DRIFT)
        assert reference["account_id"].is_unique and current["account_id"].is_unique and len(current) > 2_500
        results[name] = _flagged(reference, current, export["chs_features"])
    flagged, result = results["drifted"]
    assert flagged == expected, result.columns.sort_values("score").head(12).to_string()
    assert result.dataset_drift is True
    # without --drift-after the same two weeks differ only in the clock
    plain_flagged, plain_result = results["plain"]
    assert plain_flagged == CLOCK, plain_result.columns.sort_values("score").head(8).to_string()
    # every other feature has the same values with and without the shift, so the same p-value
    untouched = sorted(set(drifted["chs_features"]) - expected - MOVED_TOO_LITTLE)
    assert len(untouched) == 22
    for start in (DRIFT - WEEK, DRIFT):
        same = [_week(e["chs"], start).set_index("account_id").sort_index()[untouched] for e in (plain, drifted)]
        pd.testing.assert_frame_equal(*same)
    scores = {n: r.columns.set_index("column")["score"] for n, (_, r) in results.items()}
    assert scores["plain"][untouched].tolist() == scores["drifted"][untouched].tolist()


def test_drift_after_flags_exactly_the_shifted_lead_features(exports):
    """Leads assigned in the 12 weeks before the shift against leads created after it."""
    for drifted, expected in ((True, SHIFTED_LEAD_FEATURES), (False, set())):
        export = exports[drifted]
        leads = export["intent"]
        reference = leads[(leads["event_timestamp"] < DRIFT) & (leads["event_timestamp"] >= DRIFT - 12 * WEEK)]
        current = leads[leads["created_at"] >= DRIFT]
        assert reference["lead_id"].is_unique and current["lead_id"].is_unique and len(current) > 1_000
        flagged, result = _flagged(reference, current, export["intent_features"])
        assert flagged == expected, result.columns.sort_values("score").head(6).to_string()
        assert result.dataset_drift is bool(expected)


def test_false_alarm_rate_on_drift_free_windows_is_at_most_alpha(exports):
    """20 drift-free comparisons on the CHS inputs: each week of the undrifted export with 16 weeks of
    history (so every feature is defined), its accounts split at random into two halves of 1,290-1,420 rows.

    The alarm is the dataset-level one of ``salesml drift check`` (at least SALESML_DRIFT_SHARE = 5% of the
    34 features drifted, i.e. two or more); its rate must be at most alpha = 0.05. Measured with the 30
    features before recency / frequency joined: 0 of 20 (the earlier defaults, normed Wasserstein /
    Jensen-Shannon distance >= 0.1: 2 of 20); any single feature flagged at all: 1 of 20 (one p-value of
    0.0013 against 0.05 / 30 = 0.0017). Under the Bonferroni bound that count is Binomial(20, <= 0.05), so
    more than 3 would be a 1-in-60 event.
    """
    export = exports[False]
    rows, features = export["chs"], export["chs_features"]
    weeks = sorted(rows["event_timestamp"].unique())[16:]
    assert len(weeks) == 20 and len(features) == 34
    rng = np.random.default_rng(2026)
    alarms, any_flag = 0, 0
    for week in weeks:
        window = rows[rows["event_timestamp"] == week]
        half = rng.permutation(len(window)) < len(window) // 2
        assert min(half.sum(), (~half).sum()) > 1_200
        result = check(window[half], window[~half], features, DriftConfig(drift_share=0.05, prediction_column=None))
        alarms += bool(result.dataset_drift)
        any_flag += bool(result.columns["drifted"].any())
    assert alarms / len(weeks) <= ALPHA, alarms
    assert any_flag <= 3, any_flag
