"""drift.evidently_check on seeded synthetic frames with known shifts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from drift.evidently_check import DriftConfig, add_to_workspace, check, save, summary

NUMERIC = [f"x{i}" for i in range(8)]
CATEGORICAL = ["channel", "segment"]
FEATURES = NUMERIC + CATEGORICAL
SHIFTED = {"x0", "x1", "channel"}
CHANNEL_P = [0.6, 0.3, 0.1]


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
    assert list(cols.columns) == ["column", "type", "method", "threshold", "score", "drifted"]
    assert list(cols["column"]) == FEATURES
    assert set(cols.loc[cols["drifted"], "column"]) == SHIFTED
    assert drifted.drifted_share == pytest.approx(0.3)
    assert drifted.dataset_drift is True
    by_col = cols.set_index("column")
    assert set(by_col.loc[NUMERIC, "type"]) == {"numeric"}
    assert set(by_col.loc[CATEGORICAL, "type"]) == {"categorical"}
    assert set(by_col.loc[NUMERIC, "method"]) == {"wasserstein"}
    assert set(by_col.loc[CATEGORICAL, "method"]) == {"jensenshannon"}
    assert set(by_col["threshold"]) == {0.1}
    # a one-sd mean shift is ~1 normed Wasserstein; undrifted columns sit far below the 0.1 threshold
    assert by_col.loc["x0", "score"] > 0.8 and by_col.loc["x1", "score"] > 0.8
    assert by_col.loc[sorted(set(FEATURES) - SHIFTED), "score"].max() < 0.06
    assert drifted.rows == {"reference": 5_000, "current": 5_000, "sampled": False}


def test_dataset_verdict_follows_drift_share():
    reference = make_frame(5_000, seed=1)
    current = make_frame(5_000, seed=2, shift=True)
    result = check(reference, current, FEATURES, DriftConfig(drift_share=0.5, prediction_column=None))
    assert result.drifted_share == pytest.approx(0.3)
    assert result.dataset_drift is False
    assert result.prediction_drift is None


def test_no_drift_false_alarm_rate():
    false_flags = 0
    for seed in range(5):
        reference = make_frame(5_000, seed=100 + seed)
        current = make_frame(5_000, seed=200 + seed)
        result = check(reference, current, FEATURES, DriftConfig())
        false_flags += int(result.columns["drifted"].sum())
        assert result.dataset_drift is False
    assert false_flags <= 2


def test_prediction_drift():
    reference = make_frame(5_000, seed=1)
    same = check(reference, make_frame(5_000, seed=3), FEATURES, DriftConfig())
    assert same.prediction_drift["drifted"] is False
    assert same.prediction_drift["method"] == "wasserstein"
    assert same.prediction_drift["threshold"] == 0.1
    shifted = make_frame(5_000, seed=3)
    shifted["prediction"] = np.clip(shifted["prediction"] + 0.2, 0.0, 1.0)
    moved = check(reference, shifted, FEATURES, DriftConfig())
    assert moved.prediction_drift["drifted"] is True
    assert moved.prediction_drift["score"] > same.prediction_drift["score"]
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
    per_column = {"x2": {"method": "psi", "threshold": 0.2}, "x0": {"threshold": 5.0}}
    config = DriftConfig(drift_share=0.2, per_column=per_column)
    result = check(reference, current, FEATURES, config)
    by_col = result.columns.set_index("column")
    assert by_col.loc["x2", "method"] == "psi" and by_col.loc["x2", "threshold"] == 0.2
    assert by_col.loc["x0", "method"] == "wasserstein" and by_col.loc["x0", "threshold"] == 5.0
    assert not by_col.loc["x0", "drifted"]  # the raised threshold turns the shifted column off
    assert set(by_col.index[by_col["drifted"]]) == {"x1", "channel"}
    assert by_col.loc["x3", "method"] == "wasserstein" and by_col.loc["x3", "threshold"] == 0.1


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
    # same seed, same sample
    again = check(reference, current, FEATURES, DriftConfig(max_rows=20_000, seed=7))
    assert list(again.columns["score"]) == list(sampled.columns["score"])
