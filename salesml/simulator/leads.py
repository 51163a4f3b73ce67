"""Sales side of the simulator: reps, rep_state, leads, lead_events, lead_assignments and the
intent / conversion truth.  Small enough (<= ~100k leads) to build in one go; the model is
documented in ``salesml.simulator.export``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from salesml.simulator.base import (
    DAY,
    HOUR,
    INDUSTRIES,
    LATAM,
    PRODUCTS,
    REGION_P,
    REGIONS,
    SENIORITY,
    WEEK,
    YEAR,
    floor_s,
    ids,
    labels,
    pick,
    sigmoid,
    ts,
)

SOURCES = ("web", "event", "referral", "outbound", "partner")
SOURCE_P = (0.40, 0.15, 0.15, 0.20, 0.10)
SOURCE_INTENT = np.array([0.0, 0.1, 0.5, -0.4, 0.3])
EVENT_TYPES = ("page_view", "doc_download", "webinar", "competitor_social", "budget_signal",
               "tender_signal")
PAGES = ("pricing", "case_study", "product", "blog")
DOC_TYPES = ("whitepaper", "datasheet", "pricing_sheet", "case_study")

P_SAME_REGION = 0.6  # the manual router: same region 60% of the time, else anyone
LEAVER_WEEKS = 12  # inactive reps left this many weeks before the export and took no new leads
MEAN_OPEN_DAYS = 35.0
# Conversion logit; the lead-match model is scored against these.
ASSIGN_DAYS = (7, 21)  # days from lead creation to assignment
CONVERT = {"intercept": -1.9, "intent": 1.3, "icp_size": 0.9, "industry_match": 0.6, "product_match": 0.5,
           "region_match": 0.3, "rep_skill": 1.0, "overload": -1.5, "slow_first_touch": -0.35}
# Measurement drifts: a new geo-enrichment vendor records a share of new leads as latam (routing
# and fit keep the true territory), and a redesigned pricing page holds visitors longer.
LATAM_DRIFT_SHARE = 0.35
PRICING_DWELL_DRIFT = 1.6
_BIG = 10**10  # composite (rep, second) sort key; seconds since 1970 stay below it


ICP_SIZE = (800.0, 0.9)  # ideal customer profile: mid-market, centre and width in log(employees)


def icp_fit(size):
    """0..1 bump around the mid-market sweet spot: too small lacks budget, too large buys elsewhere."""
    centre, width = ICP_SIZE
    return np.exp(-(((np.log(size) - np.log(centre)) / width) ** 2))


def convert_logit(intent, size, industry_match, product_match, region_match, skill, load, touch_hours):
    c = CONVERT
    return (c["intercept"] + c["intent"] * intent + c["icp_size"] * icp_fit(size)
            + c["industry_match"] * industry_match
            + c["product_match"] * product_match + c["region_match"] * region_match
            + c["rep_skill"] * skill + c["overload"] * np.maximum(0.0, load - 0.8)
            + c["slow_first_touch"] * np.log1p(touch_hours / 24))


def _subsets(rng, n: int, k: int) -> np.ndarray:
    """(n, k) membership mask of 1-3 distinct items per row."""
    rank = rng.random((n, k)).argsort(axis=1).argsort(axis=1)
    return rank < rng.integers(1, 4, n)[:, None]


def _joined(vocab, mask: np.ndarray) -> pa.Array:
    return pa.array(["|".join(v for v, m in zip(vocab, row, strict=True) if m) for row in mask],
                    type=pa.string())


def _per_rep_window(rep, t, values, n_reps, lo, hi):
    """Per rep (rows) and query (cols): count and sum of ``values`` over items with lo < t <= hi."""
    keys = rep * _BIG + t // 10**6
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    cs = np.concatenate([[0.0], np.cumsum(values[order])])
    r = np.arange(n_reps)[:, None] * _BIG
    i_hi = np.searchsorted(keys, r + hi[None, :] // 10**6, "right")
    i_lo = np.searchsorted(keys, r + lo[None, :] // 10**6, "right")
    return i_hi - i_lo, cs[i_hi] - cs[i_lo]


def simulate_sales(rng: np.random.Generator, n_leads: int, n_reps: int, weeks: np.ndarray,
                   end: int, drift_us: int | None) -> dict[str, pa.Table]:
    W, start = len(weeks), weeks[0]
    L, R = n_leads, n_reps

    # --- reps ----------------------------------------------------------------------------------
    r_region = rng.choice(len(REGIONS), size=R, p=REGION_P)
    r_ind = _subsets(rng, R, len(INDUSTRIES))
    r_prod = _subsets(rng, R, len(PRODUCTS))
    seniority = rng.choice(3, size=R, p=(0.4, 0.4, 0.2))
    skill = rng.normal(0, 0.35, R) + np.array([-0.25, 0.0, 0.3])[seniority]
    hired = floor_s(start - rng.integers(30 * DAY, (1 + 3 * seniority) * YEAR))
    active = rng.random(R) < 0.93
    active[0] = True  # someone must be left to take the late leads
    favour = rng.lognormal(0, 0.6, R)  # the manual router's favourites carry more load
    expected_open = L / (R * W) * MEAN_OPEN_DAYS / 7
    capacity = np.clip(np.round(expected_open * rng.uniform(1.0, 2.0, R)), 3, 80).astype(np.int64)
    leave = np.where(active, np.iinfo(np.int64).max, end - LEAVER_WEEKS * WEEK)

    # --- leads and latent intent ---------------------------------------------------------------
    created = np.sort(floor_s(start + rng.integers(0, end - ASSIGN_DAYS[1] * DAY - start, L)))
    l_ind = rng.integers(len(INDUSTRIES), size=L)
    l_reg = rng.choice(len(REGIONS), size=L, p=REGION_P)
    source = rng.choice(len(SOURCES), size=L, p=SOURCE_P)
    product = rng.integers(len(PRODUCTS), size=L)
    size = np.clip(np.round(rng.lognormal(np.log(300), 1.2, L)), 5, 200_000).astype(np.int64)
    intent = rng.normal(size=L) + SOURCE_INTENT[source]
    flip = rng.random(L) < LATAM_DRIFT_SHARE
    recorded_reg = l_reg
    if drift_us is not None:
        recorded_reg = np.where((created >= drift_us) & flip, LATAM, l_reg)
    deal = np.round(rng.lognormal(np.log(30_000) + 0.35 * np.log(size / 300), 0.9, L), -2)
    deal_null = rng.random(L) < 0.1

    # --- assignment by the manual router ---------------------------------------------------------
    # Marketing nurtures a lead for 1-3 weeks before sales gets it, so intent signals exist
    # at assignment time (and keep coming after it, which the leakage tests rely on).
    assigned = floor_s(created + rng.integers(ASSIGN_DAYS[0] * DAY, ASSIGN_DAYS[1] * DAY, L))
    same = rng.random(L) < P_SAME_REGION
    u_pick = rng.random(L)
    rep = np.zeros(L, dtype=np.int64)
    late = assigned >= end - LEAVER_WEEKS * WEEK
    for is_late in (False, True):
        eligible = active | (not is_late)
        for region in (*range(len(REGIONS)), None):
            cand = eligible if region is None else eligible & (r_region == region)
            if not cand.any():
                cand = eligible
            sel = (late == is_late) & (~same if region is None else same & (l_reg == region))
            cum = np.cumsum(favour * cand)
            rep[sel] = np.searchsorted(cum, u_pick[sel] * cum[-1], "right")

    dur_days = rng.lognormal(np.log(MEAN_OPEN_DAYS), 0.5, L)
    close = assigned + floor_s((dur_days * DAY).astype(np.int64))
    ones = np.ones(L)
    zero_lo = np.zeros(W, dtype=np.int64)
    n_assigned, _ = _per_rep_window(rep, assigned, ones, R, zero_lo, weeks)
    n_closed, _ = _per_rep_window(rep, close, ones, R, zero_lo, weeks)
    open_leads = (n_assigned - n_closed).astype(np.int64)  # (R, W) at each Monday

    w_idx = np.clip((assigned - start) // WEEK, 0, W - 1)
    load = open_leads[rep, w_idx] / capacity[rep]
    hours = rng.lognormal(np.log(8) + 1.2 * load - 0.2 * seniority[rep], 0.9)
    first_touch = floor_s(assigned + (hours * HOUR).astype(np.int64))
    p = sigmoid(convert_logit(intent, size, r_ind[rep, l_ind], r_prod[rep, product],
                              r_region[rep] == l_reg, skill[rep], load, hours))
    # What could be known when the lead is assigned: the rep's median first touch, not the realised one.
    hours_expected = np.exp(np.log(8) + 1.2 * load - 0.2 * seniority[rep])
    p_at_assignment = sigmoid(convert_logit(intent, size, r_ind[rep, l_ind], r_prod[rep, product],
                                            r_region[rep] == l_reg, skill[rep], load, hours_expected))
    won = rng.random(L) < p
    converted = won & (close <= end)  # outcomes after the export are still open: not converted

    # --- rep_state: workload and realised performance at every Monday ----------------------------
    closed, wins = _per_rep_window(rep, close, won.astype(float), R, weeks - 90 * DAY, weeks)
    _, sum_cyc = _per_rep_window(rep, close, won * dur_days, R, weeks - 180 * DAY, weeks)
    _, n_cyc = _per_rep_window(rep, close, won.astype(float), R, weeks - 180 * DAY, weeks)
    prior = sigmoid(-1.4 + skill)[:, None]  # pre-window track record the CRM already knew
    win_rate = np.round((wins + 5 * prior) / (closed + 5), 4)
    cycle = np.round(sum_cyc / np.maximum(n_cyc, 1), 2)
    s_r, s_w = np.nonzero(weeks[None, :] < leave[:, None])

    # --- truth: conversion probability with every eligible rep -----------------------------------
    p_avg, p_best, best = np.empty(L), np.empty(L), np.empty(L, dtype=np.int64)
    block = max(1, 2_000_000 // R)
    for s in range(0, L, block):
        sl = slice(s, s + block)
        lm = open_leads[:, w_idx[sl]].T / capacity[None, :]
        hm = np.exp(np.log(8) + 1.2 * lm - 0.2 * seniority[None, :])  # median first touch
        pm = sigmoid(convert_logit(intent[sl, None], size[sl, None], r_ind.T[l_ind[sl]], r_prod.T[product[sl]],
                                   r_region[None, :] == l_reg[sl, None], skill[None, :], lm, hm))
        pm = np.where(active[None, :] | ~late[sl, None], pm, np.nan)
        p_avg[sl], p_best[sl], best[sl] = np.nanmean(pm, 1), np.nanmax(pm, 1), np.nanargmax(pm, 1)

    # --- lead_events: behaviour driven by intent, before and after assignment --------------------
    n_ev = rng.poisson(np.exp(1.8 + 0.8 * intent)) + 1
    e_l = np.repeat(np.arange(L), n_ev)
    e_t = floor_s(created[e_l] + (rng.gamma(1.2, 10, len(e_l)) * DAY).astype(np.int64))
    keep = e_t <= end
    e_l, e_t = e_l[keep], e_t[keep]
    order = np.lexsort((e_t, e_l))
    e_l, e_t = e_l[order], e_t[order]
    i = intent[e_l][:, None]
    k = len(e_l)
    etype = pick(rng, np.hstack([np.full((k, 1), 6.0), 1.5 * np.exp(0.3 * i), np.full((k, 1), 0.8),
                                 0.5 * np.exp(0.3 * i), 0.25 * np.exp(0.8 * i),
                                 0.03 * np.exp(1.3 * i)]))
    page = pick(rng, np.hstack([np.exp(0.9 * i), 0.8 * np.exp(0.5 * i), np.full((k, 1), 2.0),
                                1.5 * np.exp(-0.4 * i)]))
    doc = pick(rng, np.hstack([np.full((k, 1), 1.5), np.full((k, 1), 1.2), 0.6 * np.exp(0.9 * i),
                               0.8 * np.exp(0.4 * i)]))
    dwell = rng.lognormal(np.log(45) + 0.35 * i[:, 0] + np.array([0.3, 0.2, 0.0, -0.2])[page], 0.6)
    completion = np.round(sigmoid(0.3 + 0.9 * i[:, 0] + rng.normal(0, 0.8, k)), 3)
    if drift_us is not None:
        dwell = np.where((page == 0) & (e_t >= drift_us), dwell * PRICING_DWELL_DRIFT, dwell)
    is_view, is_doc, is_web = etype == 0, etype == 1, etype == 2

    lead_ids = ids("L", 1, L, max(7, len(str(L))))
    rep_ids = ids("R", 1, R, max(4, len(str(R))))
    lead_rep = rep_ids.take(pa.array(rep))
    assignment_ids = ids("S", 1, L, max(7, len(str(L))))
    return {
        "reps": pa.table({
            "rep_id": rep_ids, "region": labels(REGIONS, r_region),
            "industries": _joined(INDUSTRIES, r_ind), "products": _joined(PRODUCTS, r_prod),
            "seniority": labels(SENIORITY, seniority), "hired_at": ts(hired),
            "active": pa.array(active),
        }),
        "rep_state": pa.table({
            "rep_id": rep_ids.take(pa.array(s_r)), "as_of": ts(weeks[s_w]),
            "open_leads": pa.array(open_leads[s_r, s_w]), "capacity": pa.array(capacity[s_r]),
            "win_rate_90d": pa.array(win_rate[s_r, s_w]),
            "avg_close_cycle_days": pa.array(cycle[s_r, s_w], mask=n_cyc[s_r, s_w] == 0),
        }),
        "leads": pa.table({
            "lead_id": lead_ids, "industry": labels(INDUSTRIES, l_ind),
            "region": labels(REGIONS, recorded_reg),
            "company_size": pa.array(size), "source": labels(SOURCES, source),
            "product_interest": labels(PRODUCTS, product), "created_at": ts(created),
            "expected_deal_amount": pa.array(deal, mask=deal_null),
        }),
        "lead_events": pa.table({
            "event_id": ids("E", 1, k, max(8, len(str(k)))),
            "lead_id": lead_ids.take(pa.array(e_l)),
            "occurred_at": ts(e_t), "event_type": labels(EVENT_TYPES, etype),
            "page": labels(PAGES, page, ~is_view), "doc_type": labels(DOC_TYPES, doc, ~is_doc),
            "dwell_seconds": pa.array(np.round(dwell, 1), mask=~is_view),
            "webinar_completion": pa.array(completion, mask=~is_web),
        }),
        "lead_assignments": pa.table({
            "assignment_id": assignment_ids, "lead_id": lead_ids, "rep_id": lead_rep,
            "assigned_at": ts(assigned), "first_touch_at": ts(first_touch, first_touch > end),
            "converted": pa.array(converted), "converted_at": ts(close, ~converted),
            "cycle_days": pa.array(np.round(dur_days, 2), mask=~converted),
        }),
        "truth_assignments": pa.table({
            "assignment_id": assignment_ids, "lead_id": lead_ids, "rep_id": lead_rep,
            "p_convert": pa.array(p), "p_convert_at_assignment": pa.array(p_at_assignment),
            "converted_eventually": pa.array(won),
            "closes_at": ts(close), "load_ratio": pa.array(load),
            "first_touch_hours": pa.array(hours),
        }),
        "truth_intent": pa.table({
            "lead_id": lead_ids, "latent_intent": pa.array(intent),
            "true_region": labels(REGIONS, l_reg),
            "p_convert_avg_rep": pa.array(p_avg), "p_convert_best_rep": pa.array(p_best),
            "best_rep_id": rep_ids.take(pa.array(best)),
        }),
    }
