"""Exports shaped unlike our simulator (``salesml.simulator.shapes``): only their own tables, a config
that names columns the CSVs have, labels that follow from the tables by the documented rules, real
signal, exact truth, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from salesml.contract import TABLES
from salesml.simulator import shapes
from salesml.simulator.shapes import SHAPES

SEED = 3
N = {"snapshot": 400, "prospects": 400, "purchases": 300}
OWN_TABLES = {"snapshot": {"accounts", "contracts", "churn_events"}, "prospects": {"leads", "lead_assignments"},
              "purchases": {"accounts", "usage_weekly"}}
MIN_CUSTOM = {"snapshot": ("accounts", 15), "prospects": ("leads", 40), "purchases": ("accounts", 3)}
RATE = {"snapshot": (0.15, 0.30), "prospects": (0.10, 0.25), "purchases": (0.10, 0.40)}
H = pd.Timedelta(days=182)


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    out = {}
    for name, make in SHAPES.items():
        d = tmp_path_factory.mktemp(name)
        out[name] = d, make(d, n=N[name], seed=SEED)
    return out


def _csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, true_values=["true"], false_values=["false"])


def _ts(s: pd.Series) -> pd.Series:
    return pd.to_datetime(s, utc=True)


def _config(d: Path) -> dict:
    return yaml.safe_load((d / "salesml.yaml").read_text())


def _files(d: Path) -> set[str]:
    return {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name", list(SHAPES))
def test_writes_only_its_tables(made, name):
    d, result = made[name]
    assert _files(d) == {f"{t}.csv" for t in OWN_TABLES[name]} | {"salesml.yaml", "truth/truth.csv"}
    assert set(result) == {"tables", "label_rate", "truth_auc"}
    assert result["tables"] == {t: len(pd.read_csv(d / f"{t}.csv")) for t in OWN_TABLES[name]}
    for t in OWN_TABLES[name]:
        header = pd.read_csv(d / f"{t}.csv", nrows=0).columns
        contract = {c.name for c in TABLES[t].columns}
        declared = set(_config(d)["custom_columns"].get(t, {}))
        assert set(header) <= contract | declared, f"{t}: undeclared extra columns"


@pytest.mark.parametrize("name", list(SHAPES))
def test_config_declares_columns_that_exist(made, name):
    d, _ = made[name]
    cfg = _config(d)
    assert set(cfg) == {"export", "custom_columns", "models"}
    assert str(cfg["export"]["as_of"]).endswith("Z")
    table, least = MIN_CUSTOM[name]
    assert len(cfg["custom_columns"][table]) >= least
    for t, cols in cfg["custom_columns"].items():
        df = pd.read_csv(d / f"{t}.csv", dtype=str, keep_default_na=False)
        for col, spec in cols.items():
            assert col in df.columns, f"{t}.{col} declared but missing"
            assert spec["type"] in ("numeric", "categorical", "boolean")
            assert set(spec) <= {"type", "min", "max", "nullable", "values", "aggregations"}
            text = df[col]
            present = text[text != ""]
            assert spec.get("nullable", False) or len(present) == len(text), f"{t}.{col} has NULLs"
            if spec["type"] == "boolean":
                assert set(present) <= {"true", "false"}
            elif spec["type"] == "numeric":
                x = present.astype(float)
                assert x.min() >= spec.get("min", -np.inf) and x.max() <= spec.get("max", np.inf), f"{t}.{col}"
            elif "values" in spec:
                assert set(present) <= set(spec["values"]), f"{t}.{col}"
            for agg in spec.get("aggregations", []):
                assert agg["fn"] in ("count", "sum", "mean", "last") and isinstance(agg["days"], int)
    # company exports carry NULLs somewhere in their nullable columns
    nullable = [(t, c) for t, cols in cfg["custom_columns"].items() for c, s in cols.items() if s.get("nullable")]
    assert nullable and any(pd.read_csv(d / f"{t}.csv")[c].isna().any() for t, c in nullable)


@pytest.mark.parametrize("name", list(SHAPES))
def test_config_loads_in_the_project(made, name):
    from salesml.project import load_project

    d, _ = made[name]
    cfg = load_project(d / "salesml.yaml")
    assert cfg.export.as_of == pd.Timestamp(_config(d)["export"]["as_of"])
    assert set(cfg.custom_columns) == set(_config(d)["custom_columns"])


@pytest.mark.parametrize("name", list(SHAPES))
def test_timestamps_and_booleans_are_text(made, name):
    d, _ = made[name]
    for t in OWN_TABLES[name]:
        df = pd.read_csv(d / f"{t}.csv", dtype=str)
        for c in TABLES[t].timestamp_columns:
            if c in df:
                assert df[c].dropna().str.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z").all(), f"{t}.{c}"
        for c in (c.name for c in TABLES[t].columns if c.dtype == "bool"):
            if c in df:
                assert set(df[c].dropna()) <= {"true", "false"}


def test_snapshot_labels_follow_from_tables(made):
    d, _ = made["snapshot"]
    acc, con, ev = _csv(d / "accounts.csv"), _csv(d / "contracts.csv"), _csv(d / "churn_events.csv")
    truth = _csv(d / "truth" / "truth.csv")
    assert con["account_id"].is_unique and set(con["account_id"]) == set(acc["account_id"])
    snap = _ts(con["snapshot_at"])
    assert snap.nunique() == 1
    s = snap.iloc[0]
    as_of = pd.Timestamp(_config(d)["export"]["as_of"])
    assert as_of == s + H + pd.Timedelta(days=14)
    assert set(con["tier"]) <= {"basic", "pro", "enterprise"} and set(ev["kind"]) <= {"churn", "downgrade"}
    assert (_ts(con["end_date"]) > s).all() and (_ts(con["start_date"]) <= s).all()  # the current term
    at = _ts(ev["occurred_at"])
    assert (at > s).all() and (at <= as_of).all() and (at > s + H).any()  # some fall after the horizon
    inside = set(ev.loc[(at > s) & (at <= s + H), "account_id"])
    assert (_ts(truth["event_timestamp"]) == s).all() and set(truth["account_id"]) == set(acc["account_id"])
    assert (truth["label"] == truth["account_id"].isin(inside).astype(int)).all()


def test_prospect_labels_follow_from_tables(made):
    d, _ = made["prospects"]
    leads, asg = _csv(d / "leads.csv"), _csv(d / "lead_assignments.csv")
    truth = _csv(d / "truth" / "truth.csv")
    assert list(asg.columns) == ["assignment_id", "lead_id", "assigned_at", "converted", "converted_at"]
    assert set(leads["source"]) <= {"web", "event", "referral", "outbound", "partner"}
    m = asg.merge(leads[["lead_id", "created_at"]], on="lead_id", validate="one_to_one")
    lag = _ts(m["assigned_at"]) - _ts(m["created_at"])
    assert lag.between(pd.Timedelta(days=3), pd.Timedelta(days=20)).all()
    assert _ts(leads["created_at"]).agg(lambda s: s.max() - s.min()) > pd.Timedelta(days=500)
    as_of = pd.Timestamp(_config(d)["export"]["as_of"])
    assert as_of == _ts(asg["assigned_at"]).max() + pd.Timedelta(days=97)
    won = _ts(m["converted_at"])
    assert (won.notna() == m["converted"]).all() and (won.dropna() <= as_of).all()
    label = m["converted"] & (won <= _ts(m["assigned_at"]) + pd.Timedelta(days=90))
    assert (m["converted"] & ~label).any()  # late conversions exist and do not count
    t = truth.merge(m.assign(expected=label.astype(int)), on="lead_id", validate="one_to_one")
    assert len(t) == len(leads) and (_ts(t["event_timestamp"]) == _ts(t["assigned_at"])).all()
    assert (t["label"] == t["expected"]).all()


def _purchase_truth(d: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.Timestamp]:
    """The purchases rule, recomputed from the CSVs: (account, t) rows observed and their labels."""
    use = _csv(d / "usage_weekly.csv").assign(week_start=lambda f: _ts(f["week_start"]))
    e = pd.Timestamp(_config(d)["export"]["as_of"])
    ts = [e - pd.Timedelta(days=28 * k) for k in range(200) if e - pd.Timedelta(days=28 * k) >= use.week_start.min()]
    rows = []
    for t in (t for t in ts if t + H <= e):
        before = use[use.week_start < t].groupby("account_id").week_start.max()
        seen = before[before >= t - H].index
        future = set(use.loc[(use.week_start >= t) & (use.week_start < t + H), "account_id"])
        rows.append(pd.DataFrame({"account_id": seen, "event_timestamp": t,
                                  "expected": [int(a not in future) for a in seen]}))
    return pd.concat(rows), use, e


def test_purchase_labels_follow_from_tables(made):
    d, _ = made["purchases"]
    expected, use, e = _purchase_truth(d)
    assert list(use.columns) == ["account_id", "week_start", "orders", "revenue"]
    assert (use.week_start.dt.dayofweek == 0).all() and (use.week_start == use.week_start.dt.normalize()).all()
    assert (use["orders"] > 0).all() and use["orders"].dtype.kind == "i" and (use["revenue"] >= 0).all()
    assert e == use.week_start.max() + pd.Timedelta(days=7)
    assert (e - use.week_start.min()).days == 7 * 156
    assert use.groupby("account_id").week_start.min().nunique() > 50  # staggered starts
    truth = _csv(d / "truth" / "truth.csv").assign(event_timestamp=lambda f: _ts(f["event_timestamp"]))
    merged = truth.merge(expected, on=["account_id", "event_timestamp"], how="outer", indicator=True)
    assert (merged["_merge"] == "both").all(), merged["_merge"].value_counts()
    assert (merged["label"] == merged["expected"]).all()


def test_purchases_accounts_come_back(made):
    d, _ = made["purchases"]
    use = _csv(d / "usage_weekly.csv")
    e = pd.Timestamp(_config(d)["export"]["as_of"])
    week = ((_ts(use["week_start"]) - e).dt.days // 7).rename("w")  # -156 .. -1
    lapsed = returned = 0
    for _, w in week.groupby(use["account_id"]):
        w = np.sort(w.to_numpy())
        gap_inside = (np.diff(w) - 1 >= 26).any()
        lapsed += gap_inside or (-1 - w[-1] >= 26)
        returned += gap_inside
    assert lapsed > 30 and returned / lapsed >= 0.20


@pytest.mark.parametrize("name", list(SHAPES))
def test_signal_rate_and_auc(made, name):
    d, result = made[name]
    truth = _csv(d / "truth" / "truth.csv")
    lo, hi = RATE[name]
    assert lo <= result["label_rate"] <= hi
    assert result["label_rate"] == pytest.approx(truth["label"].mean())
    assert result["truth_auc"] == pytest.approx(shapes.auc(truth["p_true"], truth["label"]), abs=1e-6)
    assert result["truth_auc"] > 0.70
    assert truth["p_true"].between(0, 1).all()
    assert truth["p_true"].mean() == pytest.approx(truth["label"].mean(), abs=0.06)  # calibrated


def test_auc_helper_matches_definition():
    p, y = np.array([0.1, 0.4, 0.35, 0.8, 0.4]), np.array([0, 0, 1, 1, 1])
    pairs = [(a > b) + 0.5 * (a == b) for a in p[y == 1] for b in p[y == 0]]
    assert shapes.auc(p, y) == pytest.approx(np.mean(pairs))


def test_p_true_is_a_function_of_the_export(made):
    """(a) and (b): p_true follows from the exported columns alone (the planted logit)."""
    d, _ = made["snapshot"]
    acc, con = _csv(d / "accounts.csv"), _csv(d / "contracts.csv")
    for c in ("start_date", "end_date", "snapshot_at"):
        con[c] = _ts(con[c])
    z = shapes._snapshot_logit(acc, con, con["snapshot_at"].iloc[0])
    p = shapes._mean_sigmoid(z + shapes._intercept(z, 0.22, 0.7), 0.7)
    assert np.abs(p - _csv(d / "truth" / "truth.csv")["p_true"]).max() < 1e-5
    d, _ = made["prospects"]
    z = shapes._prospect_logit(_csv(d / "leads.csv"))
    p = shapes._sigmoid(z + shapes._intercept(z, 0.17))
    assert np.abs(p - _csv(d / "truth" / "truth.csv")["p_true"]).max() < 1e-5


def test_purchase_p_true_is_the_exact_filter(made):
    """(c): a plain per-account HMM (forward filter, then 26 weeks without an order) gives p_true."""
    d, _ = made["purchases"]
    acc = _csv(d / "accounts.csv").set_index("account_id")
    pa, h, r = shapes._purchase_params(acc)
    use = _csv(d / "usage_weekly.csv")
    e = pd.Timestamp(_config(d)["export"]["as_of"])
    truth = _csv(d / "truth" / "truth.csv").sample(60, random_state=0)
    q = shapes.DORMANT_ORDER_P
    for _, row in truth.iterrows():
        i = acc.index.get_loc(row["account_id"])
        T = np.array([[1 - h[i], h[i]], [r[i], 1 - r[i]]])
        emit = np.array([pa[i], q])
        weeks = set((_ts(use.loc[use.account_id == row["account_id"], "week_start"]) - e).dt.days // 7)
        t_week = (pd.Timestamp(row["event_timestamp"]) - e).days // 7
        first = min(weeks)
        a = np.array([1.0, 0.0])  # the first order week: active by construction
        for w in range(first + 1, t_week):
            a = (a @ T) * (emit if w in weeks else 1 - emit)
            a /= a.sum()
        for _ in range(26):
            a = (a @ T) * (1 - emit)
        assert a.sum() == pytest.approx(row["p_true"], abs=2e-6)


def test_same_seed_same_files(made, tmp_path):
    for name, make in SHAPES.items():
        d, _ = made[name]
        again = tmp_path / name
        make(again, n=N[name], seed=SEED)
        assert _files(again) == _files(d)
        for f in _files(d):
            assert (again / f).read_bytes() == (d / f).read_bytes(), f"{name}: {f} differs"
        other = tmp_path / f"{name}_other"
        make(other, n=N[name], seed=SEED + 1)
        assert (other / "truth" / "truth.csv").read_bytes() != (d / "truth" / "truth.csv").read_bytes()
