"""The synthetic export: contract-valid, deterministic, with visible planted structure and drift
confined to ``DRIFTED_COLUMNS``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from salesml.contract import TABLES
from salesml.simulator import DRIFTED_COLUMNS, TRUTH_TABLES, arrow_schema, generate
from salesml.simulator.usage import BASELINE_MEASURES
from salesml.validation import load_export

END = pd.Timestamp("2026-09-28", tz="UTC")
DRIFT = "2026-05-04"
ARGS = {"accounts": 400, "leads": 2000, "reps": 30, "weeks": 52, "chunk_accounts": 150}


def _read(d: Path, name: str) -> pd.DataFrame:
    sub = "truth" if name in TRUTH_TABLES else ""
    return pd.read_parquet(d / sub / f"{name}.parquet")


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    d = tmp_path_factory.mktemp("sim")
    calls = []
    rows = generate(d, seed=11, progress=lambda *a: calls.append(a), **ARGS)
    assert calls and calls[-1] == ("accounts", 400, 400)
    return d, rows


@pytest.fixture(scope="module")
def drifted(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("sim_drift")
    generate(d, seed=11, drift_after=DRIFT, **ARGS)
    return d


def test_export_passes_the_contract(export):
    d, rows = export
    frames, violations = load_export(d)
    assert [str(v) for v in violations] == []
    for name in TABLES:
        assert pq.read_schema(d / f"{name}.parquet").remove_metadata() == arrow_schema(name)
        assert len(frames[name]) == rows[name] > 0
    for name in TRUTH_TABLES:
        assert len(_read(d, name)) == rows[name] > 0


def test_no_event_after_end(export):
    d, _ = export
    for name, table in TABLES.items():
        df = _read(d, name)
        for col in table.timestamp_columns:
            if not table.col(col).future_ok:  # a renewal date is scheduled, not observed
                assert df[col].max() <= END, (name, col)
    contracts = _read(d, "contracts")
    assert (contracts.end_date > contracts.snapshot_at).all()
    weeks = np.sort(_read(d, "usage_weekly").week_start.unique())
    assert len(weeks) == 52 and weeks[-1] == END - pd.Timedelta(weeks=1)
    weeks = pd.DatetimeIndex(weeks)
    assert (weeks.weekday == 0).all() and (weeks == weeks.normalize()).all()


def test_churned_accounts_go_silent(export):
    d, _ = export
    churn = _read(d, "churn_events").query("kind == 'churn'").set_index("account_id").occurred_at
    assert churn.index.is_unique and len(churn) > 10
    for name, ts in [("usage_weekly", "week_start"), ("contracts", "snapshot_at"),
                     ("interactions", "occurred_at")]:
        df = _read(d, name)
        after = df[ts] >= df.account_id.map(churn)
        assert not after.any(), name


def test_end_must_be_a_monday(tmp_path):
    with pytest.raises(ValueError, match="Monday"):
        generate(tmp_path, 10, 10, 2, 8, 0, end="2026-09-29")


def test_deterministic_for_a_seed(export, tmp_path):
    d, _ = export
    generate(tmp_path / "same", seed=11, **ARGS)
    generate(tmp_path / "other", seed=12, truth_samples=0, **ARGS)  # compared on exported tables only
    for name in [*TABLES, *TRUTH_TABLES]:
        pd.testing.assert_frame_equal(_read(d, name), _read(tmp_path / "same", name))
    for name in ("usage_weekly", "lead_events"):
        same = (tmp_path / "same" / f"{name}.parquet").read_bytes()
        assert (d / f"{name}.parquet").read_bytes() == same
    assert not _read(d, "usage_weekly").equals(_read(tmp_path / "other", "usage_weekly"))
    assert not _read(d, "lead_assignments").equals(_read(tmp_path / "other", "lead_assignments"))


def _early_warning(usage: pd.DataFrame) -> pd.Series:
    """The feature layer's pattern, recomputed from the export alone."""
    u = usage.sort_values(["account_id", "week_start"]).reset_index(drop=True)
    g = u.groupby("account_id")
    below = sum(
        (u[m] < 0.8 * g[m].transform(lambda s: s.shift(1).rolling(12, min_periods=4).mean()))
        .astype(int)
        for m in BASELINE_MEASURES
    )
    flag = (below >= 2).groupby(u.account_id)
    held = (below >= 2) & flag.shift(1, fill_value=False) & flag.shift(2, fill_value=False)
    index = pd.MultiIndex.from_frame(u[["account_id", "week_start"]])
    return pd.Series(held.to_numpy(), index=index)


def test_planted_churn_structure_is_visible(export):
    d, _ = export
    truth = _read(d, "truth_churn_weekly")
    assert not truth[~truth.at_risk].event.notna().any()  # nothing happens after a churn
    truth = truth[truth.at_risk]
    # the truth's early warning at week w is the pattern observable in the export at week w-1
    ew = _early_warning(_read(d, "usage_weekly"))
    later = truth[truth.week_start > truth.week_start.min()]
    prev_week = later.week_start - pd.Timedelta(weeks=1)
    seen = ew.reindex(pd.MultiIndex.from_arrays([later.account_id, prev_week]))
    assert seen.notna().all()
    assert (seen.to_numpy().astype(bool) == later.early_warning.to_numpy()).all()
    assert truth.early_warning.sum() > 50

    rate = truth.groupby("early_warning").event.apply(lambda s: s.notna().mean())
    assert rate[True] > 5 * rate[False]
    hazard = truth.groupby("early_warning").churn_hazard.mean()
    assert hazard[True] > 5 * hazard[False]

    # the same contrast from the export alone: events in the 4 weeks after the pattern shows
    events = _read(d, "churn_events")
    flagged = ew[ew].reset_index()[["account_id", "week_start"]]
    pairs = flagged.merge(events, on="account_id")
    horizon = (pairs.occurred_at > pairs.week_start + pd.Timedelta(weeks=1)) & (
        pairs.occurred_at <= pairs.week_start + pd.Timedelta(weeks=5))
    hits = pairs[horizon][["account_id", "week_start"]].drop_duplicates()
    hit_after_pattern = len(hits) / len(flagged)
    base_rate = len(events) / len(truth) * 4
    assert hit_after_pattern > 3 * base_rate

    # labels are not rare: share of accounts with an event within 26 weeks of a mid-window week
    mid = truth.week_start.min() + pd.Timedelta(weeks=13)
    alive = truth[truth.week_start == mid].account_id
    soon = events[(events.occurred_at >= mid) & (events.occurred_at < mid + pd.Timedelta(weeks=26))]
    assert 0.10 < alive.isin(soon.account_id).mean() < 0.40


def test_relationship_shows_in_interactions(export):
    d, _ = export
    acc = _read(d, "truth_accounts").set_index("account_id")
    inter = _read(d, "interactions")
    per = inter.groupby("account_id").agg(q=("communication_quality", "mean"),
                                          n=("interaction_id", "size"))
    per = per.join(acc.relationship_quality)
    assert per.q.corr(per.relationship_quality) > 0.5
    assert per.n.corr(per.relationship_quality) > 0.2
    assert inter.loc[inter.channel != "survey", "nps"].isna().all()
    assert inter.loc[inter.channel == "survey", "nps"].notna().all()


def test_planted_intent_structure_is_visible(export):
    d, _ = export
    intent = _read(d, "truth_intent").set_index("lead_id").latent_intent
    assign = _read(d, "lead_assignments").set_index("lead_id")
    quartile = pd.qcut(intent, 4, labels=False).reindex(assign.index)
    conv = assign.converted.groupby(quartile).mean()
    assert conv[3] > 3 * conv[0]
    truth = _read(d, "truth_assignments")
    assert truth.p_convert.between(0, 1).all()
    assert truth.groupby("converted_eventually").p_convert.mean().diff().iloc[-1] > 0.1
    # high intent -> more pricing views; events straddle the assignment (leakage tests need both)
    ev = _read(d, "lead_events").join(assign.assigned_at, on="lead_id")
    pricing = ev[ev.page == "pricing"].groupby("lead_id").size().reindex(intent.index, fill_value=0)
    assert pricing.corr(intent) > 0.3
    before = (ev.occurred_at < ev.assigned_at).mean()
    assert 0.1 < before < 0.9
    assert ev.loc[ev.event_type != "page_view", "dwell_seconds"].isna().all()


def test_drift_shifts_only_the_drifted_columns(export, drifted):
    d, _ = export
    cut = pd.Timestamp(DRIFT, tz="UTC")
    when = {"usage_weekly": "week_start", "leads": "created_at", "lead_events": "occurred_at"}
    for name in [*TABLES, *TRUTH_TABLES]:
        a, b = _read(d, name), _read(drifted, name)
        assert list(a.columns) == list(b.columns) and len(a) == len(b), name
        for col in a.columns:
            if col in DRIFTED_COLUMNS.get(name, []):
                pre = a[when[name]] < cut
                assert a.loc[pre, col].equals(b.loc[pre, col]), (name, col)
                assert not a[col].equals(b[col]), (name, col)
            else:
                assert a[col].equals(b[col]), (name, col)

    def post(df: pd.DataFrame, col: str, time_col: str) -> pd.Series:
        return df.loc[df[time_col] >= cut, col]

    ua, ub = _read(d, "usage_weekly"), _read(drifted, "usage_weekly")
    ratio = post(ub, "api_calls", "week_start").mean() / post(ua, "api_calls", "week_start").mean()
    assert ratio == pytest.approx(1.8, rel=0.02)
    ratio = post(ub, "logins", "week_start").mean() / post(ua, "logins", "week_start").mean()
    assert ratio == pytest.approx(1.4, rel=0.1)
    la, lb = _read(d, "leads"), _read(drifted, "leads")
    latam = [(post(x, "region", "created_at") == "latam").mean() for x in (la, lb)]
    assert latam[1] > latam[0] + 0.2
    ea, eb = _read(d, "lead_events"), _read(drifted, "lead_events")
    pricing = (ea.page == "pricing") & (ea.occurred_at >= cut)
    ratio = eb.loc[pricing, "dwell_seconds"].mean() / ea.loc[pricing, "dwell_seconds"].mean()
    assert ratio == pytest.approx(1.6, rel=0.02)
