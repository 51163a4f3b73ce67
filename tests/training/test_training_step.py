"""The pure training step (``pipeline.train``) on a tiny synthetic frame: its metrics are the ones a direct
computation gives, and it never touches MLflow (no tracking URI read, no run, no ./mlruns)."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from salesml.modelspec import load_spec
from training import model_steps, pipeline
from training.metrics import classification_metrics

MLFLOW_ENTRY_POINTS = ("start_run", "log_metric", "log_metrics", "log_param", "log_params", "set_tag", "set_tags",
                       "log_figure", "log_dict", "log_input", "log_table", "set_experiment", "set_tracking_uri")


def _forbid(*args, **kwargs):
    raise AssertionError("the training step touched MLflow")


@pytest.fixture(scope="module")
def no_tracking(tmp_path_factory):
    """An unusable tracking URI, a fresh working directory, and MLflow's entry points failing loudly (when
    another test loaded it); without it loaded, the step must not load it either."""
    here = tmp_path_factory.mktemp("no_tracking")
    loaded = "mlflow" in sys.modules
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", "no-such-scheme://the-training-step-must-not-track")
        mp.chdir(here)
        if loaded:
            import mlflow

            for name in MLFLOW_ENTRY_POINTS:
                mp.setattr(mlflow, name, _forbid)
            mp.setattr(mlflow.MlflowClient, "__init__", _forbid)
        yield
    assert not (here / "mlruns").exists()
    if not loaded:
        assert "mlflow" not in sys.modules, "the training step imported mlflow"


def toy_frame(n: int = 700, weeks: int = 12, seed: int = 0) -> pd.DataFrame:
    """Leads observed over ``weeks`` weeks; conversion follows ``signal`` (true probability ``p_true``)."""
    rng = np.random.default_rng(seed)
    signal, noise = rng.normal(size=n), rng.normal(size=n)
    p = 1 / (1 + np.exp(-(2.0 * signal - 0.5)))
    week = rng.integers(0, weeks, n)
    return pd.DataFrame({
        "lead_id": [f"L{i:05d}" for i in range(n)],
        "event_timestamp": pd.Timestamp("2025-01-06", tz="UTC") + pd.to_timedelta(week * 7, unit="D"),
        "signal": signal, "noise": noise, "segment": rng.choice(["smb", "mid", "ent"], n),
        "p_true": p, "label": (rng.random(n) < p).astype(int)})


FEATURES = ["signal", "noise", "segment"]


def _close(result) -> None:
    from training.plots import pyplot

    for fig in result.figures.values():
        pyplot().close(fig)


@pytest.fixture(scope="module")
def trained(no_tracking):
    frame = toy_frame()
    inputs = model_steps.TrainingInputs(truth=lambda rows: rows["p_true"].to_numpy())
    result = pipeline.train(load_spec("intent"), frame, FEATURES, seed=3, inputs=inputs)
    yield frame, result
    _close(result)


def test_metrics_match_a_direct_computation(trained):
    frame, result = trained
    test = result.split.test
    y = test["label"].to_numpy()
    direct = classification_metrics(y, result.model.predict_proba(test))
    for k, v in direct.items():
        assert result.metrics[f"test_{k}"] == pytest.approx(v, nan_ok=True), k
    logistic = classification_metrics(y, result.fit.baselines["logistic"].predict_proba(test))
    assert result.metrics["baseline_logistic_test_roc_auc"] == pytest.approx(logistic["roc_auc"])
    truth = roc_auc_score(y, test["p_true"])
    assert result.metrics["oracle_test_roc_auc"] == pytest.approx(truth)
    assert result.metrics["test_auc_vs_oracle"] == pytest.approx(direct["roc_auc"] / truth)
    assert np.array_equal(result.scores["truth"], test["p_true"].to_numpy())
    assert result.metrics["test_roc_auc"] > 0.7  # the signal is learnt


def test_the_result_carries_what_the_run_records(trained):
    frame, result = trained
    assert result.name == "intent" and result.selection.chosen in result.spec.candidates
    assert {"roc_pr", "calibration", "score_distribution", "shap_summary"} == set(result.figures)
    assert {"feature_spec.json", "model_spec.json"} == set(result.documents)
    p = result.params
    assert p["rows"] == len(frame) and p["seed"] == 3 and p["feature_service"] == result.spec.feature_service
    assert p["candidates"] == ",".join(result.spec.candidates) and p["split"] == "time"
    assert {"train_window", "valid_window", "test_window"} <= set(p) and "empty_features" not in p
    ref = result.reference
    assert list(ref.columns) == ["event_timestamp", *result.model.spec.columns, "label", "in_sample", "prediction"]
    split = result.split
    every = pd.concat([split.train, split.valid, split.test])
    assert len(ref) == every["lead_id"].nunique()
    # one row per lead over the whole window; in_sample marks the rows the model was fitted on
    assert ref["event_timestamp"].min() < split.valid_start <= ref["event_timestamp"].max()
    assert ref["in_sample"].equals(ref["event_timestamp"] < split.valid_start)
    assert list(result.example.columns[:len(result.model.spec.columns)]) == result.model.spec.columns
    first, last = frame["event_timestamp"].min(), frame["event_timestamp"].max()
    assert result.data_window == f"{first:%Y-%m-%d}..{last:%Y-%m-%d}"
    rows = result.selection_rows()
    assert sum(r["chosen"] for r in rows) == 1 and {r["model"] for r in rows} == set(result.selection.valid_auc)


def test_a_model_strategy_adds_its_extras(no_tracking, monkeypatch):
    """A model's own step (``model_steps.STEPS``) gets the fit and what its ``read`` gathered; its metrics,
    params, figures, documents and facts land in the result, its model replaces the chosen one."""
    seen = {}

    class Wrapped:  # a model built on the chosen one, as the CHS health model is
        def __init__(self, inner):
            self.inner, self.spec = inner, inner.spec

        def predict_proba(self, rows):
            return self.inner.predict_proba(rows)

        def contributions(self, rows):
            return self.inner.contributions(rows)

    def extend(fit, inputs, seed, params):
        seen.update(inputs=inputs, seed=seed, chosen=fit.selection.chosen)
        return model_steps.Extras(model=Wrapped(fit.model), metrics={"test_extra": 1.5}, params={"extra_param": 7},
                                  documents={"extra.json": {"a": 1}}, details={"facts": [1, 2]})

    monkeypatch.setitem(model_steps.STEPS, "intent", model_steps.ModelSteps(extend=extend))
    spec = load_spec("intent").model_copy(update={"candidates": ["logistic"]})  # quick: no boosting
    result = pipeline.train(spec, toy_frame(seed=1), FEATURES, seed=4,
                            inputs=model_steps.TrainingInputs(model={"what": "read at the edge"}))
    try:
        assert seen == {"inputs": {"what": "read at the edge"}, "seed": 4, "chosen": "logistic"}
        assert isinstance(result.model, Wrapped) and result.model.inner is result.fit.model
        assert result.metrics["test_extra"] == 1.5 and result.params["extra_param"] == 7
        assert result.documents["extra.json"] == {"a": 1} and result.details == {"facts": [1, 2]}
        assert "oracle_test_roc_auc" not in result.metrics  # no truth given
    finally:
        _close(result)


def test_models_without_a_strategy_add_nothing():
    assert model_steps.steps_for("intent") == model_steps.ModelSteps()
    assert set(model_steps.STEPS) == {"chs", "lead_match"}
