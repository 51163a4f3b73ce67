"""The assignment proposal is optimal, respects capacity and beats the baselines."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from training.assignment import evaluate, least_loaded, propose_assignment, random_problem, round_robin


def brute_force(p: np.ndarray, cap: np.ndarray) -> float:
    """Exact optimum by expanding each rep into its slots (plus 'unassigned' columns)."""
    slots = np.repeat(np.arange(len(cap)), cap)
    value = np.hstack([p[:, slots], np.zeros((p.shape[0], p.shape[0]))])
    rows, cols = linear_sum_assignment(value, maximize=True)
    return float(value[rows, cols].sum())


@pytest.mark.parametrize("seed", range(25))
def test_matches_brute_force_on_small_instances(seed):
    rng = np.random.default_rng(seed)
    n, m = rng.integers(1, 9), rng.integers(1, 5)
    p = rng.uniform(0, 1, (n, m)).round(rng.integers(1, 4))  # rounding makes ties
    cap = rng.integers(0, 4, m)
    a = propose_assignment(p, cap)
    assert a.total_expected(p) == pytest.approx(brute_force(p, cap), abs=1e-6)
    counts = a.per_rep_counts(m)
    assert np.all(counts <= cap)
    assert (a.rep_index >= 0).sum() == min(n, cap.sum())


@pytest.mark.parametrize("n, m, total", [(50, 5, 30), (50, 5, 200), (1, 1, 1), (20, 8, 0)])
def test_capacity_and_shortage(n, m, total):
    rng = np.random.default_rng(n + m)
    p = rng.uniform(0.01, 0.9, (n, m))
    cap = np.zeros(m, int)
    if total:
        cap = rng.multinomial(total, np.ones(m) / m)
    a = propose_assignment(p, cap)
    m_ = evaluate(a, p, cap, np.zeros(m))
    assert m_["capacity_violations"] == 0
    assert m_["assigned"] == min(n, cap.sum())


def test_beats_round_robin_and_least_loaded():
    p, cap, cur = random_problem(300, 30, seed=4)
    best = propose_assignment(p, cap)
    for base in (round_robin(300, cap, p=p), least_loaded(300, cap, cur, p=p)):
        assert evaluate(base, p, cap, cur)["capacity_violations"] == 0
        assert best.total_expected(p) >= base.total_expected(p)


def test_top_k_restriction_equals_full_solve_when_its_candidates_hold_the_optimum(monkeypatch):
    """The two paths: the full solve, and the top-k candidate solve (which only runs above DENSE_PAIRS
    pairs, so the threshold is lowered here; a spy on the solver proves which one ran)."""
    import training.assignment as assignment

    p, cap, _ = random_problem(200, 12, seed=2)
    widths = []
    solve = assignment._min_cost_flow
    monkeypatch.setattr(assignment, "_min_cost_flow", lambda P, cand, c: widths.append(P.shape[1]) or solve(P, cand, c))
    full = propose_assignment(p, cap, top_k=None)
    assert widths == [12]  # every lead against every rep

    # each chosen pair is among its lead's 10 best reps, so the 10-candidate optimum is the full one
    rank = (-p).argsort(1).argsort(1)
    chosen = full.rep_index >= 0
    assert rank[np.flatnonzero(chosen), full.rep_index[chosen]].max() < 10
    monkeypatch.setattr(assignment, "DENSE_PAIRS", 0)
    restricted = propose_assignment(p, cap, top_k=10)
    assert widths == [12, 10]  # the candidate path ran
    assert restricted.total_expected(p) == pytest.approx(full.total_expected(p))

    # candidates too few for the optimum: never better, and still every lead placed within capacity
    narrow = propose_assignment(p, cap, top_k=2)
    assert widths[-1] == 2
    assert narrow.total_expected(p) <= full.total_expected(p) + 1e-9
    assert (narrow.rep_index >= 0).all() and (narrow.per_rep_counts(12) <= cap).all()


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="capacity"):
        propose_assignment(np.ones((2, 2)) * 0.5, np.array([1, -1]))
    with pytest.raises(ValueError, match="matrix"):
        propose_assignment(np.array([[0.5, np.nan]]), np.array([1, 1]))
