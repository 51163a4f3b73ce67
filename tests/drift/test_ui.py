"""`salesml drift ui` for real: the Evidently UI on the drift workspace, read over its HTTP API, then stopped."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.evidently]
STARTUP_S = 120  # the UI imports Evidently's service stack: ~15 s on 2 cores


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def workspace_home(tmp_path):
    """SALESML_HOME whose Evidently workspace holds one drift snapshot in project salesml-chs."""
    from evidently.ui.workspace import Workspace

    from drift.evidently_check import DriftConfig, add_to_workspace, check

    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"api_calls": rng.lognormal(7, 0.7, 600), "logins": rng.poisson(40, 600)})
    current = pd.DataFrame({"api_calls": rng.lognormal(7, 0.7, 600) * 1.8, "logins": rng.poisson(40, 600)})
    result = check(reference, current, ["api_calls", "logins"], DriftConfig(prediction_column=None))
    project_id = add_to_workspace(result, tmp_path / "evidently", "salesml-chs")
    [snapshot_id] = Workspace(str(tmp_path / "evidently")).list_runs(project_id)
    return tmp_path, project_id, str(snapshot_id)


def test_drift_ui_serves_the_workspace_snapshots_and_stops(workspace_home):
    home, project_id, snapshot_id = workspace_home
    port = _free_port()
    salesml = str(Path(sys.executable).with_name("salesml"))
    log = (home / "ui.log").open("w")
    # DO_NOT_TRACK: no usage telemetry from the Evidently UI (it would POST to Evidently's server).
    env = {**os.environ, "SALESML_HOME": str(home), "DO_NOT_TRACK": "1"}
    proc = subprocess.Popen([salesml, "drift", "ui", "--port", str(port)], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}/api/projects"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            assert proc.poll() is None, f"the UI exited ({proc.returncode}): {(home / 'ui.log').read_text()[-2000:]}"
            try:
                status, body = _get(base)
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, f"no UI after {STARTUP_S} s: {(home / 'ui.log').read_text()}"
                time.sleep(0.5)
        assert status == 200
        projects = json.loads(body)
        assert [(p["id"], p["name"]) for p in projects] == [(project_id, "salesml-chs")]

        status, body = _get(f"{base}/{project_id}/snapshots")
        snapshots = json.loads(body)
        assert status == 200 and [s["id"] for s in snapshots] == [snapshot_id]
        assert snapshots[0]["name"] == "drift check"

        status, body = _get(f"{base}/{project_id}/{snapshot_id}/download?report_format=json")
        report = json.loads(body)
        drifts = {m["config"]["column"]: m for m in report["metrics"]
                  if m["config"]["type"].endswith(":ValueDrift")}
        assert status == 200 and set(drifts) == {"api_calls", "logins"}
        assert {m["config"]["method"] for m in drifts.values()} == {"ks"}
        assert drifts["api_calls"]["value"] < 1e-10 < 0.5 < drifts["logins"]["value"]  # KS p-values
        failed = {t["metric_config"]["metric_id"] for t in report["tests"] if t["status"] == "FAIL"}
        assert drifts["api_calls"]["id"] in failed and drifts["logins"]["id"] not in failed

        status, body = _get(f"http://127.0.0.1:{port}/")
        assert status == 200 and b"<html" in body.lower()  # the UI's page itself
        assert "Traceback" not in (home / "ui.log").read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # `salesml drift ui` execs into `evidently ui`: one process group
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()
    # nothing left behind: no process of the group, nothing listening on the port
    deadline = time.monotonic() + 10
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _group_alive(proc.pid)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
