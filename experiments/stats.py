"""Honest statistics for comparing model variants scored on the SAME test rows (pure numpy/scipy).

* ``delong_test``: DeLong et al. (1988) test of two correlated ROC-AUCs, fast midrank algorithm
  (Sun & Xu 2014).
* ``paired_bootstrap`` / ``bootstrap_metric_ci``: row-index bootstrap, the same resampled rows
  for every variant, stratified by class by default; percentile CIs and two-sided bootstrap p-values.
* ``precision_recall_at`` / ``wilson_ci``: precision and recall of a flagged set with Wilson CIs.
* ``holm``: Holm-Bonferroni adjusted p-values. ``decide``: a pre-declared decision rule.
* ``two_proportion_sample_size`` / ``two_proportion_test``: planning and reading an A/B test on rates.

Metrics given to the bootstrap are ``metric(y, p) -> float``. A metric marked with ``@vectorized``
(``fast_auc``, ``brier_score``, ``log_loss`` are) also accepts 2-D ``(n_resamples, n_rows)`` arrays
and returns one value per row, which is what keeps 1000 resamples cheap; others are called once
per resample.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy.stats import norm, rankdata

_CHUNK_CELLS = 2_000_000  # resamples x rows evaluated at once


def vectorized(fn: Callable) -> Callable:
    """Mark ``fn(y, p)`` as accepting 2-D arrays (one resample per row) and returning one value per row."""
    setattr(fn, "vectorized", True)  # noqa: B010 (a mark on a function object, read with getattr)
    return fn


def _positive_rank_sum(pos: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Sum of midranks (1-based, ties averaged) of the entries flagged ``pos``, along the last axis.
    One argsort per row; scipy's ``rankdata(axis=-1)`` is several times slower on (1000, 10000) arrays."""
    order = np.argsort(p, axis=-1)
    s = np.sort(p, axis=-1)  # == p in ``order``, whatever the order among ties
    shape, n = s.shape, s.shape[-1]
    first = np.ones(shape, dtype=bool)
    first[..., 1:] = s[..., 1:] != s[..., :-1]
    last = np.ones(shape, dtype=bool)
    last[..., :-1] = first[..., 1:]
    flat = np.arange(s.size)  # 1-D accumulates are fast; every row starts and ends a tie group
    start = np.maximum.accumulate(np.where(first.ravel(), flat, 0))
    end = np.minimum.accumulate(np.where(last.ravel(), flat, s.size)[::-1])[::-1]
    midrank = ((start + end) / 2.0 - (flat - flat % n) + 1.0).reshape(shape)
    return (midrank * np.take_along_axis(pos, order, axis=-1)).sum(axis=-1)


@vectorized
def fast_auc(y, p):
    """ROC-AUC from midranks: (rank sum of positives - n1(n1+1)/2) / (n1 n0). Ties count one half,
    as in sklearn's ``roc_auc_score``. 1-D input -> float; 2-D -> one AUC per row (NaN if a row has one class)."""
    y, p = np.asarray(y), np.asarray(p, dtype=float)
    pos = y == 1
    n1 = pos.sum(axis=-1)
    n0 = pos.shape[-1] - n1
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (_positive_rank_sum(pos, p) - n1 * (n1 + 1) / 2.0) / (n1 * n0)
    return float(auc) if np.ndim(auc) == 0 else auc


@vectorized
def brier_score(y, p):
    """Mean squared error of probabilities (lower is better)."""
    out = np.mean((np.asarray(p, dtype=float) - np.asarray(y)) ** 2, axis=-1)
    return float(out) if np.ndim(out) == 0 else out


@vectorized
def log_loss(y, p, eps: float = 1e-15):
    """Mean negative log-likelihood, probabilities clipped to [eps, 1 - eps] (lower is better)."""
    p, y = np.clip(np.asarray(p, dtype=float), eps, 1 - eps), np.asarray(y)
    out = -np.mean(y * np.log(p) + (1 - y) * np.log1p(-p), axis=-1)
    return float(out) if np.ndim(out) == 0 else out


def _check(y, *scores, fits_ok: bool = False) -> tuple[np.ndarray, list[np.ndarray]]:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D, got shape {y.shape}")
    if y.dtype.kind == "f" and np.isnan(y).any():
        raise ValueError("y contains NaN")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y must be binary 0/1")
    y = y.astype(int)
    if len(np.unique(y)) < 2:
        raise ValueError("y has only one class; need both positives and negatives")
    out = []
    for i, s in enumerate(scores):
        s = np.asarray(s, dtype=float)
        if s.ndim == 2 and s.shape[1] == len(y) and fits_ok:  # several fits (seeds) of one variant
            pass
        elif s.shape != y.shape:
            raise ValueError(f"length mismatch: y has {len(y)} rows, scores #{i} has shape {s.shape}")
        if np.isnan(s).any():
            raise ValueError(f"scores #{i} contain NaN")
        out.append(s)
    return y, out


def delong_test(y, p_a, p_b, alpha: float = 0.05) -> dict:
    """DeLong test of AUC(a) - AUC(b) on the same rows, via midranks (Sun & Xu 2014).

    With m positives X, n negatives Y: V10_i = (T_Z(X_i) - T_X(X_i)) / n, V01_j = 1 - (T_Z(Y_j) - T_Y(Y_j)) / m
    (T = midranks within the pooled / positive / negative scores); Var(diff) = c' (S10/m + S01/n) c, c = (1, -1),
    S10, S01 the sample covariance matrices (ddof 1) of the structural components. Two-sided normal p-value and
    a (1 - alpha) normal CI of the difference. If the variance is 0: z = 0 and p = 1 when diff = 0,
    else z = +-inf and p = 0 (degenerate: e.g. one perfect and one constant scorer).
    """
    y, (p_a, p_b) = _check(y, p_a, p_b)
    scores = np.vstack([p_a, p_b])
    x, yn = scores[:, y == 1], scores[:, y == 0]
    m, n = x.shape[1], yn.shape[1]
    if m < 2 or n < 2:
        raise ValueError(f"need at least 2 positives and 2 negatives for the DeLong variance, got {m} and {n}")
    tz = rankdata(np.hstack([x, yn]), axis=1)
    tx, ty = rankdata(x, axis=1), rankdata(yn, axis=1)
    aucs = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2.0) / (m * n)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    s = np.cov(v10) / m + np.cov(v01) / n
    var = max(float(s[0, 0] + s[1, 1] - 2 * s[0, 1]), 0.0)
    se = math.sqrt(var)
    diff = float(aucs[0] - aucs[1])
    if se < 1e-14:
        z, p = (0.0, 1.0) if abs(diff) < 1e-14 else (math.copysign(math.inf, diff), 0.0)
    else:
        z = diff / se
        p = float(2 * norm.sf(abs(z)))
    q = float(norm.ppf(1 - alpha / 2))
    return {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "diff": diff, "se": se, "z": float(z),
            "p_value": p, "ci_low": diff - q * se, "ci_high": diff + q * se}


def _resample_chunks(y: np.ndarray, n_resamples: int, seed: int, strata: bool):
    """Yield (n_chunk, n_rows) arrays of row indices. RNG use (reproduce it exactly with this loop):
    ``rng = np.random.default_rng(seed)``; for each resample in order: if ``strata``, for each class c in
    ``(0, 1)``: ``rows_c = np.flatnonzero(y == c)``; ``rows_c[rng.integers(0, len(rows_c), len(rows_c))]``,
    concatenated (negatives then positives); else ``rng.integers(0, len(y), len(y))``."""
    rng = np.random.default_rng(seed)
    n = len(y)
    parts = [np.flatnonzero(y == c) for c in (0, 1)] if strata else [np.arange(n)]
    chunk = max(1, _CHUNK_CELLS // max(n, 1))
    for start in range(0, n_resamples, chunk):
        rows = []
        for _ in range(min(chunk, n_resamples - start)):
            rows.append(np.concatenate([part[rng.integers(0, len(part), len(part))] for part in parts]))
        yield np.vstack(rows)


def _evaluate(metric: Callable, y2: np.ndarray, p2: np.ndarray) -> np.ndarray:
    if getattr(metric, "vectorized", False):
        return np.asarray(metric(y2, p2), dtype=float)
    return np.array([metric(yr, pr) if 0 < yr.sum() < len(yr) else np.nan for yr, pr in zip(y2, p2)], dtype=float)


def _bootstrap_values(y, scores: dict, metrics: dict, n_resamples: int, seed: int, strata: bool) -> dict:
    """{(metric, variant): array of n_resamples metric values}, the same row indices for every variant.

    A variant given as a (fits, rows) array (the same model trained with several seeds) contributes one
    randomly drawn fit per resample (``np.random.default_rng(seed + 1)``, per chunk and variant in order),
    so the interval also carries the variance that comes from training, not only from the test rows.
    """
    vals: dict[tuple[str, str], list[np.ndarray]] = {(mk, vk): [] for mk in metrics for vk in scores}
    fit_rng = np.random.default_rng(seed + 1)
    for idx in _resample_chunks(y, n_resamples, seed, strata):
        y2 = y[idx]
        for vk, p in scores.items():
            if p.ndim == 2:
                pick = fit_rng.integers(0, p.shape[0], len(idx))
                p2 = p[pick[:, None], idx]
            else:
                p2 = p[idx]
            for mk, metric in metrics.items():
                vals[(mk, vk)].append(_evaluate(metric, y2, p2))
    return {k: np.concatenate(v) for k, v in vals.items()}


def _full(metric: Callable, y: np.ndarray, p: np.ndarray) -> float:
    """The metric on all rows; for several fits, their mean."""
    return float(np.mean([metric(y, q) for q in p])) if p.ndim == 2 else float(metric(y, p))


def _p_boot(d: np.ndarray) -> float:
    """Two-sided bootstrap p: 2 min(share <= 0, share >= 0), clipped to [1/(n+1), 1]."""
    n = len(d)
    if n == 0:
        return float("nan")
    p = 2 * min(float(np.mean(d <= 0)), float(np.mean(d >= 0)))
    return float(min(max(p, 1.0 / (n + 1)), 1.0))


def paired_bootstrap(y, scores: dict[str, np.ndarray], metrics: dict[str, Callable], n_resamples: int = 1000,
                     seed: int = 0, alpha: float = 0.05, strata: bool = True) -> pd.DataFrame:
    """Paired bootstrap of metric differences between variants scored on the same rows.

    Every resample draws row indices with replacement (within each class when ``strata``; see
    ``_resample_chunks`` for the exact RNG use) and applies them to every variant. For each metric and each
    ordered pair (a, b), a before b in ``scores`` order, the difference metric(a) - metric(b) is computed per
    resample. A variant may be a (fits, rows) array: see ``_bootstrap_values``.
    Columns: metric, variant_a, variant_b, estimate (full-sample difference), ci_low, ci_high
    (percentile CI, ``np.quantile`` linear), p_value (two-sided bootstrap p), p_adjusted (Holm over the pairs
    of that metric), n_resamples (resamples with a finite difference; non-finite ones are dropped).
    """
    y, arrays = _check(y, *scores.values(), fits_ok=True)
    scores = dict(zip(scores, arrays))
    vals = _bootstrap_values(y, scores, metrics, n_resamples, seed, strata)
    names = list(scores)
    rows = []
    for mk, metric in metrics.items():
        full = {vk: _full(metric, y, p) for vk, p in scores.items()}
        block: list[dict] = []
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                d = vals[(mk, a)] - vals[(mk, b)]
                d = d[np.isfinite(d)]
                lo, hi = np.quantile(d, [alpha / 2, 1 - alpha / 2]) if len(d) else (np.nan, np.nan)
                block.append({"metric": mk, "variant_a": a, "variant_b": b, "estimate": full[a] - full[b],
                              "ci_low": float(lo), "ci_high": float(hi), "p_value": _p_boot(d),
                              "n_resamples": len(d)})
        for row, padj in zip(block, holm([r["p_value"] for r in block])):
            row["p_adjusted"] = padj
        rows += block
    cols = ["metric", "variant_a", "variant_b", "estimate", "ci_low", "ci_high", "p_value", "p_adjusted",
            "n_resamples"]
    return pd.DataFrame(rows, columns=cols)


def bootstrap_metric_ci(y, p, metric: Callable, n_resamples: int = 1000, seed: int = 0, alpha: float = 0.05,
                        strata: bool = True) -> tuple[float, float, float]:
    """(full-sample estimate, percentile CI low, high) of one variant's metric; same resampling as
    ``paired_bootstrap`` with the same seed."""
    y, (p,) = _check(y, p, fits_ok=True)
    v = _bootstrap_values(y, {"v": p}, {"m": metric}, n_resamples, seed, strata)[("m", "v")]
    v = v[np.isfinite(v)]
    lo, hi = np.quantile(v, [alpha / 2, 1 - alpha / 2])
    return _full(metric, y, p), float(lo), float(hi)


def wilson_ci(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (0, 1) when n = 0."""
    if n == 0:
        return 0.0, 1.0
    z = norm.ppf(1 - alpha / 2)
    phat = successes / n
    denom = 1 + z * z / n
    centre = (phat + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n))
    return max(0.0, float(centre - half)), min(1.0, float(centre + half))


def precision_recall_at(y, flagged, alpha: float = 0.05) -> dict:
    """Precision and recall of a flagged set (e.g. one warning level) with Wilson CIs.
    Precision is NaN (CI 0..1) when nothing is flagged; recall is NaN when there are no positives."""
    y, flagged = np.asarray(y).astype(bool), np.asarray(flagged).astype(bool)
    if y.shape != flagged.shape:
        raise ValueError(f"length mismatch: y {y.shape} vs flagged {flagged.shape}")
    tp, n_flagged, n_pos = int((y & flagged).sum()), int(flagged.sum()), int(y.sum())
    p_lo, p_hi = wilson_ci(tp, n_flagged, alpha)
    r_lo, r_hi = wilson_ci(tp, n_pos, alpha)
    return {"precision": tp / n_flagged if n_flagged else float("nan"), "precision_ci_low": p_lo,
            "precision_ci_high": p_hi, "recall": tp / n_pos if n_pos else float("nan"), "recall_ci_low": r_lo,
            "recall_ci_high": r_hi, "n_flagged": n_flagged, "n_positive": n_pos, "true_positives": tp}


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in input order: running max of (m - k) p_(k) over sorted p, clipped to 1."""
    p = np.asarray(p_values, dtype=float)
    if np.isnan(p).any():
        raise ValueError("p_values contain NaN")
    m = len(p)
    order = np.argsort(p, kind="stable")
    adj = np.minimum(np.maximum.accumulate((m - np.arange(m)) * p[order]), 1.0)
    out = np.empty(m)
    out[order] = adj
    return out.tolist()


def decide(rows, rule: dict) -> dict:
    """Apply a pre-declared decision rule to ONE comparison (primary metric, variants A vs B).

    ``rows``: a mapping / Series with estimate, ci_low, ci_high (of A - B) and p_adjusted (or p_value),
    or a ``paired_bootstrap`` frame narrowed to one row by ``rule["metric"]`` and optional
    ``rule["variant_a"]`` / ``rule["variant_b"]``. ``rule``: metric, higher_is_better (True), alpha (0.05),
    min_effect (0.0). A wins when the CI excludes 0 on A's good side, adjusted p < alpha and
    |estimate| >= min_effect; B symmetrically; otherwise "no detectable difference".
    Returns {"decision": "A" | "B" | "no detectable difference", "reason": str}.
    """
    if isinstance(rows, pd.DataFrame):
        sel = rows
        for key in ("metric", "variant_a", "variant_b"):
            if key in rule and key in sel.columns:
                sel = sel[sel[key] == rule[key]]
        if len(sel) != 1:
            raise ValueError(f"decide needs exactly one comparison row, got {len(sel)}")
        rows = sel.iloc[0]
    est, lo, hi = float(rows["estimate"]), float(rows["ci_low"]), float(rows["ci_high"])
    p = float(rows["p_adjusted"] if "p_adjusted" in rows else rows["p_value"])
    alpha, min_effect = rule.get("alpha", 0.05), rule.get("min_effect", 0.0)
    sign = 1.0 if rule.get("higher_is_better", True) else -1.0
    gain, (g_lo, g_hi) = sign * est, sorted((sign * lo, sign * hi))  # > 0 means A is better
    a, b = rows.get("variant_a", "A"), rows.get("variant_b", "B")
    desc = f"{rule.get('metric', 'metric')} {a} - {b} = {est:.4g} (CI {lo:.4g}..{hi:.4g}, adjusted p = {p:.3g})"
    for winner, side_ok in (("A", g_lo > 0), ("B", g_hi < 0)):
        if side_ok and p < alpha and abs(gain) >= min_effect:
            name = a if winner == "A" else b
            return {"decision": winner, "reason": f"{name} is better: {desc}; CI excludes 0, p < {alpha}, "
                                                  f"|effect| >= {min_effect}"}
    why = []
    if g_lo <= 0 <= g_hi:
        why.append("CI includes 0")
    if p >= alpha:
        why.append(f"p >= {alpha}")
    if abs(gain) < min_effect:
        why.append(f"|effect| < {min_effect}")
    if not why:
        why.append("CI and estimate point in different directions")
    return {"decision": "no detectable difference", "reason": f"{desc}; " + ", ".join(why)}


def two_proportion_sample_size(p_base: float, mde: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Per-arm n to detect rate p_base vs p_base + mde (two-sided, normal approximation):
    n = (z_{1-alpha/2} sqrt(2 pbar (1 - pbar)) + z_{power} sqrt(p1 q1 + p2 q2))^2 / mde^2, pbar = (p1 + p2) / 2,
    rounded up."""
    p1, p2 = p_base, p_base + mde
    if mde == 0 or not (0 < p1 < 1 and 0 < p2 < 1):
        raise ValueError(f"need mde != 0 and both rates in (0, 1), got p_base={p_base}, mde={mde}")
    pbar = (p1 + p2) / 2
    za, zb = norm.ppf(1 - alpha / 2), norm.ppf(power)
    n = (za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2 / mde**2
    return math.ceil(n - 1e-9)


def two_proportion_test(x_a: int, n_a: int, x_b: int, n_b: int, alpha: float = 0.05) -> dict:
    """Rate A vs rate B: diff = rate_a - rate_b with the Newcombe (1998, method 10) hybrid Wilson-score CI,
    and the two-sided pooled-variance z-test p-value (= Pearson chi-square without continuity correction)."""
    if n_a <= 0 or n_b <= 0 or not (0 <= x_a <= n_a and 0 <= x_b <= n_b):
        raise ValueError(f"need 0 <= x <= n and n > 0, got {x_a}/{n_a} and {x_b}/{n_b}")
    ra, rb = x_a / n_a, x_b / n_b
    la, ua = wilson_ci(x_a, n_a, alpha)
    lb, ub = wilson_ci(x_b, n_b, alpha)
    diff = ra - rb
    pooled = (x_a + x_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    p = 1.0 if se == 0 else float(2 * norm.sf(abs(diff) / se))
    return {"rate_a": ra, "rate_b": rb, "diff": diff,
            "ci_low": diff - math.sqrt((ra - la) ** 2 + (ub - rb) ** 2),
            "ci_high": diff + math.sqrt((ua - ra) ** 2 + (rb - lb) ** 2), "p_value": p}
