"""Weight fitting and quarterly recalibration on data whose true layer importance changes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from salesml.modelspec import load_spec
from training.chs import LAYERS, fit_weights, level_of, warning_metrics
from training.recalibration import WeightStore, quarter_bounds, quarters_in, recalibrate

HORIZON = load_spec("chs").horizon_days


class FakeHealth:
    """A unit-test stand-in: layer sub-scores are columns of the frame."""

    thresholds = {"green": 65.0, "yellow": 50.0, "orange": 35.0}

    def __init__(self):
        self.weights = {k: 1 / 3 for k in LAYERS}

    def layer_scores(self, frame):
        return frame[list(LAYERS)]

    def score(self, frame, weights=None):
        w = weights or self.weights
        return sum(w[k] * frame[k].to_numpy() for k in LAYERS)


def synthetic(n_weeks=130, per_week=120, shift_week=65, seed=0):
    """Outcomes driven by behaviour before ``shift_week`` and by relationship after it."""
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp("2023-01-02", tz="UTC")
    rows = []
    for w in range(n_weeks):
        subs = rng.uniform(0, 100, size=(per_week, 3))
        driver = subs[:, 1] if w < shift_week else subs[:, 2]
        p = 1 / (1 + np.exp((driver - 35) / 8))
        y = rng.random(per_week) < p
        rows.append(pd.DataFrame({"contract": subs[:, 0], "behaviour": subs[:, 1],
                                  "relationship": subs[:, 2], "label": y.astype(int),
                                  "event_timestamp": t0 + pd.Timedelta(weeks=w)}))
    return pd.concat(rows, ignore_index=True)


def test_fit_weights_are_on_the_simplex_and_find_the_driver():
    frame = synthetic(n_weeks=10, shift_week=100)
    w = fit_weights(frame, frame["label"].to_numpy())
    assert all(v >= 0 for v in w.values()) and sum(w.values()) == pytest.approx(1, abs=1e-3)
    assert w["behaviour"] > 0.8


def test_quarter_bounds_and_bad_quarter():
    start, close = quarter_bounds("2025Q3")
    assert start == pd.Timestamp("2025-07-01", tz="UTC") and close == pd.Timestamp("2025-10-01", tz="UTC")
    with pytest.raises(ValueError, match="2025Q3"):
        quarter_bounds("Q3-2025")


def test_walk_forward_moves_weight_from_behaviour_to_relationship():
    frame = synthetic()
    model = FakeHealth()
    current, history = model.weights, []
    for q in quarters_in(frame, HORIZON):
        r = recalibrate(model, frame, q, HORIZON, current)
        history.append(r)
        current = r.weights
    assert len(history) >= 3
    first = next(r for r in history if r.accepted)
    assert first.weights["behaviour"] > first.weights["relationship"]
    assert history[-1].weights["relationship"] > history[-1].weights["behaviour"]
    assert any(r.accepted for r in history[1:])


def test_no_gain_keeps_current_weights_and_says_why():
    frame = synthetic(shift_week=1000)
    model = FakeHealth()
    good = {"contract": 0.0, "behaviour": 1.0, "relationship": 0.0}
    r = recalibrate(model, frame, quarters_in(frame, HORIZON)[-1], HORIZON, good)
    assert not r.accepted and r.weights == good
    assert "current weights kept" in r.reason


def test_warning_levels_and_metrics():
    assert [level_of(s) for s in (80, 60, 40, 10)] == ["green", "yellow", "orange", "red"]
    m = warning_metrics(np.array([80.0, 30.0, 20.0, 70.0]), np.array([0, 1, 0, 0]))
    assert m["warning_precision"] == pytest.approx(0.5) and m["warning_recall"] == 1.0
    assert m["chs_roc_auc"] == pytest.approx(2 / 3)


def test_weight_store_versions_and_current(tmp_path):
    store = WeightStore(tmp_path)
    assert store.current() is None
    store.save("2025Q2", {"contract": 0.2, "behaviour": 0.5, "relationship": 0.3}, {"quarter": "2025Q2"})
    store.save("2025Q3", {"contract": 0.1, "behaviour": 0.4, "relationship": 0.5}, {"quarter": "2025Q3"})
    store.set_current("2025Q3")
    assert store.current()["weights"]["relationship"] == 0.5
    assert [h["version"] for h in store.history()] == ["2025Q2", "2025Q3"]
