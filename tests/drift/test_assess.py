"""The pure drift assessment (``drift.monitor.assess``) on two small frames: the shifted column is flagged,
an unchanged window is not, a window missing a feature is refused; nothing is written, MLflow untouched."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from drift.monitor import EXIT_COLUMNS, DriftInputError, Window, assess

pytestmark = [pytest.mark.evidently]


def _window(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"event_timestamp": pd.Timestamp("2025-03-01", tz="UTC"),
                         "usage": rng.normal(10.0 + shift, 2.0, n), "tickets": rng.poisson(3.0, n).astype(float),
                         "plan": rng.choice(["basic", "pro"], n), "prediction": rng.uniform(0, 1, n),
                         "label": rng.integers(0, 2, n)})


@pytest.fixture
def untracked(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "no-such-scheme://the-assessment-must-not-track")
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    assert not any(tmp_path.iterdir()), "the assessment wrote files"


def test_the_shifted_column_is_flagged(untracked):
    from drift.evidently_check import DriftConfig

    reference = _window(600, seed=1)
    current = _window(400, seed=2, shift=1.5).drop(columns="label")  # no outcomes yet
    a = assess(reference, current, DriftConfig(), max_auc_drop=0.05, version="7")
    assert a.features == ["usage", "tickets", "plan"]
    assert a.drifted_columns == ["usage"] and a.drift and a.label is None and a.auc_drop is None
    assert not a.prediction_drift and not a.performance_drift
    summary = a.summary("chs", "7", Window(pd.Timestamp("2025-03-01", tz="UTC"), pd.Timestamp("2025-03-08", tz="UTC")))
    assert summary["drifted_columns"] == ["usage"] and summary["drift"] and summary["version"] == "7"
    assert "<html" in a.html().lower()


def test_the_same_distribution_is_not_drift_and_outcomes_are_compared(untracked):
    from drift.evidently_check import DriftConfig

    a = assess(_window(600, seed=1), _window(400, seed=3), DriftConfig(), max_auc_drop=0.05)
    assert a.drifted_columns == [] and not a.drift
    assert a.label == "label" and a.auc_drop is not None  # enough outcomes in: performance compared


def test_a_window_without_a_trained_feature_is_refused(untracked):
    from drift.evidently_check import DriftConfig

    with pytest.raises(DriftInputError, match="lacks feature column.*tickets.*version 3 was trained on") as err:
        assess(_window(100, seed=1), _window(100, seed=2).drop(columns="tickets"), DriftConfig(), 0.05, "3")
    assert err.value.code == EXIT_COLUMNS

