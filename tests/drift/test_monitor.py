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

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.evidently, pytest.mark.mlflow]
# truth_samples=0: nothing here reads the simulator's Monte Carlo churn truth (3.0 s -> 0.1 s to generate)
SMALL = dict(accounts=300, leads=300, reps=12, weeks=60, seed=13, truth_samples=0)


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
    """Score feature rows through the real scoring core and log them as the champion's served traffic.

    The core logs a ``rows=`` score as ``direct`` (features a caller made up, left out of drift windows);
    these rows stand for accounts scored by id, so the test logs the core's own records as an id request
    would have them."""
    from serving.auth import Caller
    from serving.core import ScoringCore

    core = ScoringCore.load(settings)
    records = rows.astype(object).where(rows.notna(), None).to_dict("records")
    for s in range(0, len(records), 500):
        rid = core.health(Caller("drift-test", "csm"), rows=records[s:s + 500])["request_id"]
        logged = core.log.predictions(model="chs")
        mine = logged[logged["request_id"] == rid]
        assert (mine["variant"] == "direct").all() and len(mine) == len(records[s:s + 500])
        core.log.append_predictions([{**r, "request_id": f"{rid}-served", "variant": "champion"}
                                     for r in mine.to_dict("records")])


def _reference(settings, held_out: bool = False):
    """The version's reference rows (``held_out``: only those the model was not fitted on, which is what new
    traffic is like to the model; its scores on its own training rows are sharper and read as prediction drift)."""
    from training import tracking

    tracking.configure(settings)
    ref = tracking.load_reference("chs", "1", settings)
    return (ref[~ref["in_sample"]] if held_out else ref).drop(columns="in_sample").reset_index(drop=True)


# The planted-shift tests below check the significance tests and what follows them (exit code, alert,
# retraining) with the seasonal yardstick off: on this 150-account home a reference quarter holds ~75 rows,
# and the yardstick (tests/drift/test_time_and_types.py, test_stable_export.py) excuses KS distances up to
# ~0.23 there, more than logins x 1.6 moves (0.17).
NO_YARDSTICK = {"drift_period_min_rows": 10**6}


def _cli(settings, *args, log=None, yardstick: bool = True):
    from salesml.cli import app

    env = {"SALESML_HOME": str(settings.root), **({"SALESML_PREDICTION_LOG": str(log)} if log else {}),
           **({} if yardstick else {f"SALESML_{k.upper()}": str(v) for k, v in NO_YARDSTICK.items()})}
    return CliRunner().invoke(app, ["drift", "check", *(() if "--model" in args else ("--model", "chs")), *args],
                              env=env)


def _log_served(path, rows: pd.DataFrame, version: str, start) -> None:
    """Append reference-like ``rows`` (features and ``prediction``) to a prediction log as chs predictions
    of ``version``, one account each, a second apart from ``start``."""
    from datetime import timedelta

    from serving.predlog import PredictionLog

    features = rows.drop(columns="prediction")
    records = features.astype(object).where(features.notna(), None).to_dict("records")
    log = PredictionLog(path)
    try:
        log.append_predictions([
            {"request_id": f"{path.stem}-{version}-{i}", "ts": start + timedelta(seconds=i), "role": "csm",
             "api_key_id": "t", "endpoint": "health", "entity_type": "account", "entity_id": f"C{i:06d}",
             "model": "chs", "version": version, "variant": "champion", "features": row,
             "outputs": {"churn_probability": float(p), "score": 100 * (1 - float(p))}}
            for i, (row, p) in enumerate(zip(records, rows["prediction"]))])
    finally:
        log.close()


def _clean_exit(result, code: int, *phrases: str) -> None:
    """Exit ``code`` through the CLI's own error path: the phrases in the output, no traceback."""
    text = " ".join(result.output.split())  # the console wraps long lines
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output and "Error" not in result.output
    for phrase in phrases:
        assert phrase in text, result.output


def test_every_version_carries_its_reference_set(env):
    ref = _reference(env)
    assert {"prediction", "label", "event_timestamp", "api_calls", "communication_quality_90d"} <= set(ref.columns)
    assert ref["prediction"].between(0, 1).all() and len(ref) > 100


def test_bad_inputs_have_distinct_exit_codes(env, tmp_path):
    """Each bad input through `salesml drift check`: its own exit code, a clear message, no traceback."""
    from datetime import datetime, timedelta, timezone

    import mlflow
    from mlflow import MlflowClient

    from training import tracking

    ref = _reference(env, held_out=True)
    feats = ref.drop(columns=["event_timestamp", "label"]).sample(min(300, len(ref)), random_state=4)
    start = datetime.now(timezone.utc) - timedelta(hours=2)
    window = ("--from", (start - timedelta(minutes=5)).isoformat(), "--to", datetime.now(timezone.utc).isoformat())

    # 4: no prediction log at all, and a log with nothing in the window
    _clean_exit(_cli(env, *window, log=tmp_path / "none.db"), 4, "no prediction log at")
    _log_served(tmp_path / "served.db", feats, "1", start)
    _clean_exit(_cli(env, "--from", "2001-01-01", "--to", "2001-01-08", log=tmp_path / "served.db"), 4,
                "no chs predictions between 2001-01-01 00:00 and 2001-01-08 00:00 UTC: the window is empty")

    # 5: the served rows lack features the serving version was trained on
    _log_served(tmp_path / "narrow.db", feats.drop(columns=["api_calls", "logins"]), "1", start)
    _clean_exit(_cli(env, *window, log=tmp_path / "narrow.db"), 5,
                "the window lacks feature column(s)", "api_calls", "logins", "that version 1 was trained on")

    # 6: the serving version has no reference set: a registered version whose run never logged one ...
    tracking.configure(env)
    with mlflow.start_run(run_name="no-reference") as run:
        mlflow.log_param("note", "registered without a reference set")
    bare = MlflowClient().create_model_version("chs", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    _log_served(tmp_path / "bare.db", feats, str(bare.version), start)
    _clean_exit(_cli(env, *window, log=tmp_path / "bare.db"), 6,
                f"model chs version {bare.version} has no reference set", "retrain it to record one")
    # ... and a version the registry does not know
    _log_served(tmp_path / "unknown.db", feats, "999", start)
    _clean_exit(_cli(env, *window, log=tmp_path / "unknown.db"), 6,
                "version 999 of model chs served the window but is not in the model registry")

    # 2: anything else that is wrong with the request
    _clean_exit(_cli(env, "--window", "seven days", log=tmp_path / "served.db"), 2,
                "--window must look like 7d or 36h, got 'seven days'")
    _clean_exit(_cli(env, "--model", "nope", *window, log=tmp_path / "served.db"), 2,
                "unknown model 'nope': expected one of intent, lead_match, chs")
    # the good window of the same log goes through: rows drawn from the reference itself, so no drift
    ok = _cli(env, *window, log=tmp_path / "served.db")
    assert ok.exit_code == 0 and "no drift" in ok.output, ok.output


def test_served_window_counts_each_scored_entity_once(tmp_path):
    """A console re-scoring one account must not weigh it several times: the tests assume independent rows."""
    from datetime import datetime, timedelta, timezone

    from drift.monitor import Window, served_window
    from serving.predlog import PredictionLog

    t0 = datetime.now(timezone.utc) - timedelta(hours=1)
    scored = [("A1", 1.0), ("A2", 5.0), ("A1", 2.0), ("nan", 7.0), ("A1", 3.0), ("nan", 7.0)]
    log = PredictionLog(tmp_path / "p.db")
    log.append_predictions([
        {"request_id": f"r{i}", "ts": t0 + timedelta(minutes=i), "role": "csm", "api_key_id": "t",
         "endpoint": "health", "entity_type": "account", "entity_id": entity, "model": "chs", "version": "1",
         "variant": "champion", "features": {"api_calls": value}, "outputs": {"churn_probability": 0.1}}
        for i, (entity, value) in enumerate(scored)])
    frame, version = served_window(log, "chs", Window(t0 - timedelta(minutes=1), t0 + timedelta(minutes=30)),
                                   "out_churn_probability")
    log.close()
    assert version == "1"
    # A1 once, with its latest features; rows scored without an id all count
    assert sorted(zip(frame["entity_id"], frame["api_calls"])) == [("A1", 3.0), ("A2", 5.0), ("nan", 7.0), ("nan", 7.0)]
    assert set(frame.columns) >= {"prediction", "api_calls"}


def test_same_distribution_no_drift_then_shifted_columns_flagged(env):
    held_out = _reference(env, held_out=True).drop(columns=["event_timestamp", "label", "prediction"])
    _serve_rows(env, held_out.sample(frac=1.0, random_state=1).reset_index(drop=True))  # inputs new to the model
    feats = _reference(env).drop(columns=["event_timestamp", "label", "prediction"])
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
    r = _cli(env, "--window", "1h", yardstick=False)
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



def test_performance_drift_when_the_label_mechanism_changes(env):
    """Same inputs, but outcomes no longer follow them: only the performance check can see it."""
    from datetime import datetime, timedelta, timezone

    import numpy as np

    from serving.predlog import PredictionLog
    from training.recalibrate_run import load_health_model

    ref = _reference(env, held_out=True)
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


def test_retrain_on_drift_registers_a_challenger_and_leaves_the_champion(env, tmp_path):
    """A drifted window of its own (the champion's reference inputs, two columns shifted as in the
    test above), in a log of its own: retraining on it registers a challenger, the champion stays."""
    from datetime import datetime, timedelta, timezone

    from drift.monitor import Window, run_check
    from training import tracking

    client = tracking.client(env)
    champion = client.get_model_version_by_alias("chs", "champion").version
    ref = _reference(env)
    shifted = ref.drop(columns=["event_timestamp", "label"]).reset_index(drop=True)
    shifted["api_calls"] = shifted["api_calls"] * 1.8
    shifted["logins"] = shifted["logins"] * 1.6
    now = datetime.now(timezone.utc)
    start = now - timedelta(seconds=len(shifted) + 60)  # _log_served spaces the rows a second apart
    _log_served(tmp_path / "drifted.db", shifted, champion, start)
    settings = env.model_copy(update={"prediction_log": tmp_path / "drifted.db", **NO_YARDSTICK})
    code, summary = run_check(settings, "chs", Window(start - timedelta(minutes=1), now), retrain=True,
                              log_fn=lambda _: None)
    assert code == 3 and {"api_calls", "logins"} <= set(summary["drifted_columns"])
    assert summary["retrained"]["alias"] == "challenger"
    assert client.get_model_version_by_alias("chs", "champion").version == champion
    assert client.get_model_version_by_alias("chs", "challenger").version == summary["retrained"]["version"]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
