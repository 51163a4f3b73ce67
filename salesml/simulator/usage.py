"""The usage signals the churn hazard reads, from weekly counts (the early warning and the usage
drop), and the Gamma noise of those counts.  Shared by the simulation (``accounts``) and the
knowable truth (``truth``), which must recompute them exactly as the hazard used them."""

from __future__ import annotations

import numpy as np

GAMMA_K = 400.0  # weekly noise CV ~5% on top of Poisson: healthy accounts rarely dip 20%
# Same definition as features/transforms.py: mean of the previous <=12 weeks, >=4 weeks needed.
BASELINE_MEASURES = ("key_feature_uses", "api_calls", "config_changes", "scans_run", "custom_rules")
BASELINE_WEEKS, BASELINE_MIN_WEEKS, BELOW_RATIO, STREAK_WEEKS = 12, 4, 0.8, 3
DROP_MEASURES = ("key_feature_uses", "api_calls", "scans_run", "custom_rules")


def rolling_sums(x: np.ndarray):
    """cs[:, w] = sum of x[:, :w], so any trailing window is one subtraction."""
    cs = np.zeros((x.shape[0], x.shape[1] + 1))
    np.cumsum(x, axis=1, out=cs[:, 1:])
    return cs


def early_warning(counts: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(below_baseline_measures, early_warning) per account-week, exactly as the feature layer
    defines them: >= 2 measures below 0.8x their own mean of the previous <=12 weeks (>= 4 weeks
    of history), and the flag held for 3 consecutive weeks."""
    n, W = counts[BASELINE_MEASURES[0]].shape
    wk = np.arange(W)
    lo = np.maximum(wk - BASELINE_WEEKS, 0)
    n_prev = wk - lo
    below = np.zeros((n, W), dtype=np.int64)
    for m in BASELINE_MEASURES:
        cs = rolling_sums(counts[m])
        base = (cs[:, wk] - cs[:, lo]) / np.maximum(n_prev, 1)
        below += (n_prev >= BASELINE_MIN_WEEKS) & (counts[m] < BELOW_RATIO * base)
    flag = below >= 2
    ew = np.zeros_like(flag)
    ew[:, STREAK_WEEKS - 1:] = flag[:, 2:] & flag[:, 1:-1] & flag[:, :-2]
    return below, ew


def usage_drop(counts: dict[str, np.ndarray]) -> np.ndarray:
    """Known at the start of week w: mean log ratio of the last 4 weeks to the 12 before them
    over the key measures, as a non-negative drop (0 = no decline, capped at 1.5)."""
    n, W = counts[DROP_MEASURES[0]].shape
    out = np.zeros((n, W))
    if W <= 16:
        return out
    w = np.arange(16, W)
    acc = np.zeros((n, len(w)))
    for m in DROP_MEASURES:
        cs = rolling_sums(counts[m])
        recent = (cs[:, w] - cs[:, w - 4]) / 4
        before = (cs[:, w - 4] - cs[:, w - 16]) / 12
        acc += np.log((recent + 1) / (before + 1))
    out[:, 16:] = np.clip(-acc / len(DROP_MEASURES), 0, 1.5)
    return out
