"""Synthetic CRM + product-analytics export with a planted, documented causal structure.

``generate(out_dir, ...)`` writes one parquet file per contract table (``salesml.contract``,
exact column names and Arrow types) and, under ``out_dir/truth/``, the ground truth that the
models are checked against (never features).  Same arguments -> identical table contents:
every account chunk draws from its own ``SeedSequence(seed)`` child, so results depend on the
seed and ``chunk_accounts`` only.  Weeks: ``week_start`` are Mondays 00:00 UTC, the first is
``end - weeks`` weeks, the last ``end - 1`` week; ``end`` must be a Monday.  Every event
timestamp is <= ``end``; the one exception is ``contracts.end_date``, the renewal date, which
is naturally in the future of its snapshot (up to a year after ``end``).

Planted structure (constants in ``accounts`` / ``usage`` / ``leads`` of this package)
------------------------------------------------------------------------------------
Accounts (industry, region, employees, created_at >= 30 days before the window) carry latent
health: ``relationship_quality`` ~ N(0,1), ``sla_quality`` ~ N(0,1) and, for 35%, a usage
decline that starts at a random week (often after the window) and decays the key measures
by 5-10%/week to a floor of 25-50% (logins/active_users feel it as level**(1/3),
config_changes as level**0.5).

* usage_weekly: Poisson around account baseline x mild seasonality (year-end dip 0.9) x weekly
  shock x Gamma noise (CV ~5%), so healthy accounts rarely dip 20%.
* early warning (``usage.early_warning``, same definition as
  ``features/transforms.py``): >= 2 of (key_feature_uses, api_calls, config_changes, scans_run,
  custom_rules) below 0.8x their own mean of the previous <= 12 weeks (>= 4 weeks of history),
  held for 3 consecutive weeks.
* contracts: one contract per account (tier from employees; annual_value from tier and
  employees), snapshot every 4 weeks ending at the last week; end_date = next yearly renewal;
  sla_target 0.99 / 0.995 / 0.999 by tier; sla_attainment = target - mean weekly shortfall of
  the 4 weeks before the snapshot (shortfall from sla_quality, noise, rare incidents).
* weekly churn-or-downgrade hazard, written to ``truth/truth_churn_weekly`` with its drivers:
  ``logit = -5.5 + 2.6*early_warning(week w-1) + 1.2*usage_drop + 0.8*min(sla_shortfall_pp, 2)
  - 0.6*relationship_quality + 1.0*renewal_within_8w``.  usage_drop = -mean log ratio of the last
  4 weeks to the 12 before over the four key measures, in [0, 1.5]; sla_shortfall_pp is from
  the latest snapshot.  An event is a churn with prob 0.45 (account stops: no usage, snapshots
  or interactions from that week on) else a downgrade (tier -1 down to basic, value x0.55-0.85).
  Drivers are computed from undrifted counts, so drift never changes labels.
* interactions: Poisson, rate 0.25*exp(0.45*relationship_quality)/week (+0.05 enterprise, by the
  initial tier) while the account is alive; quality 3.2 + 0.7*rq; nps on surveys only,
  7.5 + 1.6*rq; joint_project ~ sigmoid(-2.5 + 1.2*rq).
* leads: latent intent ~ N(0,1) + source effect (referral +0.5, partner +0.3, event +0.1,
  outbound -0.4, web 0); company_size ~ lognormal around 300 employees;
  expected_deal_amount depends on company size only (no signal beyond the size's own).
* lead_events: Poisson(exp(1.8 + 0.8*intent)) + 1 events from created_at on (gamma delays, ~mean
  12 days, so many fall after assignment; those after ``end`` are dropped); high intent -> more
  pricing / case-study views, longer dwell, pricing-sheet downloads, webinar completion, budget and
  (rare, strong) tender signals.
* lead_assignments: assigned 7-21 days after creation by a manual router (same region with prob
  0.6, else anyone, favouring some reps); first touch slower under load; conversion
  (``leads.CONVERT``) ``p = sigmoid(-1.9 + 1.3*intent + 0.9*icp_fit(company_size)
  + 0.6*industry_match + 0.5*product_match + 0.3*region_match + 1.0*rep_skill
  - 1.5*max(0, load - 0.8) - 0.35*log1p(first_touch_hours/24))``, icp_fit =
  exp(-((log(size) - log(800)) / 0.9)**2), the mid-market sweet spot; deals that would close after
  ``end`` are still open (converted False).  rep_state: weekly open_leads
  (from assignment / close times), capacity, realised 90-day win rate shrunk to the rep's prior
  track record, 180-day mean cycle.  ``truth_intent`` gives p averaged over and best over reps.

Truth tables (``out_dir/truth/``, never features):
* truth_churn_weekly: account_id, week_start, churn_hazard, early_warning, usage_drop,
  sla_shortfall_pp, renewal_within_8w, event (churn / downgrade / null), at_risk; one row per
  account and week.  After the churn week (at_risk false) the row holds the hazard the account
  would have had had it stayed: a horizon's churn probability needs the whole path, and a path
  cut at the churn would make early churners look safe.  p_event_horizon: P(churn or downgrade within the CHS
  label horizon | the account's state at the start of that week), a Monte Carlo average over the
  futures still open then (``salesml.simulator.truth``, ``truth_samples`` paths; 0 skips it),
  filled on the weeks a CHS training set observes: the best a model could know, where the
  realised hazard path also knows declines that had not started yet.
* truth_accounts: account_id, tier_initial, declining, decline_start (null unless it starts in
  the window), decay_rate, sla_quality, relationship_quality, churned_at.
* truth_assignments: assignment_id, lead_id, rep_id, p_convert (the p used),
  p_convert_at_assignment (the same with the rep's median instead of the realised first touch:
  the best a model could know when routing), converted_eventually,
  closes_at (may be after ``end``), load_ratio, first_touch_hours.
* truth_intent: lead_id, latent_intent, true_region, p_convert_avg_rep / p_convert_best_rep /
  best_rep_id over reps eligible at the lead's assignment (their load that week, median touch).

Importance shift (``importance_shift_after``): from that date the churn hazard's coefficients
change by ``accounts.IMPORTANCE_SHIFT`` (relationship quality x3, early warning and
usage drop x0.4): the true layer importance moves from behaviour towards relationship.

Drift (``drift_after``): only ``DRIFTED_COLUMNS`` change, only in rows at/after the date, and
for a given seed every other column (truth included) is identical with or without drift.  All
are measurement shifts, so labels do not move: api_calls x1.8 (new API client counts retries)
and logins x Gamma(mean 1.4, CV 0.5) (SSO re-auth) for weeks >= drift_after; 35% of leads
created after it recorded as latam (new geo-enrichment vendor; routing and rep fit keep the
true territory); pricing-page dwell_seconds x1.6 (redesigned page).

Performance (2-core VM, 23 GB RAM, 2026-12-02; wall time of ``generate`` / peak RSS of the whole
``salesml data generate`` process; rows include the truth tables):
  500 accounts, 2k leads, 40 reps, 52 weeks (92k rows):            0.3 s / 190 MB
  20k accounts, 20k leads, 100 reps, 104 weeks (5.1M rows):         5.8 s / 1.16 GB
  200k accounts, 100k leads, 200 reps, 104 weeks (49.2M rows, 17.1M usage rows; churned accounts
  stop reporting, hence < 20.8M; 5.1M interactions; 570 MB of parquet):  36 s / 1.57 GB
These figures are without the knowable churn truth (``truth_samples=0``); with the default 64
paths it adds ~14 s per 1,000 accounts x 104 weeks (1,000 accounts: 0.3 s -> 14.5 s).
Memory is bounded by ``chunk_accounts`` (~50 KB per account in a chunk), not by ``accounts``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from salesml.contract import TABLES
from salesml.simulator.accounts import simulate_chunk
from salesml.simulator.base import TS_TYPE, WEEK, ids
from salesml.simulator.leads import simulate_sales

DRIFTED_COLUMNS: dict[str, list[str]] = {
    "usage_weekly": ["api_calls", "logins"],
    "leads": ["region"],
    "lead_events": ["dwell_seconds"],
}
TRUTH_TABLES = ("truth_churn_weekly", "truth_accounts", "truth_assignments", "truth_intent")

_ARROW = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(),
          "ts": TS_TYPE}


def arrow_schema(table: str) -> pa.Schema:
    return pa.schema([pa.field(c.name, _ARROW[c.dtype], nullable=c.nullable)
                      for c in TABLES[table].columns])


def _utc_us(value: str) -> int:
    t = pd.Timestamp(value)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return t.value // 1000


class _Sink:
    """One ParquetWriter per table, opened on first rows; each chunk becomes row group(s)."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.writers: dict[str, pq.ParquetWriter] = {}
        self.rows: dict[str, int] = {}

    def write(self, name: str, table: pa.Table) -> None:
        if name in TABLES:
            table = table.select(list(arrow_schema(name).names)).cast(arrow_schema(name))
        if name not in self.writers:
            path = self.out_dir / ("truth" if name in TRUTH_TABLES else "") / f"{name}.parquet"
            self.writers[name] = pq.ParquetWriter(path, table.schema)
            self.rows[name] = 0
        if table.num_rows:
            self.writers[name].write_table(table)
        self.rows[name] += table.num_rows

    def close(self) -> dict[str, int]:
        for w in self.writers.values():
            w.close()
        return self.rows


def generate(out_dir: Path, accounts: int, leads: int, reps: int, weeks: int, seed: int,
             end: str = "2026-09-28", drift_after: str | None = None, chunk_accounts: int = 20_000,
             progress: Callable[[str, int, int], None] | None = None,
             importance_shift_after: str | None = None, truth_samples: int = 64) -> dict[str, int]:
    """Write the export (and ``truth/``) into ``out_dir``; return rows written per table."""
    if min(accounts, leads, reps, chunk_accounts) < 1 or weeks < 4:
        raise ValueError("accounts, leads, reps, chunk_accounts must be >= 1 and weeks >= 4")
    end_us = _utc_us(end)
    if end_us % (24 * 3600 * 10**6) or pd.Timestamp(end_us, unit="us").weekday() != 0:
        raise ValueError(f"end must be a Monday at 00:00 UTC, got {end!r}")
    drift_us = _utc_us(drift_after) if drift_after else None
    shift_us = _utc_us(importance_shift_after) if importance_shift_after else None
    week_starts = end_us - (weeks - np.arange(weeks, dtype=np.int64)) * WEEK
    out_dir = Path(out_dir)
    (out_dir / "truth").mkdir(parents=True, exist_ok=True)

    sales_seed, accounts_seed = np.random.SeedSequence(seed).spawn(2)
    n_chunks = -(-accounts // chunk_accounts)
    chunk_seeds = accounts_seed.spawn(n_chunks)
    sink = _Sink(out_dir)
    try:
        for name, table in simulate_sales(np.random.default_rng(sales_seed), leads, reps,
                                          week_starts, end_us, drift_us).items():
            sink.write(name, table)
        if progress:
            progress("leads", leads, leads)
        width = max(7, len(str(accounts)))
        n_csm = max(3, accounts // 150)
        interactions = 0
        for c in range(n_chunks):
            first = 1 + c * chunk_accounts
            n = min(chunk_accounts, accounts - c * chunk_accounts)
            tables = simulate_chunk(np.random.default_rng(chunk_seeds[c]), first, n, week_starts,
                                    drift_us, n_csm, width, shift_us, truth_samples)
            inter = tables["interactions"]
            tables["interactions"] = inter.set_column(
                0, "interaction_id", ids("I", interactions + 1, inter.num_rows, 10))
            interactions += inter.num_rows
            for name, table in tables.items():
                sink.write(name, table)
            if progress:
                progress("accounts", first - 1 + n, accounts)
    finally:
        rows = sink.close()
    for name in TABLES:  # an empty table still gets a file, so the export is complete
        if name not in rows:
            pq.write_table(arrow_schema(name).empty_table(), out_dir / f"{name}.parquet")
            rows[name] = 0
    return rows
