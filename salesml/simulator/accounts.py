"""Account side of the simulator: one chunk of accounts -> accounts, contracts, usage_weekly,
interactions, churn_events and the churn truth.  The model is documented in
``salesml.simulator.export``; everything here is vectorised over (accounts, weeks).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from salesml.simulator.base import (
    DAY,
    HOUR,
    INDUSTRIES,
    REGION_P,
    REGIONS,
    TIERS,
    WEEK,
    YEAR,
    floor_s,
    ids,
    labels,
    sigmoid,
    ts,
    week_of_year_season,
)
from salesml.simulator.truth import horizon_probability, observed_weeks
from salesml.simulator.usage import BASELINE_MEASURES, GAMMA_K, early_warning, rolling_sums, usage_drop

MEASURES = ("logins", "active_users", "key_feature_uses", "api_calls", "config_changes",
            "scans_run", "custom_rules")
# Share of the decline each measure feels (level ** share): the four key measures decay at the
# full rate, seat-driven measures only slowly, so the early-warning pattern is carried by the
# behaviour measures rather than by head count.
DECAY_SHARE = np.array([1 / 3, 1 / 3, 1.0, 1.0, 0.5, 1.0, 1.0])

SLA_TARGET = np.array([0.99, 0.995, 0.999])
TIER_PRICE = np.array([12_000.0, 40_000.0, 120_000.0])
P_DECLINE = 0.35

# Weekly churn-or-downgrade hazard: logit = B0 + sum(coef * driver).
HAZARD = {"intercept": -5.5, "early_warning": 2.6, "usage_drop": 1.2, "sla_shortfall_pp": 0.8,
          "relationship_quality": -0.6, "renewal_within_8w": 1.0}
# --importance-shift-after: from that date the relationship layer drives churn 3x harder and
# the behaviour drivers less, so quarterly recalibration has a real change to follow.
IMPORTANCE_SHIFT = {"relationship_quality": 3.0, "early_warning": 0.4, "usage_drop": 0.4}
P_CHURN = 0.45  # share of events that are churns (the rest downgrades)

CHANNELS = ("call", "meeting", "email", "qbr", "survey")
CHANNEL_P = np.array([0.30, 0.20, 0.35, 0.05, 0.10])
NOTES = ("Weekly check-in", "Discussed roadmap priorities", "Follow-up on support ticket",
         "Renewal planning", "Onboarding of new team members", "Escalation about an outage",
         "Feature request collected", "Quarterly business review")

# API-client logging change (counts every retry) and a new login flow (SSO re-auth): both are
# measurement shifts, so labels and the truth are computed from the undrifted counts.
API_DRIFT = 1.8
LOGIN_DRIFT_SHAPE, LOGIN_DRIFT_MEAN = 4.0, 1.4


def simulate_chunk(rng: np.random.Generator, first: int, n: int, weeks: np.ndarray,
                   drift_us: int | None, n_csm: int, width: int,
                   shift_us: int | None = None, truth_samples: int = 64) -> dict[str, pa.Table]:
    W = len(weeks)
    wk = np.arange(W)
    start = weeks[0]
    acc_ids = ids("A", first, n, width)

    # --- static attributes and latent health -------------------------------------------------
    industry = rng.integers(len(INDUSTRIES), size=n)
    region = rng.choice(len(REGIONS), size=n, p=REGION_P)
    employees = np.clip(np.round(rng.lognormal(np.log(400), 1.1, n)), 20, 100_000).astype(np.int64)
    created = floor_s(start - rng.integers(30 * DAY, 4 * YEAR, n))
    c_start = floor_s(created + rng.integers(0, 30 * DAY, n))
    tier0 = np.digitize(0.9 * np.log(employees / 400) + rng.normal(0, 1, n), [-0.3, 1.2])
    value0 = TIER_PRICE[tier0] * (employees / 400) ** 0.4 * rng.lognormal(0, 0.25, n)
    sla_q = rng.normal(size=n)
    rel_q = rng.normal(size=n)
    declining = rng.random(n) < P_DECLINE
    onset = rng.integers(8, W + 26, n)  # many onsets fall after the window: not yet visible
    decay = rng.uniform(0.05, 0.10, n)
    floor = rng.uniform(0.25, 0.5, n)
    csm = rng.integers(n_csm, size=n)
    name_idx = rng.integers(len(_NAMES), size=n)
    name_null = rng.random(n) < 0.02

    # --- usage: account baseline x season x decline x noise ----------------------------------
    since = np.where(declining[:, None], wk[None, :] - onset[:, None], 0)
    decayed = np.maximum(floor[:, None], (1 - decay[:, None]) ** np.maximum(since, 0))
    level = np.where(since > 0, decayed, 1.0)
    users = np.maximum(20, 0.35 * employees * rng.lognormal(0, 0.3, n))
    base = np.stack([
        users * rng.uniform(3, 6, n),                       # logins
        users,                                              # active_users
        150 + users * rng.uniform(1, 3, n),                 # key_feature_uses
        1000 + users * rng.lognormal(np.log(30), 0.7, n),   # api_calls
        100 + 0.2 * users,                                  # config_changes
        150 + 0.5 * users * rng.uniform(0.5, 1.5, n),       # scans_run
        120 + 0.3 * users * rng.uniform(0.5, 1.5, n),       # custom_rules
    ], axis=1)
    common = week_of_year_season(weeks)[None, :] * rng.lognormal(0, 0.03, (n, W))
    true = {}
    for m, name in enumerate(MEASURES):
        noise = rng.gamma(GAMMA_K, 1 / GAMMA_K, (n, W))
        lam = base[:, m, None] * common * level ** DECAY_SHARE[m] * noise
        true[name] = rng.poisson(lam).astype(np.int64)
    login_noise = rng.gamma(LOGIN_DRIFT_SHAPE, LOGIN_DRIFT_MEAN / LOGIN_DRIFT_SHAPE, (n, W))
    observed = dict(true)
    if drift_us is not None:
        drifted = (weeks >= drift_us)[None, :]
        for m, factor in (("api_calls", API_DRIFT), ("logins", login_noise)):
            observed[m] = np.where(drifted, np.round(true[m] * factor), true[m]).astype(np.int64)

    # --- SLA: weekly shortfall below target, reported as 4-week means at snapshots ------------
    gap = (0.004 * np.maximum(0, -sla_q) - 0.001)[:, None] + rng.normal(0, 0.001, (n, W + 4))
    gap += (rng.random((n, W + 4)) < 0.03) * rng.exponential(0.008, (n, W + 4))
    snap_week = (W - 1 - wk) % 4 == 0
    gap_cs = rolling_sums(gap)
    gap4 = (gap_cs[:, 4:W + 4] - gap_cs[:, :W]) / 4  # the 4 weeks before week w's Monday
    last_snap = np.maximum.accumulate(np.where(snap_week, wk, -1))
    latest = 100 * np.maximum(gap4[:, np.maximum(last_snap, 0)], 0)
    shortfall = np.where(last_snap >= 0, latest, 0.0)

    # --- hazard, events ------------------------------------------------------------------------
    _, ew = early_warning(true)
    ew_known = np.zeros_like(ew)
    ew_known[:, 1:] = ew[:, :-1]  # week w-1's pattern is known when week w starts
    drop = usage_drop(true)
    next_renewal = c_start[:, None] + ((weeks[None, :] - c_start[:, None]) // YEAR + 1) * YEAR
    renew8 = (next_renewal - weeks[None, :]) <= 56 * DAY
    coef = {k: np.full(len(weeks), v) for k, v in HAZARD.items()}
    if shift_us is not None:  # the business changes: relationships start to matter more than usage
        for k, factor in IMPORTANCE_SHIFT.items():
            coef[k] = np.where(weeks >= shift_us, HAZARD[k] * factor, HAZARD[k])
    z = (coef["intercept"] + coef["early_warning"] * ew_known + coef["usage_drop"] * drop
         + coef["sla_shortfall_pp"] * np.minimum(shortfall, 2.0)
         + coef["relationship_quality"] * rel_q[:, None] + coef["renewal_within_8w"] * renew8)
    hazard = sigmoid(z)
    event = rng.random((n, W)) < hazard
    is_churn = event & (rng.random((n, W)) < P_CHURN)
    churn_week = np.where(is_churn.any(axis=1), is_churn.argmax(axis=1), W)
    alive = wk[None, :] < churn_week[:, None]
    at_risk = wk[None, :] <= churn_week[:, None]
    downgrade = event & alive
    ev_a, ev_w = np.nonzero(event & at_risk)
    ev_time = floor_s(weeks[ev_w] + rng.integers(HOUR, WEEK - HOUR, len(ev_a)))
    ev_kind = (ev_w == churn_week[ev_a]).astype(np.int64)  # 1 = churn
    churn_at = np.full(n, -1, dtype=np.int64)
    churn_at[ev_a[ev_kind == 1]] = ev_time[ev_kind == 1]

    # --- contracts: snapshot every 4 weeks, downgrades lower tier and value ------------------
    shrink = np.where(downgrade, np.log(rng.uniform(0.55, 0.85, (n, W))), 0.0)
    n_before = np.cumsum(downgrade, axis=1) - downgrade
    value_log = np.cumsum(shrink, axis=1) - shrink
    c_a, c_w = np.nonzero(alive & snap_week[None, :])
    tier = np.maximum(tier0[c_a] - n_before[c_a, c_w], 0)
    target = SLA_TARGET[tier]

    # --- interactions: frequency and tone follow relationship quality ------------------------
    rate = 0.25 * np.exp(0.45 * rel_q) + 0.05 * (tier0 == 2)
    n_touch = rng.poisson(rate[:, None] * alive)
    cell = np.repeat(np.arange(n * W), n_touch.ravel())
    i_a, i_w = cell // W, cell % W
    i_time = floor_s(weeks[i_w] + rng.integers(0, WEEK, len(cell)))
    order = np.lexsort((i_time, i_a))
    i_a, i_time = i_a[order], i_time[order]
    k = len(i_a)
    channel = rng.choice(len(CHANNELS), size=k, p=CHANNEL_P)
    quality = np.clip(np.round(3.2 + 0.7 * rel_q[i_a] + rng.normal(0, 0.5, k), 1), 1, 5)
    quality_null = rng.random(k) < 0.05
    nps = np.clip(np.round(7.5 + 1.6 * rel_q[i_a] + rng.normal(0, 1.2, k)), 0, 10).astype(np.int64)
    joint = rng.random(k) < sigmoid(-2.5 + 1.2 * rel_q[i_a])
    note = rng.integers(len(NOTES), size=k)
    note_null = rng.random(k) < 0.5

    csm_ids = ids("CSM", 0, n_csm, 4)
    # every week, also after a churn: the hazard the account would have had, had it stayed
    t_a, t_w = np.nonzero(np.ones_like(at_risk))
    ev_row = np.full((n, W), -1, dtype=np.int64)
    ev_row[ev_a, ev_w] = ev_kind
    ev_cell = ev_row[t_a, t_w]
    in_window = declining & (onset < W)
    u_a, u_w = np.nonzero(alive)
    # Drawn last from its own stream, so the export is the same with or without it.
    p_horizon = np.full((n, W), np.nan)
    if truth_samples > 0:
        idx = [MEASURES.index(m) for m in BASELINE_MEASURES]
        p_horizon = horizon_probability(
            np.random.default_rng(rng.integers(2**63)), observed_weeks(churn_week, W),
            counts={m: true[m] for m in BASELINE_MEASURES},
            base={m: base[:, i] for m, i in zip(BASELINE_MEASURES, idx)}, season=week_of_year_season(weeks),
            share={m: DECAY_SHARE[i] for m, i in zip(BASELINE_MEASURES, idx)},
            declining=declining, onset=onset, decay=decay, floor=floor, p_decline=P_DECLINE,
            onset_range=(8, W + 26), gap=gap, gap_mu=0.004 * np.maximum(0, -sla_q) - 0.001,
            snap_week=snap_week, coef=coef, rel_q=rel_q, renew8=renew8, samples=truth_samples)
    return {
        "accounts": pa.table({
            "account_id": acc_ids,
            "name": pa.array(_NAMES, type=pa.string()).take(pa.array(name_idx, mask=name_null)),
            "industry": labels(INDUSTRIES, industry),
            "region": labels(REGIONS, region),
            "employees": pa.array(employees),
            "created_at": ts(created),
        }),
        "contracts": pa.table({
            "contract_id": ids("C", first, n, width).take(pa.array(c_a)),
            "account_id": acc_ids.take(pa.array(c_a)),
            "tier": labels(TIERS, tier),
            "annual_value": pa.array(np.round(value0[c_a] * np.exp(value_log[c_a, c_w]), 2)),
            "start_date": ts(c_start[c_a]),
            "end_date": ts(next_renewal[c_a, c_w]),
            "sla_target": pa.array(target),
            "sla_attainment": pa.array(np.clip(np.round(target - gap4[c_a, c_w], 5), 0, 1)),
            "snapshot_at": ts(weeks[c_w]),
        }),
        "usage_weekly": pa.table({
            "account_id": acc_ids.take(pa.array(u_a)),
            "week_start": ts(weeks[u_w]),
            **{m: pa.array(observed[m][u_a, u_w]) for m in MEASURES},
        }),
        "interactions": pa.table({
            # renumbered across chunks by the caller
            "interaction_id": pa.array(np.arange(k), type=pa.int64()),
            "account_id": acc_ids.take(pa.array(i_a)),
            "occurred_at": ts(i_time),
            "channel": labels(CHANNELS, channel),
            "csm_id": csm_ids.take(pa.array(csm[i_a])),
            "communication_quality": pa.array(quality, mask=quality_null),
            "nps": pa.array(nps, mask=channel != CHANNELS.index("survey")),
            "joint_project": pa.array(joint),
            "notes": labels(NOTES, note, note_null),
        }),
        "churn_events": pa.table({
            "account_id": acc_ids.take(pa.array(ev_a)),
            "occurred_at": ts(ev_time),
            "kind": labels(("downgrade", "churn"), ev_kind),
        }),
        "truth_churn_weekly": pa.table({
            "account_id": acc_ids.take(pa.array(t_a)),
            "week_start": ts(weeks[t_w]),
            "churn_hazard": pa.array(hazard[t_a, t_w]),
            "early_warning": pa.array(ew_known[t_a, t_w]),
            "usage_drop": pa.array(drop[t_a, t_w]),
            "sla_shortfall_pp": pa.array(shortfall[t_a, t_w]),
            "renewal_within_8w": pa.array(renew8[t_a, t_w]),
            "event": labels(("downgrade", "churn"), np.maximum(ev_cell, 0), ev_cell < 0),
            "at_risk": pa.array(at_risk[t_a, t_w]),
            "p_event_horizon": pa.array(p_horizon[t_a, t_w], mask=np.isnan(p_horizon[t_a, t_w])),
        }),
        "truth_accounts": pa.table({
            "account_id": acc_ids,
            "tier_initial": labels(TIERS, tier0),
            "declining": pa.array(declining),
            "decline_start": ts(weeks[np.minimum(onset, W - 1)], ~in_window),
            "decay_rate": pa.array(decay, mask=~declining),
            "sla_quality": pa.array(sla_q),
            "relationship_quality": pa.array(rel_q),
            "churned_at": ts(churn_at, churn_at < 0),
        }),
    }


_NAMES = tuple(f"{a} {b}" for a in ("Acme", "Globex", "Initech", "Umbrella", "Stark", "Wayne",
                                     "Hooli", "Vandelay", "Soylent", "Tyrell", "Wonka", "Cyberdyne")
               for b in ("Systems", "Group", "Holdings", "Labs", "Industries", "Partners"))
