"""Training for real on the small simulated export: MLflow runs, registry, reproducibility."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.training_sets import build_training_set
from training import pipeline
from training.chs import LAYERS

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.mlflow]


@pytest.fixture(scope="module")
def chs_set(store_settings, export_dir, store):
    return build_training_set(store_settings, "chs", raw_dir=export_dir, store=store)


@pytest.fixture(scope="module")
def chs_run(store_settings, export_dir, chs_set):
    return pipeline.run(store_settings, "chs", seed=3, raw_dir=export_dir, log=lambda _: None,
                        training_set=chs_set)


@pytest.fixture(scope="module")
def health_model(store_settings, chs_run):
    from training.recalibrate_run import load_health_model

    return load_health_model(store_settings)


def test_run_records_metrics_plots_lineage_and_registers_champion(store_settings, chs_run):
    from mlflow import MlflowClient

    client = MlflowClient()
    run = client.get_run(chs_run["run_id"])
    assert run.info.status == "FINISHED"
    for key in ("test_roc_auc", "test_pr_auc", "test_log_loss", "test_brier", "test_ece",
                "test_precision_top10", "test_lift_top10", "baseline_logistic_test_roc_auc",
                "oracle_test_roc_auc", "test_chs_roc_auc", "test_warning_precision"):
        assert key in run.data.metrics, key
    assert 0.5 < run.data.metrics["test_roc_auc"] <= 1
    assert run.data.tags["seed"] == "3" and len(run.data.tags["git_commit"]) >= 7
    assert run.data.tags["feast_feature_service"] == "chs"
    assert run.inputs.dataset_inputs[0].dataset.digest == chs_run["dataset_digest"]
    arts = {a.path for a in client.list_artifacts(chs_run["run_id"], "plots")}
    assert {"plots/roc_pr.png", "plots/calibration.png", "plots/shap_summary.png",
            "plots/score_distribution.png"} <= arts
    assert abs(sum(float(run.data.params[f"chs_weight_{k}"]) for k in LAYERS) - 1) < 1e-3
    mv = client.get_model_version_by_alias("chs", "champion")
    assert mv.run_id == chs_run["run_id"]


def test_same_seed_same_data_same_metrics(chs_set):
    a = pipeline.fit_and_evaluate("chs", chs_set.frame, chs_set.feature_columns, seed=5)
    b = pipeline.fit_and_evaluate("chs", chs_set.frame, chs_set.feature_columns, seed=5)
    assert a.metrics == b.metrics
    assert a.split.valid_start == b.split.valid_start and a.split.test_start == b.split.test_start
    assert a.split.train["event_timestamp"].max() < a.split.valid["event_timestamp"].min()
    assert a.split.valid["event_timestamp"].max() < a.split.test["event_timestamp"].min()


def test_failed_run_is_marked_failed_and_aliases_stay(store_settings, export_dir, chs_set, chs_run,
                                                      monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash mid-training")

    before = MlflowClient().get_registered_model("chs").aliases
    monkeypatch.setattr(pipeline, "fit_and_evaluate", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        pipeline.run(store_settings, "chs", seed=3, raw_dir=export_dir, log=lambda _: None,
                     training_set=chs_set)
    last = mlflow.search_runs(experiment_names=["salesml-chs"], order_by=["start_time DESC"],
                              max_results=1)
    assert last["status"].iloc[0] == "FAILED"
    assert MlflowClient().get_registered_model("chs").aliases == before


def test_more_usage_or_sla_never_lowers_health(health_model, chs_set, chs_run):
    """The score's layer models are always constrained; the churn probability is wherever the
    constrained xgboost is the model (the run says when selection chose another)."""
    rows = chs_set.frame.sample(200, random_state=0)
    base = health_model.score(rows)
    usage = ["logins", "active_users", "key_feature_uses", "api_calls", "config_changes",
             "scans_run", "custom_rules", "logins_4w_avg", "key_feature_uses_4w_avg"]
    for factor in (1.1, 1.5, 3.0):
        more = rows.copy()
        more[usage] = more[usage] * factor
        assert np.all(health_model.score(more) >= base - 1e-9)
    better_sla = rows.assign(sla_gap=rows["sla_gap"] + 0.01)
    assert np.all(health_model.score(better_sla) >= base - 1e-9)
    constrained = pipeline.fit_and_evaluate("chs", chs_set.frame, chs_set.feature_columns, seed=3,
                                            candidates=["xgboost"]).model
    churn = constrained.predict_proba(rows)
    assert np.all(constrained.predict_proba(rows.assign(api_calls=rows["api_calls"] * 2)) <= churn + 1e-12)
    if chs_run["chosen"] != "xgboost":
        assert "the constrained xgboost trails" in " ".join(chs_run["selection_notes"])


def test_health_payload_and_attribution_add_up(health_model, chs_set):
    rows = chs_set.frame.sort_values("event_timestamp").groupby("account_id").tail(2).head(40)
    out = health_model.health(rows)
    assert {"score", "level", "layers", "churn_probability", "drivers", "early_warning"} <= set(out[0])
    assert all(0 <= o["score"] <= 100 and o["level"] in ("green", "yellow", "orange", "red") for o in out)
    before = chs_set.frame.iloc[0]
    after = before.copy()
    after["api_calls"] = before["api_calls"] * 0.6
    after["api_calls_mom"] = -0.4
    change = health_model.attribute_change(before, after)
    layer_sum = sum(v["points"] for v in change["layers"].values())
    assert change["change"] == pytest.approx(layer_sum, abs=0.02)
    assert change["layers"]["contract"]["points"] == 0 and change["layers"]["relationship"]["points"] == 0
    assert change["text"].startswith(f"CHS {change['change']:+.1f}")


def test_intent_never_falls_with_more_pricing_page_visits(store_settings, export_dir, store):
    ts = build_training_set(store_settings, "intent", raw_dir=export_dir, store=store)
    result = pipeline.fit_and_evaluate("intent", ts.frame, ts.feature_columns, seed=1)
    grid = ts.frame.sample(150, random_state=1)
    base = result.model.predict_proba(grid)
    for extra in (1, 3, 10):
        more = grid.assign(pricing_page_views_7d=grid["pricing_page_views_7d"].fillna(0) + extra)
        assert np.all(result.model.predict_proba(more) >= base - 1e-12)
    assert result.metrics["test_roc_auc"] > 0.55
    assert set(result.test_scores) == {"xgboost", "xgboost_unconstrained", "logistic", "rules"}


def test_unknown_model_is_rejected(chs_set):
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        pipeline.fit_and_evaluate("nope", chs_set.frame, chs_set.feature_columns, seed=1)


def test_time_split_rejects_too_little_history():
    from training.data import time_split

    t = pd.Timestamp("2024-01-01", tz="UTC")
    frame = pd.DataFrame({"event_timestamp": [t, t], "label": [0, 1]})
    with pytest.raises(ValueError, match="distinct label times"):
        time_split(frame)


@pytest.fixture
def chs_aliases_restored(store_settings, chs_run):
    """The chs aliases of the shared store as they were before the test (a promotion moves the champion
    that other tests check), whatever the order the tests run in."""
    from training import tracking

    client = tracking.client(store_settings)
    before = dict(client.get_registered_model("chs").aliases)
    yield
    for alias in client.get_registered_model("chs").aliases:
        if alias not in before:
            client.delete_registered_model_alias("chs", alias)
    for alias, version in before.items():
        client.set_registered_model_alias("chs", alias, version)


@pytest.mark.optuna
def test_tune_registers_challenger_then_promote_decides_with_evidence(store_settings, export_dir, chs_run,
                                                                      chs_aliases_restored):
    import mlflow
    from mlflow import MlflowClient

    from training import registry, tuning

    summary = tuning.run(store_settings, "chs", trials=3, seed=7, raw_dir=export_dir, log=lambda _: None)
    client = MlflowClient()
    trials = mlflow.search_runs(experiment_names=["salesml-chs"],
                                filter_string=f"tags.mlflow.parentRunId = '{summary['parent_run_id']}'")
    assert len(trials) == 3
    aliases = client.get_registered_model("chs").aliases
    assert aliases["challenger"] == summary["retrained"]["version"]
    champion_before = aliases["champion"]

    decision = registry.promote(store_settings, "chs", raw_dir=export_dir)
    after = client.get_registered_model("chs").aliases
    if decision.promote:
        assert after["champion"] == summary["retrained"]["version"] and "challenger" not in after
    else:
        assert after["champion"] == champion_before and after["challenger"] == summary["retrained"]["version"]
    logged = mlflow.search_runs(experiment_names=["salesml-promotions"], max_results=1,
                                order_by=["start_time DESC"])
    assert logged["tags.decision"].iloc[0] == ("promote" if decision.promote else "keep")
    assert "metrics.challenger_roc_auc" in logged.columns
