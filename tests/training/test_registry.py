import numpy as np

from training.registry import decide


def _data(seed=0, n=2000):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.01, 0.9, n)
    y = (rng.random(n) < p).astype(int)
    return y, p, rng


def test_first_model_becomes_champion():
    y, p, _ = _data()
    d = decide("chs", y, None, p, None, "1")
    assert d.promote and "first model" in d.reason


def test_better_challenger_is_promoted_and_noise_is_not():
    y, p, rng = _data()
    noisy = np.clip(p + rng.normal(0, 0.25, len(p)), 0.001, 0.999)
    assert decide("chs", y, noisy, p, "1", "2").promote
    d = decide("chs", y, p, noisy, "1", "2")
    assert not d.promote and "ROC-AUC gain" in d.reason


def test_better_ranking_but_worse_calibration_is_refused():
    y, p, _ = _data()
    worse = np.clip(p + np.random.default_rng(1).normal(0, 0.3, len(p)), 0.001, 0.999)
    overconfident = np.clip(p ** 0.25, 0.001, 0.999)  # same order as p, badly calibrated
    d = decide("chs", y, worse, overconfident, "1", "2")
    assert not d.promote and "calibration worse" in d.reason
