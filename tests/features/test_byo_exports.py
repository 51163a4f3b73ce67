"""Exports shaped unlike the simulator, through the documented configuration only: no placeholder
tables, no invented dates. Real Feast, MLflow and the scoring core; no server."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from salesml.cli import app
from salesml.settings import Settings
from salesml.simulator.shapes import prospect_list, purchases_only, snapshot_subscription

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.mlflow]


def _store(settings: Settings, raw):
    from features.store import apply, build_feature_files, materialize

    log = []
    build_feature_files(settings, raw, progress=log.append)
    apply(settings, progress=lambda _: None)
    materialize(settings)
    return log


def _trained(tmp_path_factory, generate, name: str, **size):
    """An export from ``generate``, its store, and a chs model trained and registered on it."""
    from training import pipeline

    raw = tmp_path_factory.mktemp(f"{name}-raw")
    generate(raw, **size)
    settings = Settings(home=tmp_path_factory.mktemp(f"{name}-home"))
    log = _store(settings, raw)
    summary = pipeline.run(settings, "chs", seed=1, log=lambda _: None)  # the export folder build recorded
    return settings, raw, summary, log


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    """A single-snapshot subscription export."""
    return _trained(tmp_path_factory, snapshot_subscription, "snapshot", n=1500, seed=2)


@pytest.fixture(scope="module")
def purchases(tmp_path_factory):
    """A purchases-only business: sparse weekly orders, churn = 26 weeks without one."""
    return _trained(tmp_path_factory, purchases_only, "purchases", n=500, seed=4)


def _text(result) -> str:
    """The command's output with rich's line wrapping undone."""
    return " ".join(result.output.split())


def test_validate_model_checks_only_what_the_model_reads(tmp_path):
    prospect_list(tmp_path, n=300, seed=1)
    ok = CliRunner().invoke(app, ["data", "validate", str(tmp_path), "--model", "intent"])
    assert ok.exit_code == 0, ok.output
    assert "49 custom columns" in _text(ok) and "for model intent" in _text(ok)
    lacking = CliRunner().invoke(app, ["data", "validate", str(tmp_path), "--model", "lead_match"])
    assert lacking.exit_code == 1
    assert f"reps: expected reps.parquet or reps.csv in {tmp_path}" in _text(lacking)
    everything = CliRunner().invoke(app, ["data", "validate", str(tmp_path)])
    assert everything.exit_code == 0 and "model intent can be trained" in _text(everything)
    assert "model chs cannot be trained: model 'chs' is observed on usage_weekly or contracts" in _text(everything)


def test_validate_lists_every_ignored_column(tmp_path):
    prospect_list(tmp_path, n=200, seed=1)
    leads = pd.read_csv(tmp_path / "leads.csv").assign(crm_import_batch="b7", legacy_score="3")
    leads.to_csv(tmp_path / "leads.csv", index=False)
    result = CliRunner().invoke(app, ["data", "validate", str(tmp_path), "--model", "intent"])
    assert result.exit_code == 0
    assert "ignored: leads.crm_import_batch, legacy_score" in _text(result)


def test_a_single_snapshot_trains_with_a_grouped_split_tagged_on_the_run(snapshot):
    from mlflow import MlflowClient

    settings, raw, summary, log = snapshot
    assert summary["split"] == "grouped_random"
    run = MlflowClient(tracking_uri=settings.tracking_uri).get_run(summary["run_id"])
    assert run.data.tags["split"] == "grouped_random"
    assert run.data.params["split"] == "grouped_random"
    assert summary["test_roc_auc"] > 0.65 and summary["oracle_test_roc_auc"] > summary["test_roc_auc"] - 0.02
    assert any(line.startswith("  account_profile") for line in log)  # the custom columns' view
    assert settings.export_dir == raw.resolve()


def test_registered_model_is_never_beaten_by_a_logged_baseline_beyond_the_margin(snapshot, purchases):
    from mlflow import MlflowClient

    for settings, _, summary, _ in (snapshot, purchases):
        run = MlflowClient(tracking_uri=settings.tracking_uri).get_run(summary["run_id"])
        m = run.data.metrics
        margin = settings.spec("chs").selection_margin
        chosen = m["valid_roc_auc"]
        for key, value in m.items():
            if key.endswith("_valid_roc_auc") and key.startswith(("baseline_", "candidate_")) and summary["registered"]:
                assert value <= chosen + margin, key
        assert run.data.tags["chosen_model"] == summary["chosen"]


def test_incomplete_outcome_windows_get_a_named_error(snapshot):
    settings, raw, _, _ = snapshot
    result = CliRunner(env={"SALESML_HOME": str(settings.root)}).invoke(
        app, ["--as-of", "2026-03-01", "features", "training-set", "--model", "chs", "--raw", str(raw)])
    assert result.exit_code == 2
    text = _text(result)
    assert "182-day outcome window" in text and "2026-03-01 00:00 UTC (declared export.as_of)" in text
    assert "contracts.snapshot_at 2025-12-29" in text and "churn_events.occurred_at" in text


def _account_frame(settings, account: str) -> pd.DataFrame:
    from features.store import online_features

    return online_features(settings, "chs", [{"account_id": account}])


def test_a_custom_column_is_online_and_moves_the_served_score(snapshot):
    """By materialize: change a planted company-specific column in the export, rebuild, re-materialize."""
    from serving.auth import Caller
    from serving.core import ScoringCore

    settings, raw, _, _ = snapshot
    original = (raw / "accounts.csv").read_bytes()
    accounts = pd.read_csv(raw / "accounts.csv")
    account = accounts.loc[accounts["payment_failures_12m"] == 0, "account_id"].iloc[0]
    online = _account_frame(settings, account)
    assert online["payment_failures_12m"].iloc[0] == 0 and "plan_name" in online
    core = ScoringCore.load(settings)
    before = core.health(Caller("t", "admin"), [account])["results"][0]
    assert before["features"]["payment_failures_12m"] == 0
    # the same features sent as a row (custom categoricals as text) score the same
    direct = core.health(Caller("t", "admin"), rows=[{"account_id": account, **before["features"]}])["results"][0]
    assert direct["score"] == pytest.approx(before["score"]) and isinstance(before["features"]["plan_name"], str)
    accounts.loc[accounts["account_id"] == account, ["payment_failures_12m", "onboarding_completed"]] = [3, False]
    accounts.loc[accounts["account_id"] == account, "days_since_admin_login"] = 200
    accounts.to_csv(raw / "accounts.csv", index=False)
    try:
        _store(settings, raw)
        after = core.health(Caller("t", "admin"), [account])["results"][0]
    finally:  # the module's other tests see the export as generated
        (raw / "accounts.csv").write_bytes(original)
        _store(settings, raw)
    assert after["features"]["payment_failures_12m"] == 3
    assert after["churn_probability"] > before["churn_probability"] + 0.02
    assert after["score"] < before["score"]


def test_a_pushed_custom_measure_moves_the_served_score(purchases):
    """By push: a week with orders for a silent customer reaches the online store and its score."""
    from serving.auth import Caller
    from serving.core import ScoringCore

    settings, raw, _, _ = purchases
    online = pd.read_parquet(settings.feature_data_dir / "behaviour.parquet")
    last = online.sort_values("event_timestamp").groupby("account_id").tail(1)
    silent = last[last["weeks_since_active"] >= 8]
    assert len(silent), "the export must hold customers that went quiet"
    account = silent["account_id"].iloc[0]
    core = ScoringCore.load(settings)
    caller = Caller("t", "admin")
    before = core.health(caller, [account])["results"][0]
    week = (pd.Timestamp(last.loc[last["account_id"] == account, "event_timestamp"].iloc[0])).isoformat()
    core.events(caller, "usage_weekly", [{"account_id": account, "week_start": week, "orders": 9, "revenue": 900.0}])
    after = core.health(caller, [account])["results"][0]
    assert before["features"]["weeks_since_active"] >= 8 and after["features"]["weeks_since_active"] == 0
    assert after["features"]["orders"] == 9
    assert after["churn_probability"] < before["churn_probability"]


def test_purchases_only_business_reaches_its_truth(purchases):
    settings, raw, summary, log = purchases
    assert summary["split"] == "time"
    assert any("empty for every row: behaviour.logins" in line for line in log)
    assert summary["test_roc_auc"] > summary["oracle_test_roc_auc"] - 0.05
    ts = pd.read_csv(raw / "truth" / "truth.csv")
    assert len(ts) > 1000
