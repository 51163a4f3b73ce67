"""The team profile end to end: ``make demo`` under SALESML_PROFILE=team, once per session."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# --truth-samples 0: no team test reads the simulator's Monte Carlo churn truth
TEAM_DEMO_ARGS = "--accounts 200 --leads 900 --reps 12 --weeks 70 --seed 5 --truth-samples 0"


@pytest.fixture(scope="session")
def team_demo(team_env):
    """Run ``make demo`` (small) on Redis + PostgreSQL + the MLflow server + Dask; yield its result
    (the environment, the service's port, the team ``Settings`` and the demo's output).

    The demo leaves the scoring service running in the background; it is stopped afterwards.
    """
    from experiments.ui import _free_port
    from salesml.settings import Settings

    port = _free_port()
    # Nothing of this process's SALESML_* / MLFLOW_* settings (other tests' stores, the tracking and
    # registry URIs mlflow.set_*_uri exported) reaches the team commands: they see the profile only.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("SALESML_", "MLFLOW_"))}
    env = {**inherited, **team_env, "DEMO_ARGS": TEAM_DEMO_ARGS, "SALESML_SERVE_PORT": str(port)}
    proc = subprocess.run(["make", "demo"], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    try:
        assert proc.returncode == 0, (f"make demo failed ({proc.returncode}):\n"
                                      f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
        keys = ("home", "profile", "team_db_prefix", "feast_project", "mlflow_server_port")
        settings = Settings(**{k: team_env[f"SALESML_{k.upper()}"] for k in keys})  # what the commands see
        yield {"env": env, "port": port, "settings": settings, "stdout": proc.stdout, "stderr": proc.stderr}
    finally:
        stop = subprocess.run([str(REPO / ".venv/bin/salesml"), "serve-stop"], cwd=REPO, env=env, capture_output=True,
                              text=True)
        assert stop.returncode == 0 and "Traceback" not in stop.stderr, stop.stderr[-3000:]
