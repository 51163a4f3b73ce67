"""The team profile end to end: ``make demo`` under SALESML_PROFILE=team, once per session."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TEAM_DEMO_ARGS = "--accounts 200 --leads 900 --reps 12 --weeks 70 --seed 5"


@pytest.fixture(scope="session")
def team_demo(team_env):
    """Run ``make demo`` (small) on Redis + PostgreSQL + the MLflow server + Dask; yield its result.

    The demo leaves the scoring service running in the background; it is stopped afterwards.
    """
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, **team_env, "DEMO_ARGS": TEAM_DEMO_ARGS, "SALESML_SERVE_PORT": str(port)}
    proc = subprocess.run(["make", "demo"], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    try:
        assert proc.returncode == 0, (f"make demo failed ({proc.returncode}):\n"
                                      f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
        yield {"env": env, "port": port, "stdout": proc.stdout, "stderr": proc.stderr}
    finally:
        subprocess.run([str(REPO / ".venv/bin/salesml"), "serve-stop"], cwd=REPO, env=env, capture_output=True)
