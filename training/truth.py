"""The simulator's true probabilities for training rows: the best any model could score.

Only simulated exports have ``truth/``; for a real export these functions return None. Two forms:
our simulator's tables (``truth_churn_weekly``, ``truth_intent``, ``truth_assignments``) and the
generic ``truth/truth.csv`` of the shaped exports (``salesml.simulator.shapes``): the model's entity
keys, ``event_timestamp`` (the observation) and ``p_true``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from salesml.modelspec import ModelSpec


def oracle_probabilities(spec: ModelSpec, frame: pd.DataFrame, raw_dir: Path) -> np.ndarray | None:
    """The true probability of each row of ``frame`` (a training set of ``spec``'s model), or None."""
    model, keys, horizon_days = spec.name, list(spec.keys), spec.horizon_days
    truth = Path(raw_dir) / "truth"
    if (truth / "truth.csv").exists() and keys:
        return _generic(frame, pd.read_csv(truth / "truth.csv"), keys)
    if model == "chs" and (truth / "truth_churn_weekly.parquet").exists():
        weekly = pd.read_parquet(truth / "truth_churn_weekly.parquet")
        known = _churn_known(frame, weekly)
        return known if known is not None else _churn_oracle(frame, weekly, horizon_days)
    if model == "intent" and (truth / "truth_intent.parquet").exists():
        # Intent sees no rep, so its best possible is the lead's conversion averaged over reps.
        t = pd.read_parquet(truth / "truth_intent.parquet")[["lead_id", "p_convert_avg_rep"]]
        p = frame[["lead_id"]].merge(t, on="lead_id", how="left")["p_convert_avg_rep"].to_numpy(float)
        return None if np.isnan(p).any() else p
    if model == "lead_match" and (truth / "truth_assignments.parquet").exists():
        # The realised first-touch delay is unknown when routing: compare with the assignment-time p.
        keys = ["lead_id", "rep_id"]
        t = pd.read_parquet(truth / "truth_assignments.parquet").drop_duplicates(keys)
        col = "p_convert_at_assignment" if "p_convert_at_assignment" in t else "p_convert"
        p = frame[keys].merge(t[keys + [col]], on=keys, how="left")[col].to_numpy(float)
        return None if np.isnan(p).any() else p
    return None


def _generic(frame: pd.DataFrame, truth: pd.DataFrame, keys: list[str]) -> np.ndarray | None:
    if not set(keys) <= set(truth.columns) or "p_true" not in truth:
        return None
    t = truth.assign(event_timestamp=pd.to_datetime(truth["event_timestamp"], utc=True),
                     **{k: truth[k].astype(str) for k in keys})
    rows = frame[keys + ["event_timestamp"]].assign(
        event_timestamp=pd.to_datetime(frame["event_timestamp"], utc=True), **{k: frame[k].astype(str) for k in keys})
    p = rows.merge(t[keys + ["event_timestamp", "p_true"]].drop_duplicates(keys + ["event_timestamp"]),
                   how="left", on=keys + ["event_timestamp"])["p_true"].to_numpy(float)
    return None if np.isnan(p).any() else p


def _churn_known(frame: pd.DataFrame, weekly: pd.DataFrame) -> np.ndarray | None:
    """P(event within the horizon | the account's state at the observation): the simulator's
    Monte Carlo over the futures still open then (``salesml.simulator.truth``). None when the
    export has no such column or misses a row (then the realised-path oracle is used)."""
    if "p_event_horizon" not in weekly:
        return None
    t = weekly[["account_id", "week_start", "p_event_horizon"]].dropna()
    t = t.assign(account_id=t["account_id"].astype(str), event_timestamp=pd.to_datetime(t["week_start"], utc=True))
    rows = frame[["account_id", "event_timestamp"]].assign(
        account_id=frame["account_id"].astype(str), event_timestamp=pd.to_datetime(frame["event_timestamp"], utc=True))
    p = rows.merge(t[["account_id", "event_timestamp", "p_event_horizon"]], how="left",
                   on=["account_id", "event_timestamp"])["p_event_horizon"].to_numpy(float)
    return None if np.isnan(p).any() else p


def _churn_oracle(frame: pd.DataFrame, hazard: pd.DataFrame, horizon_days: int) -> np.ndarray:
    """P(event within the horizon | the simulated hazard path after the observation): more than
    any model can know (it contains declines that had not started at the observation)."""
    us = pd.DatetimeTZDtype("us", "UTC")  # merge_asof wants identical key dtypes
    h = hazard[["account_id", "week_start", "churn_hazard"]].copy()
    h["account_id"] = h["account_id"].astype(str)
    h["week_start"] = pd.to_datetime(h["week_start"], utc=True).astype(us)
    h["log_survive"] = np.log1p(-h["churn_hazard"].clip(upper=1 - 1e-12))
    h = h.sort_values(["account_id", "week_start"])
    h["cum"] = h.groupby("account_id")["log_survive"].cumsum()
    h = h.sort_values("week_start")  # merge_asof needs the right side sorted on its key
    obs = frame[["account_id", "event_timestamp"]].reset_index()
    obs["account_id"] = obs["account_id"].astype(str)
    horizon = pd.Timedelta(days=horizon_days)

    def cum_before(times: pd.Series) -> np.ndarray:
        q = obs.assign(t=times.astype(us)).sort_values("t")
        m = pd.merge_asof(q, h[["account_id", "week_start", "cum"]].rename(columns={"week_start": "t"}),
                          on="t", by="account_id", direction="backward", allow_exact_matches=False)
        return m.set_index("index")["cum"].reindex(obs["index"]).fillna(0.0).to_numpy()

    ts = pd.to_datetime(obs["event_timestamp"], utc=True).astype(us)
    survive = cum_before(ts + horizon) - cum_before(ts)
    return 1.0 - np.exp(survive)
