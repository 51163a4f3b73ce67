"""drift.evidently_check on seeded synthetic frames with known shifts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from drift.evidently_check import CHI2_TWO_SAMPLE, DriftConfig, add_to_workspace, check, save, summary

pytestmark = pytest.mark.evidently
NUMERIC = [f"x{i}" for i in range(8)]
CATEGORICAL = ["channel", "segment"]
FEATURES = NUMERIC + CATEGORICAL
SHIFTED = {"x0", "x1", "channel"}
CHANNEL_P = [0.6, 0.3, 0.1]
LEVEL = 0.05 / (len(FEATURES) + 1)  # Bonferroni: DriftConfig().alpha over the features and the prediction


def make_frame(n: int, seed: int, shift: bool = False, label_noise: float = 0.1) -> pd.DataFrame:
    """8 numeric features with mean i and sd 1 + i/4, 2 categorical, a 0/1 label and a probability prediction.

    shift=True moves x0 and x1 by one sd and reverses the channel frequencies.
    """
    rng = np.random.default_rng(seed)
    data = {}
    for i, name in enumerate(NUMERIC):
        sd = 1.0 + i / 4
        data[name] = rng.normal(loc=i + (sd if shift and name in SHIFTED else 0.0), scale=sd, size=n)
    channel_p = CHANNEL_P[::-1] if shift else CHANNEL_P
    data["channel"] = rng.choice(["email", "call", "event"], size=n, p=channel_p)
    data["segment"] = pd.Categorical(rng.choice(["smb", "mid", "ent"], size=n, p=[0.5, 0.3, 0.2]))
    label = (rng.random(n) < 0.3).astype(int)
    data["label"] = label
    data["prediction"] = np.clip(0.3 + 0.4 * (label - 0.3) + rng.normal(0.0, label_noise, n), 0.0, 1.0)
    return pd.DataFrame(data)


@pytest.fixture(scope="module")
def drifted():
    reference = make_frame(5_000, seed=1)
    current = make_frame(5_000, seed=2, shift=True)
    return check(reference, current, FEATURES, DriftConfig(drift_share=0.2))


def test_flags_exactly_the_shifted_columns(drifted):
    cols = drifted.columns
    assert list(cols.columns) == ["column", "type", "method", "threshold", "score", "significant", "distance",
                                  "yardstick", "drifted"]
    assert list(cols["column"]) == FEATURES
    assert set(cols.loc[cols["drifted"], "column"]) == SHIFTED
    assert drifted.drifted_share == pytest.approx(0.3)
    assert drifted.dataset_drift is True
    by_col = cols.set_index("column")
    assert set(by_col.loc[NUMERIC, "type"]) == {"numeric"}
    assert set(by_col.loc[CATEGORICAL, "type"]) == {"categorical"}
    assert set(by_col.loc[NUMERIC, "method"]) == {"ks"}
    assert set(by_col.loc[CATEGORICAL, "method"]) == {CHI2_TWO_SAMPLE}
    assert list(by_col["threshold"]) == pytest.approx([LEVEL] * len(FEATURES))
    # scores are p-values: a one-sd shift is overwhelming at 5,000 rows; undrifted columns stay above the level
    assert by_col.loc[sorted(SHIFTED), "score"].max() < 1e-20
    assert by_col.loc[sorted(set(FEATURES) - SHIFTED), "score"].min() > LEVEL
    assert drifted.rows == {"reference": 5_000, "current": 5_000, "sampled": False}
    assert drifted.tests["alpha"] == 0.05 and drifted.tests["correction"] == "bonferroni"
    assert drifted.tests["family_size"] == len(FEATURES) + 1
    assert drifted.tests["per_column_level"] == pytest.approx(LEVEL)


def test_dataset_verdict_follows_drift_share():
    reference = make_frame(5_000, seed=1)
    current = make_frame(5_000, seed=2, shift=True)
    result = check(reference, current, FEATURES, DriftConfig(drift_share=0.5, prediction_column=None))
    assert result.drifted_share == pytest.approx(0.3)
    assert result.dataset_drift is False
    assert result.prediction_drift is None


def test_no_drift_no_flags():
    for seed in range(5):
        reference = make_frame(5_000, seed=100 + seed)
        current = make_frame(5_000, seed=200 + seed)
        result = check(reference, current, FEATURES, DriftConfig())
        assert not result.columns["drifted"].any() and result.dataset_drift is False
        assert result.prediction_drift["drifted"] is False


def test_prediction_drift():
    reference = make_frame(5_000, seed=1)
    same = check(reference, make_frame(5_000, seed=3), FEATURES, DriftConfig())
    assert same.prediction_drift["drifted"] is False
    assert same.prediction_drift["method"] == "ks"
    assert same.prediction_drift["threshold"] == pytest.approx(LEVEL)
    shifted = make_frame(5_000, seed=3)
    shifted["prediction"] = np.clip(shifted["prediction"] + 0.2, 0.0, 1.0)
    moved = check(reference, shifted, FEATURES, DriftConfig())
    assert moved.prediction_drift["drifted"] is True
    assert moved.prediction_drift["score"] < 1e-20 < LEVEL < same.prediction_drift["score"]  # p-values
    assert "prediction" not in set(moved.columns["column"])


def test_quality_drops_with_noisier_current_labels():
    reference = make_frame(5_000, seed=1, label_noise=0.1)
    current = make_frame(5_000, seed=2, label_noise=0.4)
    result = check(reference, current, FEATURES, DriftConfig(), label="label", threshold=0.5)
    ref_q, cur_q = result.quality["reference"], result.quality["current"]
    assert cur_q["roc_auc"] < ref_q["roc_auc"] - 0.05
    for q in (ref_q, cur_q):
        assert 0.5 < q["roc_auc"] <= 1.0
        assert 0.0 <= q["precision"] <= 1.0 and 0.0 <= q["recall"] <= 1.0
        assert q["rows"] == 5_000 and q["threshold"] == 0.5
    # Evidently's values against sklearn on the same rows
    from sklearn.metrics import precision_score, recall_score, roc_auc_score

    for frame, q in ((reference, ref_q), (current, cur_q)):
        assert q["roc_auc"] == pytest.approx(roc_auc_score(frame["label"], frame["prediction"]))
        predicted = (frame["prediction"] >= 0.5).astype(int)
        assert q["precision"] == pytest.approx(precision_score(frame["label"], predicted))
        assert q["recall"] == pytest.approx(recall_score(frame["label"], predicted))


def test_quality_skips_rows_without_labels_and_is_none_without_label():
    reference = make_frame(2_000, seed=1)
    current = make_frame(2_000, seed=2).astype({"label": float})
    current.loc[current.index[:500], "label"] = np.nan
    result = check(reference, current, FEATURES, DriftConfig(), label="label")
    assert result.quality["current"]["rows"] == 1_500
    assert check(reference, current, FEATURES, DriftConfig()).quality is None
    assert check(reference, current.drop(columns="label"), FEATURES, DriftConfig(), label="label").quality is None


def test_per_column_override():
    reference = make_frame(5_000, seed=1)
    current = make_frame(5_000, seed=2, shift=True)
    per_column = {"x2": {"method": "psi", "threshold": 0.2}, "x0": {"method": "wasserstein", "threshold": 5.0},
                  "x5": {"method": "wasserstein"}, "x6": {"threshold": 1e-300}}
    config = DriftConfig(drift_share=0.2, per_column=per_column)
    result = check(reference, current, FEATURES, config)
    by_col = result.columns.set_index("column")
    assert by_col.loc["x2", "method"] == "psi" and by_col.loc["x2", "threshold"] == 0.2
    assert by_col.loc["x0", "method"] == "wasserstein" and by_col.loc["x0", "threshold"] == 5.0
    assert not by_col.loc["x0", "drifted"]  # a normed Wasserstein distance of ~1 is below the raised threshold
    assert by_col.loc["x5", "threshold"] == 0.1  # a distance test without a threshold: Evidently's default
    assert by_col.loc["x6", "method"] == "ks" and by_col.loc["x6", "threshold"] == 1e-300
    assert set(by_col.index[by_col["drifted"]]) == {"x1", "channel"}
    assert by_col.loc["x3", "method"] == "ks" and by_col.loc["x3", "threshold"] == pytest.approx(LEVEL)
    flags = {c["column"]: c["score_is_p_value"] for c in summary(result)["columns"]}
    assert flags["x0"] is False and flags["x2"] is False and flags["x3"] is True and flags["channel"] is True


def test_bad_inputs():
    reference = make_frame(200, seed=1)
    current = make_frame(200, seed=2)
    with pytest.raises(ValueError, match="current window is empty"):
        check(reference, current.iloc[:0], FEATURES, DriftConfig())
    with pytest.raises(ValueError, match="missing from current: \\['x3'\\]"):
        check(reference, current.drop(columns="x3"), FEATURES, DriftConfig())
    with pytest.raises(ValueError, match="missing from reference: \\['segment'\\]"):
        check(reference.drop(columns="segment"), current, FEATURES, DriftConfig())
    with pytest.raises(ValueError, match="no shared features"):
        check(reference, current, [], DriftConfig())
    with pytest.raises(ValueError, match="No stattest found of name nope"):
        check(reference, current, FEATURES, DriftConfig(per_column={"x1": {"method": "nope"}}))
    with pytest.raises(ValueError, match="per_column names columns"):
        check(reference, current, FEATURES, DriftConfig(per_column={"typo": {"threshold": 0.2}}))
    with pytest.raises(ValueError, match="alpha must be a false-alarm level between 0 and 1"):
        check(reference, current, FEATURES, DriftConfig(alpha=1.5))


def test_bool_is_categorical():
    reference = make_frame(2_000, seed=1).assign(flag=lambda f: f["x0"] > 0)
    current = make_frame(2_000, seed=2).assign(flag=lambda f: f["x0"] > 0)
    result = check(reference, current, ["x0", "flag"], DriftConfig())
    assert result.columns.set_index("column").loc["flag", "type"] == "categorical"


def test_save_and_workspace(tmp_path, drifted):
    html, js = tmp_path / "out" / "drift.html", tmp_path / "out" / "drift.json"
    save(drifted, html, js)
    text = html.read_text()
    assert html.stat().st_size > 10_000 and "<html" in text.lower()
    loaded = json.loads(js.read_text())
    assert loaded == {**summary(drifted), "html": "drift.html"}
    assert loaded["dataset_drift"] is True
    assert set(loaded["drifted_columns"]) == SHIFTED
    assert [c["column"] for c in loaded["columns"]] == FEATURES

    from evidently.ui.workspace import Workspace

    workspace_dir = tmp_path / "workspace"
    project_id = add_to_workspace(drifted, workspace_dir, "lead-intent drift")
    assert workspace_dir.is_dir()
    workspace = Workspace(str(workspace_dir))
    [project] = workspace.search_project("lead-intent drift")
    assert str(project.id) == project_id
    runs = workspace.list_runs(project.id)
    assert len(runs) == 1
    assert workspace.get_run(project.id, runs[0]) is not None
    # the same name finds the same project
    assert add_to_workspace(drifted, workspace_dir, "lead-intent drift") == project_id
    assert len(Workspace(str(workspace_dir)).list_runs(project.id)) == 2


def test_save_writes_quality_report(tmp_path):
    result = check(make_frame(2_000, seed=1), make_frame(2_000, seed=2), FEATURES, DriftConfig(), label="label")
    save(result, tmp_path / "r.html", tmp_path / "r.json")
    loaded = json.loads((tmp_path / "r.json").read_text())
    assert loaded["quality_html"] == "r.quality.html"
    assert "<html" in (tmp_path / "r.quality.html").read_text().lower()
    assert loaded["quality"] == result.quality


def _rejection_rate(method: str, draw, reps: int = 400, n: int = 1_200, level: float = 0.05) -> float:
    """Share of same-distribution sample pairs that Evidently's stattest ``method`` flags at ``level``."""
    from evidently.legacy.calculations.stattests.registry import get_registered_stattest
    from evidently.legacy.core import ColumnType

    rng = np.random.default_rng(7)
    kind = ColumnType.Categorical if isinstance(draw(rng, 2)[0], str) else ColumnType.Numerical
    test = get_registered_stattest(method, kind)
    flagged = sum(test(pd.Series(draw(rng, n)), pd.Series(draw(rng, n)), kind, level).drifted for _ in range(reps))
    return flagged / reps


def test_per_column_tests_are_calibrated():
    """Under no drift each per-column test flags at most its level (within binomial noise of 400 draws: sd 1.1%);
    Evidently's own ``chisquare`` (goodness of fit against the reference counts, as if they were exact) does not."""
    def channel(rng, n):
        return rng.choice(["email", "call", "event"], size=n, p=CHANNEL_P)

    def skewed(rng, n):
        return rng.lognormal(3.0, 1.0, n)

    def tiers(rng, n):  # numeric with three values: the discrete numeric test
        return rng.choice([1.0, 2.0, 3.0], size=n, p=[0.6, 0.3, 0.1])

    margin = 3 * (0.05 * 0.95 / 400) ** 0.5
    assert _rejection_rate("ks", skewed) <= 0.05 + margin
    chi2_rate = _rejection_rate(CHI2_TWO_SAMPLE, channel)
    assert 0.05 - margin <= chi2_rate <= 0.05 + margin
    assert _rejection_rate(CHI2_TWO_SAMPLE, tiers) <= 0.05 + margin
    assert _rejection_rate("chisquare", channel) > 0.15  # 25%: why the two-sample test replaces it


def test_two_sample_chisquare_matches_evidently_z_test_on_two_values():
    from evidently.legacy.calculations.stattests.registry import get_registered_stattest
    from evidently.legacy.core import ColumnType

    rng = np.random.default_rng(3)
    reference = pd.Series(rng.choice(["yes", "no"], size=900, p=[0.3, 0.7]))
    current = pd.Series(rng.choice(["yes", "no"], size=700, p=[0.35, 0.65]))
    ours = get_registered_stattest(CHI2_TWO_SAMPLE, ColumnType.Categorical)
    z = get_registered_stattest("z", ColumnType.Categorical)
    args = (reference, current, ColumnType.Categorical, 0.05)
    assert ours(*args).drift_score == pytest.approx(z(*args).drift_score, rel=1e-9)


def test_discrete_numeric_columns_get_the_chisquare_test_and_new_categories_drift():
    rng = np.random.default_rng(5)
    reference = pd.DataFrame({"tier": rng.choice([1.0, 2.0, 3.0], 2_000), "flag": rng.random(2_000) < 0.2,
                              "x": rng.normal(size=2_000)})
    current = pd.DataFrame({"tier": rng.choice([1.0, 2.0, 3.0, 4.0], 2_000), "flag": rng.random(2_000) < 0.2,
                            "x": rng.normal(size=2_000)})
    result = check(reference, current, ["tier", "flag", "x"], DriftConfig(prediction_column=None))
    by_col = result.columns.set_index("column")
    assert by_col.loc["tier", "type"] == "numeric" and by_col.loc["tier", "method"] == CHI2_TWO_SAMPLE
    assert by_col.loc["flag", "type"] == "categorical" and by_col.loc["flag", "method"] == CHI2_TWO_SAMPLE
    assert by_col.loc["x", "method"] == "ks"
    assert list(by_col["threshold"]) == pytest.approx([0.05 / 3] * 3)  # no prediction column: m = 3
    assert list(by_col.index[by_col["drifted"]]) == ["tier"]  # a quarter of the rows in a value never seen before
    assert result.tests["by_type"] == {"numeric, more than 5 distinct values": "ks",
                                       "numeric, at most 5 distinct values": CHI2_TWO_SAMPLE,
                                       "categorical or bool": CHI2_TWO_SAMPLE}


def test_alpha_sets_the_per_column_level():
    reference, current = make_frame(1_000, seed=1), make_frame(1_000, seed=2)
    result = check(reference, current, FEATURES, DriftConfig(alpha=0.01))
    assert list(result.columns["threshold"]) == pytest.approx([0.01 / (len(FEATURES) + 1)] * len(FEATURES))
    assert result.prediction_drift["threshold"] == pytest.approx(0.01 / (len(FEATURES) + 1))
    assert summary(result)["tests"]["alpha"] == 0.01


def test_quantile_sketch_tracks_the_window_distribution():
    """Above max_rows each column is a k-point quantile sketch: CDF and shares within 1/k, KS within 2/k."""
    from scipy.stats import ks_2samp

    from drift.evidently_check import _sketch

    rng = np.random.default_rng(11)
    n, k = 120_000, 5_000
    spend = rng.lognormal(3.0, 1.0, n)
    spend[rng.random(n) < 0.1] = np.nan
    window = pd.DataFrame({"spend": spend, "channel": rng.choice(["email", "call", "event"], size=n, p=CHANNEL_P),
                           "flag": rng.random(n) < 0.07, "tier": rng.integers(1, 4, n)})
    sketch = _sketch(window, k)
    assert len(sketch) == k and _sketch(window, n) is window
    assert sketch["spend"].isna().mean() == pytest.approx(window["spend"].isna().mean(), abs=1 / k)
    full, small = np.sort(window["spend"].dropna()), np.sort(sketch["spend"].dropna())
    grid = np.quantile(full, np.linspace(0, 1, 2_001))
    cdf_full = np.searchsorted(full, grid, side="right") / len(full)
    cdf_small = np.searchsorted(small, grid, side="right") / len(small)
    assert np.abs(cdf_full - cdf_small).max() <= 1 / len(small)
    for column in ("channel", "flag", "tier"):
        shares = window[column].value_counts(normalize=True)
        assert (sketch[column].value_counts(normalize=True).reindex(shares.index) - shares).abs().max() <= 1 / k
    other = rng.lognormal(3.05, 1.0, 8_000)
    statistic = ks_2samp(window["spend"].dropna(), other).statistic
    assert ks_2samp(sketch["spend"].dropna(), other).statistic == pytest.approx(statistic, abs=2 / len(small))


@pytest.mark.slow
def test_sampling_keeps_verdicts():
    reference = make_frame(200_000, seed=1)
    current = make_frame(200_000, seed=2)
    current["x4"] += 1.0 + 4 / 4  # one sd
    full = check(reference, current, FEATURES, DriftConfig())
    sampled = check(reference, current, FEATURES, DriftConfig(max_rows=20_000, seed=7))
    assert full.rows["sampled"] is False
    assert sampled.rows == {"reference": 200_000, "current": 200_000, "sampled": True}
    assert list(full.columns["drifted"]) == list(sampled.columns["drifted"])
    assert set(full.columns.loc[full.columns["drifted"], "column"]) == {"x4"}
    assert full.dataset_drift == sampled.dataset_drift
    assert full.prediction_drift["drifted"] == sampled.prediction_drift["drifted"]
    # the sketch is deterministic: another seed (it only draws the quality metrics' rows) gives the same scores
    again = check(reference, current, FEATURES, DriftConfig(max_rows=20_000, seed=8))
    assert list(again.columns["score"]) == list(sampled.columns["score"])
