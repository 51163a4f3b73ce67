"""The simulator replays the loop warning -> playbook -> intervention -> outcome, with planted effects.

``replay(warnings, hazards, config)`` takes warnings (the warnings store's frame, held-out ones
included) and the simulator's weekly churn hazards (``truth/truth_churn_weekly``: account_id,
week_start, churn_hazard) and plays what follows each warning:

* a held-out warning gets no intervention record: its account keeps its simulated hazard, which
  already stands for business as usual (the CSM may still talk to the customer; no playbook is run);
* a prompted warning gets one intervention from its owner after a delay drawn from a lognormal
  (``delay_median_hours``, ``delay_sigma``); with the playbook's ``p_not_applicable`` it is marked not
  applicable (playbook_id None, the playbook's reason), otherwise it applies the offered playbook;
* time is counted in horizon weeks from raised_at: horizon week k uses the hazard of calendar week
  w0 + k, w0 the week holding raised_at. An applied playbook acts from the horizon week after the
  one holding the intervention, to the end of the horizon, as a proportional hazard with ratio HR:
  h' = 1 - (1 - h)^HR (HR times the continuous-time rate within the week; ~HR*h for small h, and
  never above 1);
* churn within the horizon is drawn week by week from the (modified) hazards; its time is uniform
  inside the horizon week, so it lies in (raised_at, raised_at + 7 * horizon_weeks days], the very
  window ``experiments.playbooks.estimate_effects`` counts with ``horizon_days = 7 * horizon_weeks``.

Each warning is replayed in its own world (its own draw from the account's hazard path); two
warnings of one account whose windows overlap would share an outcome, so ``replay`` refuses them
(keep the first per window, e.g. ``experiments.playbooks.first_per_window``). Warnings whose horizon
runs past the hazard table, or whose account has no hazards, are skipped and counted.

Truth (``Replay.truth``, written by ``write_truth`` to ``truth/truth_playbook_effects.parquet``): per
playbook, ``true_effect`` = mean over its prompted warnings of P(churn within the horizon | as
replayed: the drawn delay, not-applicable ones unchanged) - P(churn within the horizon | no
playbook), both exact from the hazards (1 - prod(1 - h)), not sampled. That is the intent-to-treat
estimand: held-out warnings are a random share, so their churn rate estimates the prompted ones'
no-playbook probability and the estimator's prompted - held-out difference is unbiased for it.

Random streams: one ``SeedSequence(seed)`` child each for delays, not-applicable marks and churn, drawn
for every warning in input order, so a changed hazard ratio changes outcomes only through the hazard.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from salesml.simulator.truth import HORIZON_WEEKS

WEEK = pd.Timedelta(days=7)
TRUTH_TABLE = "truth_playbook_effects"


class PlaybookTruth(BaseModel):
    """What a playbook really does in the simulated world."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    hazard_ratio: float = Field(gt=0, description="Weekly churn hazard x this once applied (1 = no effect).")
    p_not_applicable: float = Field(0.1, ge=0, le=1, description="Chance the CSM marks it not applicable.")
    not_applicable_reason: str = "does not fit this account"


def default_playbooks() -> dict[str, PlaybookTruth]:
    """The four shipped playbook ids, one helpful, one useless, one harmful, one mildly helpful."""
    return {
        "monitor": PlaybookTruth(hazard_ratio=1.0, p_not_applicable=0.05,
                                 not_applicable_reason="account already under close watch"),
        "self-service-guide": PlaybookTruth(hazard_ratio=1.8, p_not_applicable=0.15,
                                            not_applicable_reason="customer has no admin to follow the guide"),
        "csm-call": PlaybookTruth(hazard_ratio=0.4, p_not_applicable=0.1,
                                  not_applicable_reason="customer unreachable this week"),
        "executive-response": PlaybookTruth(hazard_ratio=0.7, p_not_applicable=0.2,
                                            not_applicable_reason="no executive sponsor on the account"),
    }


class LoopConfig(BaseModel):
    """The replay's knobs. ``playbooks``: id -> truth (the ids are whatever the warnings offer)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    seed: int = 0
    playbooks: dict[str, PlaybookTruth] = Field(default_factory=default_playbooks)
    delay_median_hours: float = Field(3.0, gt=0, description="Median warning -> intervention delay.")
    delay_sigma: float = Field(1.0, ge=0, description="Lognormal sigma of the delay (0: always the median).")
    horizon_weeks: int = Field(HORIZON_WEEKS, gt=0, description="Outcome window; default the CHS label horizon.")


@dataclass(frozen=True)
class Replay:
    """interventions: warning_id, by, at, playbook_id, not_applicable, reason (prompted warnings only).
    outcomes: account_id, churned_at, warning_id (one row per churn drawn).
    truth: playbook_id, hazard_ratio, true_effect, p_as_replayed, p_no_playbook, n (prompted),
    n_not_applicable, n_holdout.
    warnings: the replayed warnings with their draws (delay_hours, not_applicable, applied,
    p_no_playbook, p_as_replayed, churned). skipped: reason -> count of warnings not replayed."""

    interventions: pd.DataFrame
    outcomes: pd.DataFrame
    truth: pd.DataFrame
    warnings: pd.DataFrame
    skipped: dict[str, int]
    horizon_weeks: int


def _utc(s: pd.Series) -> pd.Series:
    if not pd.api.types.is_datetime64_any_dtype(s):  # to_datetime on datetimes still walks every value
        s = pd.to_datetime(s)
    return (s.dt.tz_localize("UTC") if s.dt.tz is None else s.dt.tz_convert("UTC")).astype("datetime64[us, UTC]")


def _micros(s: pd.Series) -> np.ndarray:
    """UTC microseconds since the epoch (naive timestamps taken as UTC)."""
    return _utc(s).dt.tz_convert(None).to_numpy("datetime64[us]").astype(np.int64)


def _hazard_paths(warnings: pd.DataFrame, hazards: pd.DataFrame, H: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """(ok mask over warnings, (n_ok, H) hazards of horizon weeks 0..H-1, skipped counts)."""
    hz = hazards[["account_id", "week_start", "churn_hazard"]]
    week_us = _micros(hz["week_start"])
    first = week_us.min() if len(hz) else 0
    step = WEEK // pd.Timedelta(microseconds=1)
    if ((week_us - first) % step).any():
        raise ValueError("hazards: week_start must be whole weeks apart (Mondays 00:00 UTC in the simulator)")
    col = (week_us - first) // step
    codes, accounts = pd.factorize(hz["account_id"])
    mat = np.full((len(accounts), int(col.max()) + 1 if len(hz) else 0), np.nan)
    mat[codes, col] = hz["churn_hazard"].to_numpy(dtype=float)
    acc = accounts.get_indexer(warnings["account_id"])
    w0 = (_micros(warnings["raised_at"]) - first) // step  # floor: the week holding raised_at
    before = w0 < 0
    past = w0 + H > mat.shape[1]
    ok = (acc >= 0) & ~before & ~past
    h = mat[acc[ok][:, None], w0[ok][:, None] + np.arange(H)[None, :]] if ok.any() else np.zeros((0, H))
    gaps = np.isnan(h).any(axis=1)
    ok[np.flatnonzero(ok)[gaps]] = False
    skipped = {"account not in hazards": int((acc < 0).sum()), "raised before the first hazard week":
               int(((acc >= 0) & before).sum()), "horizon runs past the last hazard week":
               int(((acc >= 0) & ~before & past).sum()), "hazards missing inside the horizon": int(gaps.sum())}
    if ((h < 0) | (h > 1)).any():
        raise ValueError("hazards: churn_hazard must lie in [0, 1]")
    return ok, h[~gaps], {k: v for k, v in skipped.items() if v}


def _check_overlap(warnings: pd.DataFrame, H: int) -> None:
    w = warnings.sort_values(["account_id", "raised_at"])
    same = w["account_id"].eq(w["account_id"].shift())
    close = same & (w["raised_at"] - w["raised_at"].shift() < H * WEEK)
    if close.any():
        a = w.loc[close, "account_id"].iloc[0]
        raise ValueError(f"{int(close.sum())} warning(s) raised inside an earlier warning's {H}-week window of "
                         f"the same account (first: account {a}); each warning is replayed in its own world, so "
                         f"overlapping windows would share an outcome: keep the first per window "
                         f"(experiments.playbooks.first_per_window)")


def replay(warnings: pd.DataFrame, hazards: pd.DataFrame, config: LoopConfig | None = None) -> Replay:
    """Play interventions and outcomes for ``warnings`` on the ``hazards`` path (see the module doc)."""
    config = config or LoopConfig()
    need = ("warning_id", "account_id", "playbook_id", "holdout", "owner", "raised_at")
    missing = [c for c in need if c not in warnings.columns]
    if missing:
        raise ValueError(f"warnings: missing column(s) {', '.join(missing)}")
    unknown = sorted(set(warnings["playbook_id"].dropna()) - set(config.playbooks))
    if unknown or warnings["playbook_id"].isna().any():
        raise ValueError(f"warnings offer playbook(s) the config has no truth for: {unknown or ['<none>']} "
                         f"(config: {', '.join(config.playbooks)})")
    H = config.horizon_weeks
    w = warnings.reset_index(drop=True).copy()
    w["raised_at"] = _utc(w["raised_at"])
    w["holdout"] = w["holdout"].astype(bool)
    _check_overlap(w, H)
    n = len(w)
    # Drawn for every warning (replayed or not) in input order: the streams do not shift with the hazards.
    s_delay, s_na, s_churn = (np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(3))
    delay_h = config.delay_median_hours * np.exp(config.delay_sigma * s_delay.standard_normal(n))
    u_na = s_na.random(n)
    # time inside the churn week in (0, 1]: never at raised_at itself, even after rounding to microseconds
    u_churn, u_when = s_churn.random((n, H)), np.maximum(1.0 - s_churn.random(n), 1e-9)

    ok, h, skipped = _hazard_paths(w, hazards, H)
    idx = np.flatnonzero(ok)
    w = w.iloc[idx].reset_index(drop=True)
    delay_h, u_na, u_churn, u_when = delay_h[idx], u_na[idx], u_churn[idx], u_when[idx]
    pb = w["playbook_id"].to_numpy()
    hr = np.array([config.playbooks[p].hazard_ratio for p in pb])
    p_na = np.array([config.playbooks[p].p_not_applicable for p in pb])
    prompted = ~w["holdout"].to_numpy()
    na = prompted & (u_na < p_na)
    applied = prompted & ~na
    k_int = np.floor(delay_h / (7 * 24)).astype(np.int64)  # horizon week holding the intervention
    acts = applied[:, None] & (np.arange(H)[None, :] > k_int[:, None])
    h_mod = np.where(acts, 1.0 - (1.0 - h) ** hr[:, None], h)
    p_none = 1.0 - np.prod(1.0 - h, axis=1)
    p_as = 1.0 - np.prod(1.0 - h_mod, axis=1)

    event = u_churn < h_mod
    churned = event.any(axis=1)
    k_evt = event.argmax(axis=1)
    churn_at = w["raised_at"] + pd.to_timedelta((k_evt + u_when) * 7, unit="D")
    w = w.assign(delay_hours=delay_h, not_applicable=na, applied=applied, p_no_playbook=p_none,
                 p_as_replayed=p_as, churned=churned)

    reasons = np.array([config.playbooks[p].not_applicable_reason for p in pb], dtype=object)
    interventions = pd.DataFrame({
        "warning_id": w["warning_id"], "by": w["owner"],
        "at": (w["raised_at"] + pd.to_timedelta(delay_h, unit="h")).astype("datetime64[us, UTC]"),
        "playbook_id": pd.Series(np.where(applied, pb, None), dtype=object),
        "not_applicable": na, "reason": pd.Series(np.where(na, reasons, None), dtype=object),
    })[prompted].reset_index(drop=True)
    outcomes = pd.DataFrame({"account_id": w["account_id"], "churned_at": churn_at.astype("datetime64[us, UTC]"),
                             "warning_id": w["warning_id"]})[churned].reset_index(drop=True)
    return Replay(interventions=interventions, outcomes=outcomes, truth=_truth(w, config), warnings=w,
                  skipped=skipped, horizon_weeks=H)


def _truth(w: pd.DataFrame, config: LoopConfig) -> pd.DataFrame:
    rows = []
    for pid, truth in config.playbooks.items():
        g = w[w["playbook_id"] == pid]
        p = g[~g["holdout"]]
        rows.append({"playbook_id": pid, "hazard_ratio": truth.hazard_ratio,
                     "true_effect": float((p["p_as_replayed"] - p["p_no_playbook"]).mean()) if len(p) else np.nan,
                     "p_as_replayed": float(p["p_as_replayed"].mean()) if len(p) else np.nan,
                     "p_no_playbook": float(p["p_no_playbook"].mean()) if len(p) else np.nan,
                     "n": len(p), "n_not_applicable": int(p["not_applicable"].sum()),
                     "n_holdout": int(g["holdout"].sum()),
                     "horizon_weeks": config.horizon_weeks})
    return pd.DataFrame(rows)


def write_truth(result: Replay, out_dir: Path) -> Path:
    """Write ``out_dir/truth/truth_playbook_effects.parquet`` (beside the simulator's other truth tables)."""
    path = Path(out_dir) / "truth" / f"{TRUTH_TABLE}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    result.truth.to_parquet(path, index=False)
    return path


def synthetic_hazards(n: int, weeks: int, start: pd.Timestamp, seed: int = 0
                      ) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """A small world for replay studies without a simulated export: (account ids, each account's base
    weekly hazard, the ``truth_churn_weekly``-shaped frame). Bases are uniform in 0.01-0.03 per week,
    each week wobbles lognormally (sigma 0.2) around its account's base; weeks start at ``start``."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.01, 0.03, n)
    h = np.clip(base[:, None] * rng.lognormal(0, 0.2, (n, weeks)), 0, 1)
    acc = np.array([f"A{i:05d}" for i in range(n)], dtype=object)
    frame = pd.DataFrame({"account_id": np.repeat(acc, weeks),
                          "week_start": np.tile(start + pd.to_timedelta(7 * np.arange(weeks), unit="D"), n),
                          "churn_hazard": h.ravel()})
    return acc, base, frame


def record_interventions(store, result: Replay) -> tuple[int, int]:
    """Record ``result``'s interventions in a warnings store, in the order they happened (so the fuse
    sees each playbook's marks in sequence); (recorded, refused). Refused: applying a playbook that
    the fuse froze after the warning was raised, as the store refuses it from a CSM."""
    from serving.actions.rules import WarningError

    offered = result.warnings.set_index("warning_id")["playbook_id"]
    recorded = refused = 0
    for iv in result.interventions.sort_values(["at", "warning_id"]).itertuples():
        try:
            store.intervene(iv.warning_id, iv.by, iv.at,
                            playbook_id=None if iv.not_applicable else offered[iv.warning_id],
                            not_applicable=bool(iv.not_applicable), reason=iv.reason, now=iv.at)
            recorded += 1
        except WarningError as exc:
            if exc.field != "playbook_id":
                raise
            refused += 1
    return recorded, refused
