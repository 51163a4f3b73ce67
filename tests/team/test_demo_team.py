"""``make demo`` under SALESML_PROFILE=team: Redis, PostgreSQL (Feast registry, MLflow, Optuna), the
MLflow server and Dask, end to end; then the running service's /health reads Redis."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest

from serving.runner import post
from training import tracking

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.mlflow]
REPO = Path(__file__).resolve().parents[2]


def test_demo_runs_on_the_team_services(team_demo):
    import sqlalchemy

    settings = team_demo["settings"]
    assert settings.tracking_uri.startswith("http://127.0.0.1:")
    out = team_demo["stdout"]
    assert "mlflow server started" in out or "mlflow server already running" in out
    assert "HTTP 200" in out  # serve-demo called every endpoint

    client = tracking.client(settings)
    for name in ("intent", "lead_match", "chs"):
        champion = client.get_model_version_by_alias(name, "champion")
        run = client.get_run(champion.run_id)
        assert run.info.status == "FINISHED"
        assert run.data.tags.get("engine") == "dask", (name, run.data.tags.get("engine"))
        # Artifacts went through the server's proxy into its artifact root, not the client's disk.
        assert champion.source.startswith(("models:/", "mlflow-artifacts:")), champion.source

    engine = sqlalchemy.create_engine(settings.mlflow_backend)
    with engine.connect() as con:
        names = set(pd.read_sql("SELECT name FROM registered_models", con)["name"])
    engine.dispose()
    assert {"intent", "lead_match", "chs"} <= names

    engine = sqlalchemy.create_engine(settings.feast_registry)
    with engine.connect() as con:
        views = set(pd.read_sql("SELECT feature_view_name FROM feature_views", con)["feature_view_name"])
    engine.dispose()
    assert {"behaviour", "contract", "relationship", "lead_activity"} <= views


def test_health_answers_from_redis(team_demo):
    from features.store import open_store

    env = team_demo["env"]
    settings = team_demo["settings"]
    store = open_store(settings)
    assert type(store._get_provider().online_store).__name__ == "RedisOnlineStore"

    made = subprocess.run([str(REPO / ".venv/bin/salesml"), "keys", "add", "--role", "admin", "--name", "t"],
                          cwd=REPO, env=env, capture_output=True, text=True, check=True)
    key = made.stdout.strip().splitlines()[-1]
    account = pd.read_parquet(settings.raw_dir / "accounts.parquet")["account_id"].iloc[0]

    status, body = post(team_demo["port"], "/health", {"account_ids": [account]}, key)
    assert status == 200, body
    served = body["results"][0]
    columns = ["logins", "active_users", "api_calls"]
    online = store.get_online_features(features=[f"behaviour:{c}" for c in columns],
                                       entity_rows=[{"account_id": account}]).to_df()
    assert {c: served["features"][c] for c in columns} == pytest.approx(online.iloc[0][columns].to_dict())

    # Overwrite the account's behaviour row in Redis: the next answer must show it.
    names = [f.name for f in store.get_feature_view("behaviour").features]
    row = store.get_online_features(features=[f"behaviour:{n}" for n in names],
                                    entity_rows=[{"account_id": account}]).to_df()
    row["api_calls"] = 123456.0
    row["event_timestamp"] = pd.Timestamp.now(tz="UTC")
    store.write_to_online_store("behaviour", row)
    status, body = post(team_demo["port"], "/health", {"account_ids": [account]}, key)
    assert status == 200, body
    assert body["results"][0]["features"]["api_calls"] == 123456.0
