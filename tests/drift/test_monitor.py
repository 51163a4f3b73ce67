"""`salesml drift check` end to end: a trained model's reference set, served traffic in the
prediction log (through the scoring core), Evidently reports, exit codes, alerts, webhook."""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pandas as pd
import pytest
from typer.testing import CliRunner

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SMALL = dict(accounts=300, leads=300, reps=12, weeks=60, seed=13)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from features.store import apply, build_feature_files, materialize
    from salesml.settings import Settings
    from salesml.simulator import generate
    from training import pipeline

    settings = Settings(home=tmp_path_factory.mktemp("drift"))
    settings.ensure_dirs()
    generate(settings.raw_dir, **SMALL)
    build_feature_files(settings, settings.raw_dir, progress=lambda _: None)
    apply(settings, progress=lambda _: None)
    materialize(settings)
    for name in ("chs", "intent", "lead_match"):  # the scoring core serves all three
        pipeline.run(settings, name, seed=3, raw_dir=settings.raw_dir, log=lambda _: None)
    return settings


def _serve_rows(settings, rows: pd.DataFrame) -> None:
    """Score feature rows through the real scoring core, which logs them like served traffic."""
    from serving.auth import Caller
    from serving.core import ScoringCore

    core = ScoringCore.load(settings)
    records = rows.astype(object).where(rows.notna(), None).to_dict("records")
    for s in range(0, len(records), 500):
        core.health(Caller("drift-test", "csm"), rows=records[s:s + 500])


def _reference(settings):
    from training import tracking

    tracking.configure(settings)
    return tracking.load_reference("chs", "1")


def _cli(settings, *args):
    from salesml.cli import app

    return CliRunner().invoke(app, ["drift", "check", "--model", "chs", *args],
                              env={"SALESML_HOME": str(settings.root)})


def test_every_version_carries_its_reference_set(env):
    ref = _reference(env)
    assert {"prediction", "label", "event_timestamp", "api_calls", "communication_quality_90d"} <= set(ref.columns)
    assert ref["prediction"].between(0, 1).all() and len(ref) > 100


def test_bad_inputs_have_distinct_exit_codes(env):
    r = _cli(env, "--window", "7d")
    assert r.exit_code == 4 and "no prediction log" in r.output or "empty" in r.output
    r = _cli(env, "--window", "seven days")
    assert r.exit_code in (2, 4)


def test_same_distribution_no_drift_then_shifted_columns_flagged(env):
    ref = _reference(env)
    feats = ref.drop(columns=["event_timestamp", "label", "prediction"])
    _serve_rows(env, feats.sample(frac=1.0, random_state=1).reset_index(drop=True))  # the training inputs again
    r = _cli(env, "--window", "1h")
    assert r.exit_code == 0, r.output
    assert "no drift" in r.output

    shifted = feats.sample(frac=1.0, random_state=2).reset_index(drop=True)
    shifted["api_calls"] = shifted["api_calls"] * 1.8  # the API-client logging change
    shifted["logins"] = shifted["logins"] * 1.6
    env_home = env.root
    (env_home / "serving" / "predictions.db").unlink()  # a fresh window with only shifted traffic
    for suffix in ("-wal", "-shm"):
        p = env_home / "serving" / f"predictions.db{suffix}"
        if p.exists():
            p.unlink()
    _serve_rows(env, shifted)
    r = _cli(env, "--window", "1h")
    assert r.exit_code == 3, r.output
    summary = json.loads(next((env.reports_dir / "drift" / "chs").glob("*.json")).read_text())
    alerts = (env.root / "drift" / "alerts.jsonl").read_text().strip().splitlines()
    assert json.loads(alerts[-1])["drift"] is True
    flagged = set(json.loads(alerts[-1])["drifted_columns"])
    assert {"api_calls", "logins"} <= flagged
    assert not flagged & {"communication_quality_90d", "sla_gap", "days_to_renewal", "nps_last"}
    assert summary  # the JSON summary was written


def test_alert_is_posted_to_a_webhook(env):
    from drift.monitor import alert

    got = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings = env.model_copy(update={"drift_webhook_url": f"http://127.0.0.1:{server.server_port}/hook"})
        body = alert(settings, "chs", {"drift": True, "drifted_columns": ["api_calls"], "version": "1"})
    finally:
        server.shutdown()
    assert body["webhook_status"] == 204
    assert got and got[0]["model"] == "chs" and got[0]["drifted_columns"] == ["api_calls"]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))


def test_performance_drift_when_the_label_mechanism_changes(env):
    """Same inputs, but outcomes no longer follow them: only the performance check can see it."""
    from datetime import datetime, timedelta, timezone

    import numpy as np

    from serving.predlog import PredictionLog
    from training.recalibrate_run import load_health_model

    ref = _reference(env)
    model = load_health_model(env)
    feats = ref.drop(columns=["event_timestamp", "label", "prediction"]).reset_index(drop=True)  # the very inputs
    p = model.predict_proba(feats)
    rng = np.random.default_rng(5)
    t0 = datetime.now(timezone.utc) - timedelta(days=400)  # outcomes have matured
    home = PredictionLog(env.root / "serving" / "perf.db")
    preds, outs = [], []
    for i, row in feats.iterrows():
        acc = f"P{i:06d}"
        preds.append({"request_id": f"perf-{i}", "ts": t0 + timedelta(minutes=i), "role": "csm", "api_key_id": "t",
                      "endpoint": "health", "entity_type": "account", "entity_id": acc, "model": "chs",
                      "version": "1", "variant": "champion", "features": row.to_dict(),
                      "outputs": {"churn_probability": float(p[i]), "score": 50.0}})
        if rng.random() < ref["label"].mean():  # churn now unrelated to the inputs
            outs.append({"entity_type": "account", "entity_id": acc, "outcome": "churned", "value": True,
                         "occurred_at": t0 + timedelta(days=30, minutes=i)})
    home.append_predictions(preds)
    home.append_outcomes(outs)
    settings = env.model_copy(update={"prediction_log": env.root / "serving" / "perf.db"})
    from drift.monitor import Window, run_check

    code, summary = run_check(settings, "chs", Window(t0 - timedelta(days=1), t0 + timedelta(days=2)),
                              log_fn=lambda _: None)
    cols = json.loads(open(summary["summary"]).read())
    assert summary["drifted_columns"] == [] and not summary["prediction_drift"], json.dumps(cols)[:3000]
    assert summary["auc_drop"] > 0.05 and summary["performance_drift"] and code == 3


def test_retrain_on_drift_registers_a_challenger_and_leaves_the_champion(env):
    """Runs on the drifted window the shifted-columns test above leaves in the log."""
    from datetime import datetime, timedelta, timezone

    from mlflow import MlflowClient

    from drift.monitor import Window, run_check

    now = datetime.now(timezone.utc)
    champion = MlflowClient().get_model_version_by_alias("chs", "champion").version
    code, summary = run_check(env, "chs", Window(now - timedelta(hours=1), now), retrain=True, log_fn=lambda _: None)
    assert code == 3 and summary["retrained"]["alias"] == "challenger"
    client = MlflowClient()
    assert client.get_model_version_by_alias("chs", "champion").version == champion
    assert client.get_model_version_by_alias("chs", "challenger").version == summary["retrained"]["version"]
