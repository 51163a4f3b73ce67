import numpy as np
import pandas as pd
import pytest

from training.truth import _churn_oracle


def test_churn_oracle_compounds_the_hazard_over_the_horizon():
    weeks = pd.date_range("2024-01-01", periods=60, freq="W-MON", tz="UTC")
    hazard = pd.DataFrame({"account_id": ["a"] * 60 + ["b"] * 60,
                           "week_start": list(weeks) * 2,
                           "churn_hazard": [0.01] * 60 + [0.0] * 30 + [0.5] * 30})
    frame = pd.DataFrame({"account_id": ["a", "b", "b"],
                          "event_timestamp": [weeks[5], weeks[2], weeks[29]]})
    p = _churn_oracle(frame, hazard)
    assert p[0] == pytest.approx(1 - 0.99 ** 26)  # 182 days = 26 weekly hazards
    assert p[1] == pytest.approx(0.0)
    assert p[2] == pytest.approx(1 - 0.5 ** 25)  # weeks 30..54 of b
    assert np.all((p >= 0) & (p <= 1))
