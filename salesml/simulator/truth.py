"""The churn truth a model could at best know: P(churn or downgrade within the label horizon |
the account's state when the observation is made).

The realised hazard path after an observation is not that: it already contains declines that
had not started yet, usage dips and SLA misses that were still to be drawn. This module
averages the hazard over the futures the simulator could still draw from the state at the
start of week ``t`` (Monte Carlo, ``samples`` paths per observation):

* a decline already under way keeps its decay rate and floor; an account with no visible decline
  starts one with the posterior probability that it is a declining account whose onset is still
  ahead (onset uniform over the weeks left of the prior's range), at a uniform week, with a
  fresh decay rate and floor;
* weekly usage of the five baseline measures is redrawn (season x account-week noise x decline x
  gamma noise x Poisson; the noise by normal approximations: every base rate is >= 100, so a
  weekly rate stays above ~20 even at the deepest decline, 25% of the base);
* weekly SLA gaps are redrawn around the account's SLA quality, so future snapshots vary;
* early warning and usage drop are recomputed exactly as the hazard uses them; relationship
  quality and renewal dates are known.

It is computed for the rows a CHS training set observes (every 4th usage week counted back from
the account's last week, with a full horizon before the export ends) and written to
``truth_churn_weekly.p_event_horizon``; other rows stay null.
"""

from __future__ import annotations

import numpy as np

from salesml.simulator.usage import GAMMA_K, early_warning, usage_drop


def _chs_label() -> tuple[int, int]:
    """(horizon in weeks, observation cadence in weeks) of the shipped chs spec: the truth is computed
    for the very observations a CHS training set makes."""
    from salesml.modelspec import load_spec

    label = load_spec("chs").label
    return label.horizon_days // 7, label.observe.every_weeks


HORIZON_WEEKS, OBSERVE_EVERY = _chs_label()
HISTORY = 16  # weeks of history the usage drop needs (the early warning needs 15)


def observed_weeks(churn_week: np.ndarray, W: int) -> np.ndarray:
    """(n, W) mask of the (account, week t) a CHS training set observes at the start of week t."""
    wk = np.arange(W)
    last = np.minimum(churn_week, W)  # observation after the last usage week
    return ((wk[None, :] <= last[:, None]) & (wk[None, :] >= 1) & (wk[None, :] <= W - HORIZON_WEEKS)
            & ((last[:, None] - wk[None, :]) % OBSERVE_EVERY == 0))


def horizon_probability(rng: np.random.Generator, mask: np.ndarray, *, counts: dict[str, np.ndarray],
                        base: dict[str, np.ndarray], season: np.ndarray, share: dict[str, float],
                        declining: np.ndarray, onset: np.ndarray, decay: np.ndarray, floor: np.ndarray,
                        p_decline: float, onset_range: tuple[int, int], gap: np.ndarray, gap_mu: np.ndarray,
                        snap_week: np.ndarray, coef: dict[str, np.ndarray], rel_q: np.ndarray,
                        renew8: np.ndarray, samples: int = 64) -> np.ndarray:
    """P(event in weeks t..t+H-1 | state at the start of week t) for each (account, t) in ``mask``.

    ``counts``/``base``: the undrifted weekly counts (n, W) and expected base rates (n,) of the
    baseline measures; ``gap``: realised weekly SLA gaps (n, W+4), column j = week j-4.
    """
    n, W = mask.shape
    H = HORIZON_WEEKS
    out = np.full((n, W), np.nan)
    lo_on, hi_on = onset_range
    snaps = np.flatnonzero(snap_week)
    batches = [(t, a) for t in np.flatnonzero(mask.any(axis=0))
               for a in np.array_split(np.flatnonzero(mask[:, t]), -(-mask[:, t].sum() // max(1, 60_000 // samples)))]
    for t, a in batches:
        A, K = len(a), samples
        h0 = max(0, t - HISTORY)
        fut = np.arange(t, t + H)  # the hazard of week s reads counts up to s-1; the last is padding
        # decline of each path: a visible one is known, otherwise drawn from the posterior
        m = max(lo_on, t - 1)
        visible = declining[a] & (onset[a] <= t - 2)
        q = max(hi_on - m, 0) / (hi_on - lo_on)
        p_post = p_decline * q / (1 - p_decline + p_decline * q)
        new = (~visible)[:, None] & (rng.random((A, K)) < p_post)
        on = np.where(visible[:, None], onset[a][:, None], rng.integers(m, max(hi_on, m + 1), (A, K)))
        dec = np.where(visible[:, None], decay[a][:, None], rng.uniform(0.05, 0.10, (A, K)))
        flo = np.where(visible[:, None], floor[a][:, None], rng.uniform(0.25, 0.5, (A, K)))
        declines = visible[:, None] | new
        since = fut[None, None, :] - on[:, :, None]
        level = np.where(declines[:, :, None] & (since > 0),
                         np.maximum(flo[:, :, None], (1 - dec[:, :, None]) ** np.maximum(since, 0)), 1.0)
        # season x account-week factor (shared by the measures) x decline; then gamma x Poisson
        # noise per measure, both as one normal with their summed variance (base rates are >= 100)
        common = season[fut][None, None, :] * (1 + 0.03 * rng.standard_normal((A, K, len(fut))))
        paths = {}
        for name, c in counts.items():
            lam = base[name][a][:, None, None] * common * (level if share[name] == 1 else level ** share[name])
            sd = np.sqrt(np.maximum(lam, 0) * (1 + lam / GAMMA_K))
            drawn = np.maximum(np.round(lam + sd * rng.standard_normal(lam.shape)), 0)
            hist = np.broadcast_to(c[a, h0:t][:, None, :], (A, K, t - h0))
            paths[name] = np.concatenate([hist, drawn], axis=2).reshape(A * K, -1)
        _, ew = early_warning(paths)
        drop = usage_drop(paths)  # column t-h0+k = week t+k (its first 16 columns stay 0)
        weeks_h = np.arange(t, t + H)
        ew_known = ew[:, weeks_h - 1 - h0].reshape(A, K, H)
        dropped = drop[:, weeks_h - h0].reshape(A, K, H)
        # SLA: gaps of weeks >= t redrawn, snapshots report the mean of the 4 weeks before them
        last = np.array([snaps[snaps <= s].max() if (snaps <= s).any() else -1 for s in weeks_h])
        g0 = max(0, last.min())  # gap columns before the first snapshot the horizon reads are not needed
        g = np.broadcast_to(gap[a][:, None, g0:t + H + 4], (A, K, t + H + 4 - g0)).copy()
        tail = g[:, :, t + 4 - g0:]
        tail[...] = (gap_mu[a][:, None, None] + rng.normal(0, 0.001, tail.shape)
                     + (rng.random(tail.shape) < 0.03) * rng.exponential(0.008, tail.shape))
        gap4 = np.stack([g[:, :, s - g0:s - g0 + 4].mean(axis=2) if s >= 0 else np.zeros((A, K))
                         for s in last], axis=2)
        shortfall = np.where(last[None, None, :] >= 0, 100 * np.maximum(gap4, 0), 0.0)
        z = (coef["intercept"][weeks_h] + coef["early_warning"][weeks_h] * ew_known
             + coef["usage_drop"][weeks_h] * dropped
             + coef["sla_shortfall_pp"][weeks_h] * np.minimum(shortfall, 2.0)
             + coef["relationship_quality"][weeks_h] * rel_q[a][:, None, None]
             + coef["renewal_within_8w"][weeks_h] * renew8[a][:, None, weeks_h])
        log_survive = np.log1p(-1 / (1 + np.exp(-z))).sum(axis=2)
        out[a, t] = 1 - np.exp(log_survive).mean(axis=1)
    return out

