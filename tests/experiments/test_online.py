"""Online A/B analysis over a real prediction log (SQLite), with planted outcome rates."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from experiments.online import analyze
from serving.core import bucket
from serving.predlog import PredictionLog

T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)


def _serve(log: PredictionLog, n: int, churn: dict[str, float], seed: int = 0, share: float = 0.5) -> None:
    rng = np.random.default_rng(seed)
    preds, outs = [], []
    for i in range(n):
        acc = f"A{i:07d}"
        variant = "challenger" if bucket("t", "chs", acc) < share else "champion"
        ts = T0 + timedelta(minutes=i)
        for k in range(2):  # two scorings per account: exposure is the first
            preds.append({"request_id": f"r{i}-{k}", "ts": ts + timedelta(days=k), "role": "csm",
                          "api_key_id": "k", "endpoint": "health", "entity_type": "account", "entity_id": acc,
                          "model": "chs", "version": "2" if variant == "challenger" else "1", "variant": variant,
                          "features": {"api_calls": 1.0}, "outputs": {"score": 50.0}})
        if rng.random() < churn[variant]:
            outs.append({"entity_type": "account", "entity_id": acc, "outcome": "churned", "value": True,
                         "occurred_at": ts + timedelta(days=30), "received_at": ts + timedelta(days=31)})
    for s in range(0, len(preds), 5000):
        log.append_predictions(preds[s:s + 5000])
    log.append_outcomes(outs)


def test_refuses_a_winner_before_the_planned_size(tmp_path):
    log = PredictionLog(tmp_path / "p.db")
    _serve(log, 300, {"champion": 0.20, "challenger": 0.05})
    r = analyze(log, "chs", mde=0.05)
    assert not r.reached and r.verdict.startswith("no winner yet")
    assert r.arms.set_index("variant")["exposed"].sum() == 300  # one exposure per account, not per scoring
    assert r.required_per_arm > 500


def test_declares_the_better_arm_once_powered(tmp_path):
    log = PredictionLog(tmp_path / "p.db")
    _serve(log, 4000, {"champion": 0.20, "challenger": 0.12}, seed=1)
    r = analyze(log, "chs", mde=0.05)
    assert r.reached
    rates = r.arms.set_index("variant")["rate"]
    assert rates["champion"] == pytest.approx(0.20, abs=0.03) and rates["challenger"] == pytest.approx(0.12, abs=0.03)
    assert r.test["ci_high"] < 0 and r.verdict.startswith("challenger is better")  # less churn is better


def test_equal_arms_give_no_detectable_difference(tmp_path):
    log = PredictionLog(tmp_path / "p.db")
    _serve(log, 4000, {"champion": 0.15, "challenger": 0.15}, seed=2)
    r = analyze(log, "chs", mde=0.05)
    assert r.reached and r.verdict.startswith("no detectable difference")


def test_no_predictions_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no predictions for model 'intent'"):
        analyze(PredictionLog(tmp_path / "p.db"), "intent", mde=0.05)
