"""experiments.stats against hand-computed examples and independent slow implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import chi2_contingency, norm
from sklearn.metrics import brier_score_loss, roc_auc_score
from sklearn.metrics import log_loss as sk_log_loss

from experiments.stats import (
    bootstrap_metric_ci,
    brier_score,
    decide,
    delong_test,
    fast_auc,
    holm,
    log_loss,
    paired_bootstrap,
    precision_recall_at,
    two_proportion_sample_size,
    two_proportion_test,
    wilson_ci,
)

RULE = {"metric": "roc_auc", "higher_is_better": True, "alpha": 0.05, "min_effect": 0.0}


def slow_delong(y, score_sets):
    """DeLong (1988) written out with plain loops: psi kernel, structural components V10 / V01, covariance."""
    pos = [i for i in range(len(y)) if y[i] == 1]
    neg = [j for j in range(len(y)) if y[j] == 0]
    m, n = len(pos), len(neg)

    def psi(a, b):
        return 1.0 if a > b else (0.5 if a == b else 0.0)

    aucs, v10, v01 = [], [], []
    for s in score_sets:
        v10.append([sum(psi(s[i], s[j]) for j in neg) / n for i in pos])  # one per positive
        v01.append([sum(psi(s[i], s[j]) for i in pos) / m for j in neg])  # one per negative
        aucs.append(sum(v10[-1]) / m)
    k = len(score_sets)
    s10 = [[sum((v10[r][i] - aucs[r]) * (v10[c][i] - aucs[c]) for i in range(m)) / (m - 1) for c in range(k)]
           for r in range(k)]
    s01 = [[sum((v01[r][j] - aucs[r]) * (v01[c][j] - aucs[c]) for j in range(n)) / (n - 1) for c in range(k)]
           for r in range(k)]
    cov = [[s10[r][c] / m + s01[r][c] / n for c in range(k)] for r in range(k)]
    return aucs, v10, v01, cov


@pytest.mark.parametrize("y, p_a, p_b", [
    ([0, 0, 0, 1, 1, 1], [0.1, 0.4, 0.35, 0.8, 0.4, 0.9], [0.2, 0.3, 0.6, 0.5, 0.7, 0.55]),
    ([1, 0, 1, 0, 0, 1, 1, 0], [3, 1, 2, 2, 1, 3, 1, 2], [0.9, 0.2, 0.2, 0.5, 0.1, 0.7, 0.4, 0.6]),
])
def test_delong_matches_slow_loops(y, p_a, p_b):
    aucs, v10, v01, cov = slow_delong(y, [p_a, p_b])
    var = cov[0][0] + cov[1][1] - 2 * cov[0][1]
    se = math.sqrt(var)
    diff = aucs[0] - aucs[1]
    z = diff / se
    got = delong_test(y, p_a, p_b)
    expected = {"auc_a": aucs[0], "auc_b": aucs[1], "diff": diff, "se": se, "z": z,
                "p_value": 2 * (1 - norm.cdf(abs(z))), "ci_low": diff - 1.959963984540054 * se,
                "ci_high": diff + 1.959963984540054 * se}
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-10), key
    assert got["auc_a"] == pytest.approx(roc_auc_score(y, p_a), abs=1e-12)
    assert got["auc_b"] == pytest.approx(roc_auc_score(y, p_b), abs=1e-12)


def test_delong_first_example_by_hand():
    # y=[0,0,0,1,1,1], a=[.1,.4,.35 | .8,.4,.9]: positive .4 ties negative .4 -> V10 = (1, 2.5/3, 1), AUC_a = 8.5/9
    _, v10, v01, _ = slow_delong([0, 0, 0, 1, 1, 1], [[0.1, 0.4, 0.35, 0.8, 0.4, 0.9]])
    assert v10[0] == pytest.approx([1.0, 2.5 / 3, 1.0])
    assert v01[0] == pytest.approx([1.0, 2.5 / 3, 1.0])
    assert delong_test([0, 0, 0, 1, 1, 1], [0.1, 0.4, 0.35, 0.8, 0.4, 0.9], [0.2, 0.3, 0.6, 0.5, 0.7, 0.55])[
        "auc_a"] == pytest.approx(8.5 / 9, abs=1e-12)


def test_delong_identical_scores():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 100)
    p = rng.random(100)
    got = delong_test(y, p, p.copy())
    assert got["diff"] == 0 and got["z"] == 0 and got["p_value"] == 1.0 and got["se"] == 0


@pytest.mark.parametrize("y, a, b, msg", [
    ([1, 1, 1], [0.1, 0.2, 0.3], [0.1, 0.2, 0.3], "one class"),
    ([0, 1, 0, 1], [0.1, 0.2, 0.3], [0.1, 0.2, 0.3, 0.4], "length mismatch"),
    ([0, 1, 0, 1], [0.1, np.nan, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4], "NaN"),
    ([0, 1, 0, np.nan], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4], "NaN"),
])
def test_delong_rejects_bad_input(y, a, b, msg):
    with pytest.raises(ValueError, match=msg):
        delong_test(y, a, b)


@pytest.mark.parametrize("seed", range(5))
def test_fast_auc_equals_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    p = rng.integers(0, 6, 300) / 5.0  # six distinct values: many ties, within and across classes
    assert fast_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    q = rng.random(300)
    assert fast_auc(y, q) == pytest.approx(roc_auc_score(y, q), abs=1e-12)
    y2, p2 = rng.integers(0, 2, (4, 50)), rng.integers(0, 4, (4, 50)).astype(float)
    assert fast_auc(y2, p2) == pytest.approx([roc_auc_score(a, b) for a, b in zip(y2, p2)], abs=1e-12)


def test_vectorised_losses_match_row_by_row():
    rng = np.random.default_rng(2)
    y, p = rng.integers(0, 2, (3, 40)), rng.random((3, 40))
    assert brier_score(y, p) == pytest.approx([brier_score_loss(a, b) for a, b in zip(y, p)])
    assert log_loss(y, p) == pytest.approx([sk_log_loss(a, b, labels=[0, 1]) for a, b in zip(y, p)])


def explicit_indices(y, n_resamples, seed, strata=True):
    """The resampling documented in experiments.stats, written as a plain loop."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_resamples):
        if strata:
            parts = []
            for c in (0, 1):
                rows = np.flatnonzero(y == c)
                parts.append(rows[rng.integers(0, len(rows), len(rows))])
            out.append(np.concatenate(parts))
        else:
            out.append(rng.integers(0, len(y), len(y)))
    return out


@pytest.mark.parametrize("strata", [True, False])
def test_paired_bootstrap_reproduced_by_explicit_loop(strata):
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 60)
    scores = {"a": (y * 0.5 + rng.random(60)) / 1.5, "b": rng.random(60), "c": (y * 0.2 + rng.random(60)) / 1.2}
    metrics = {"roc_auc": fast_auc, "brier": brier_score, "sk_auc": roc_auc_score}  # last one: non-vectorised path
    n_res, seed, alpha = 9, 5, 0.1
    df = paired_bootstrap(y, scores, metrics, n_resamples=n_res, seed=seed, alpha=alpha, strata=strata)
    idx = explicit_indices(y, n_res, seed, strata)
    sk = {"roc_auc": roc_auc_score, "brier": brier_score_loss, "sk_auc": roc_auc_score}
    assert len(df) == 3 * 3
    for metric in metrics:
        pvals = []
        for a, b in [("a", "b"), ("a", "c"), ("b", "c")]:
            row = df[(df.metric == metric) & (df.variant_a == a) & (df.variant_b == b)].iloc[0]
            diffs = []
            for ix in idx:
                if len(set(y[ix])) < 2:
                    continue
                diffs.append(sk[metric](y[ix], scores[a][ix]) - sk[metric](y[ix], scores[b][ix]))
            diffs = np.array(diffs)
            p = 2 * min(np.mean(diffs <= 0), np.mean(diffs >= 0))
            p = min(max(p, 1 / (len(diffs) + 1)), 1.0)
            pvals.append(p)
            assert row.estimate == pytest.approx(sk[metric](y, scores[a]) - sk[metric](y, scores[b]), abs=1e-12)
            assert row.ci_low == pytest.approx(np.quantile(diffs, alpha / 2), abs=1e-12)
            assert row.ci_high == pytest.approx(np.quantile(diffs, 1 - alpha / 2), abs=1e-12)
            assert row.p_value == pytest.approx(p)
            assert row.n_resamples == len(diffs)
        assert df[df.metric == metric].p_adjusted.tolist() == pytest.approx(holm(pvals))


def test_bootstrap_metric_ci_reproduced_by_explicit_loop():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 50)
    p = y * 0.3 + rng.random(50)
    est, lo, hi = bootstrap_metric_ci(y, p, fast_auc, n_resamples=11, seed=7, alpha=0.05)
    vals = [roc_auc_score(y[ix], p[ix]) for ix in explicit_indices(y, 11, 7)]
    assert est == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert (lo, hi) == pytest.approx(tuple(np.quantile(vals, [0.025, 0.975])), abs=1e-12)


def test_identical_variants_give_zero_ci_and_no_decision():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 200)
    p = y * 0.2 + rng.random(200)
    df = paired_bootstrap(y, {"a": p, "b": p.copy()}, {"roc_auc": fast_auc}, n_resamples=50)
    row = df.iloc[0]
    assert (row.estimate, row.ci_low, row.ci_high) == (0.0, 0.0, 0.0)
    assert row.p_value == 1.0
    assert decide(df, RULE)["decision"] == "no detectable difference"


def _noisy_pair(rng, n, noise_b):
    signal = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-2 * signal))).astype(int)
    return y, signal + rng.normal(0, 1, n), signal + rng.normal(0, noise_b, n)


def test_false_winner_rate_is_near_alpha_for_equivalent_models():
    boot_wins = delong_wins = 0
    reps = 30
    for r in range(reps):
        y, p_a, p_b = _noisy_pair(np.random.default_rng(100 + r), 500, noise_b=1.0)  # same model, other noise
        df = paired_bootstrap(y, {"a": p_a, "b": p_b}, {"roc_auc": fast_auc}, n_resamples=200, seed=r)
        boot_wins += decide(df, RULE)["decision"] != "no detectable difference"
        delong_wins += delong_test(y, p_a, p_b)["p_value"] < 0.05
    assert boot_wins / reps <= 0.15
    assert delong_wins / reps <= 0.15


def test_clear_difference_is_detected():
    rng = np.random.default_rng(6)
    y = rng.integers(0, 2, 500)
    good, noise = y + rng.normal(0, 0.5, 500), rng.random(500)
    df = paired_bootstrap(y, {"good": good, "noise": noise}, {"roc_auc": fast_auc, "brier": brier_score},
                          n_resamples=300)
    auc = df[df.metric == "roc_auc"].iloc[0]
    assert auc.ci_low > 0 and auc.estimate > 0.3
    out = decide(df, RULE)
    assert out["decision"] == "A" and "good is better" in out["reason"]
    assert delong_test(y, good, noise)["p_value"] < 0.001
    swapped = paired_bootstrap(y, {"noise": noise, "good": good}, {"roc_auc": fast_auc}, n_resamples=300)
    assert swapped.iloc[0].ci_high < 0
    assert decide(swapped, RULE)["decision"] == "B"


def test_decide_rules():
    row = {"estimate": 0.02, "ci_low": 0.005, "ci_high": 0.035, "p_adjusted": 0.01}
    assert decide(row, RULE)["decision"] == "A"
    assert decide(row, {**RULE, "min_effect": 0.03})["decision"] == "no detectable difference"
    assert decide(row, {**RULE, "alpha": 0.005})["decision"] == "no detectable difference"
    assert decide(row, {**RULE, "higher_is_better": False})["decision"] == "B"  # e.g. Brier: A - B > 0 is worse
    loss = {"estimate": -0.01, "ci_low": -0.02, "ci_high": -0.001, "p_value": 0.02}
    assert decide(loss, {"metric": "brier", "higher_is_better": False})["decision"] == "A"
    straddle = {"estimate": 0.01, "ci_low": -0.001, "ci_high": 0.02, "p_value": 0.04}
    res = decide(straddle, RULE)
    assert res["decision"] == "no detectable difference" and "CI includes 0" in res["reason"]


def test_holm_by_hand():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_wilson_known_value():
    lo, hi = wilson_ci(8, 10)
    assert (lo, hi) == pytest.approx((0.4902, 0.9433), abs=5e-4)
    assert wilson_ci(0, 0) == (0.0, 1.0)
    assert wilson_ci(0, 20)[0] == 0.0


def test_precision_recall_at():
    y = np.array([1, 1, 0, 0, 1, 0, 1, 0, 0, 0])
    flagged = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0], dtype=bool)
    out = precision_recall_at(y, flagged)
    assert (out["precision"], out["recall"], out["n_flagged"]) == (2 / 3, 2 / 4, 3)
    assert (out["precision_ci_low"], out["precision_ci_high"]) == wilson_ci(2, 3)
    assert (out["recall_ci_low"], out["recall_ci_high"]) == wilson_ci(2, 4)
    assert math.isnan(precision_recall_at(y, np.zeros(10, bool))["precision"])


def test_two_proportion_sample_size_textbook():
    p1, p2 = 0.2, 0.25
    pbar = (p1 + p2) / 2
    za, zb = norm.ppf(0.975), norm.ppf(0.8)
    expected = (za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2 / 0.05**2
    n = two_proportion_sample_size(0.2, 0.05)
    assert n == math.ceil(expected)
    assert abs(n - 1094) <= 0.05 * 1094
    assert two_proportion_sample_size(0.2, 0.05, power=0.9) > n
    with pytest.raises(ValueError):
        two_proportion_sample_size(0.9, 0.2)


def test_two_proportion_test_newcombe_example():
    out = two_proportion_test(56, 70, 48, 80)  # Newcombe (1998) example: 0.2, CI 0.0524..0.3339 (method 10)
    assert out["diff"] == pytest.approx(0.2)
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((0.0524, 0.3339), abs=5e-5)
    chi2, p, _, _ = chi2_contingency([[56, 14], [48, 32]], correction=False)
    assert out["p_value"] == pytest.approx(p)
    assert two_proportion_test(0, 10, 0, 12)["p_value"] == 1.0
