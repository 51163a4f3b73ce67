import numpy as np
import pandas as pd
import pytest

from salesml.modelspec import load_spec
from training.truth import _churn_oracle

HORIZON = load_spec("chs").horizon_days


def test_churn_oracle_compounds_the_hazard_over_the_horizon():
    weeks = pd.date_range("2024-01-01", periods=60, freq="W-MON", tz="UTC")
    hazard = pd.DataFrame({"account_id": ["a"] * 60 + ["b"] * 60,
                           "week_start": list(weeks) * 2,
                           "churn_hazard": [0.01] * 60 + [0.0] * 30 + [0.5] * 30})
    frame = pd.DataFrame({"account_id": ["a", "b", "b"],
                          "event_timestamp": [weeks[5], weeks[2], weeks[29]]})
    p = _churn_oracle(frame, hazard, HORIZON)
    assert p[0] == pytest.approx(1 - 0.99 ** 26)  # 182 days = 26 weekly hazards
    assert p[1] == pytest.approx(0.0)
    assert p[2] == pytest.approx(1 - 0.5 ** 25)  # weeks 30..54 of b
    assert np.all((p >= 0) & (p <= 1))


@pytest.fixture(scope="module")
def chs_rows(export_dir, raw):
    """The CHS label rows of the shared small export with both truths attached."""
    from features.training_sets import label_rows
    from training.truth import _churn_known

    weekly = pd.read_parquet(export_dir / "truth" / "truth_churn_weekly.parquet")
    rows = label_rows(load_spec("chs"), raw)[0]
    rows["known"] = _churn_known(rows, weekly)
    rows["path"] = _churn_oracle(rows, weekly, HORIZON)
    return rows


def test_knowable_truth_covers_every_chs_training_row(chs_rows):
    # _churn_known returns None when a row has no Monte Carlo value; here every row has one.
    assert chs_rows["known"].notna().all()
    assert chs_rows["known"].between(0, 1).all()


def test_knowable_truth_is_calibrated_and_knows_less_than_the_realised_path(chs_rows):
    from sklearn.metrics import brier_score_loss, roc_auc_score

    y, known, path = chs_rows["label"], chs_rows["known"], chs_rows["path"]
    # A true conditional probability: on average it equals the label rate, also per risk half.
    assert known.mean() == pytest.approx(y.mean(), abs=0.03)
    high = known > known.median()
    assert known[high].mean() == pytest.approx(y[high].mean(), abs=0.05)
    assert known[~high].mean() == pytest.approx(y[~high].mean(), abs=0.05)
    assert brier_score_loss(y, known) < brier_score_loss(y, np.full(len(y), y.mean()))
    # The realised path already contains declines that had not started: it ranks better than
    # anything knowable at the observation, which is why it is not the bar a model is held to.
    assert roc_auc_score(y, path) > roc_auc_score(y, known) > 0.6


def test_the_export_is_the_same_with_or_without_the_monte_carlo_truth(tmp_path):
    from salesml.simulator import generate

    generate(tmp_path / "mc", accounts=40, leads=50, reps=5, weeks=40, seed=3)
    generate(tmp_path / "none", accounts=40, leads=50, reps=5, weeks=40, seed=3, truth_samples=0)
    for table in ("usage_weekly", "churn_events", "contracts", "interactions"):
        assert pd.read_parquet(tmp_path / "mc" / f"{table}.parquet").equals(
            pd.read_parquet(tmp_path / "none" / f"{table}.parquet")), table
    none = pd.read_parquet(tmp_path / "none" / "truth" / "truth_churn_weekly.parquet")
    assert none["p_event_horizon"].isna().all()
