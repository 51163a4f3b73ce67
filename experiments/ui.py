"""The MLflow UI in a real browser: start ``mlflow ui`` on a tracking store, render its pages with
headless Chromium (Debian's ``chromium``, installed by ``make browser``), take screenshots.

The MLflow UI is a React single-page app that fetches runs through its REST API after the page
loads; Chromium's ``--virtual-time-budget`` keeps the page alive until those fetches and the
render are done (virtual time does not advance while requests are pending), so ``--dump-dom``
and ``--screenshot`` see the finished runs table.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mlflow_bin() -> str:
    here = Path(sys.executable).with_name("mlflow")
    if here.exists():
        return str(here)
    found = shutil.which("mlflow")
    if not found:
        raise RuntimeError("the `mlflow` command is not installed next to this Python nor on PATH")
    return found


def mlflow_server_env() -> dict[str, str]:
    """The environment for an ``mlflow ui`` / ``mlflow server`` this project starts.

    MLflow 3 servers start a GenAI job runner by default (a runner plus eight Huey consumers, each
    a Python process of about 250 MB, polling): on 2 cores ``salesml team up`` took 17-19 s with it
    and 10-12 s without. Nothing here submits such jobs, so it is off unless
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION is set explicitly.
    """
    return {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION":
            os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")}


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start_mlflow_ui(
    tracking_uri: str,
    artifact_root: Path | None,
    port: int | None = None,
    timeout: float = 120,
    workers: int = 1,
) -> tuple[subprocess.Popen, str]:
    """Start ``mlflow ui`` on ``tracking_uri`` in its own session; wait until ``/health`` answers 200.

    ``artifact_root``, when given, is where the server keeps artifacts it is sent itself
    (``--artifacts-destination``; otherwise ``./mlartifacts`` of the current folder). Runs logged
    straight to the store keep their own artifact locations either way. One worker: four (mlflow's
    default) take about three times as long to start on a 2-core machine. Returns the process
    (``proc.log_path`` is its log) and the base URL, e.g. ``http://127.0.0.1:5000``.
    """
    port = port or _free_port()
    cmd = [_mlflow_bin(), "ui", "--backend-store-uri", tracking_uri,
           "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    if artifact_root is not None:
        cmd += ["--artifacts-destination", str(Path(artifact_root).resolve())]
    fd, log_name = tempfile.mkstemp(prefix="mlflow-ui-", suffix=".log")
    log_path = Path(log_name)
    with os.fdopen(fd, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=mlflow_server_env())
    proc.log_path = log_path  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow ui exited with {proc.returncode}; log {log_path}:\n{_tail(log_path)}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    tail = _tail(log_path)
    stop(proc, keep_log=True)
    raise RuntimeError(f"mlflow ui did not answer {url}/health within {timeout:.0f} s; log {log_path}:\n{tail}")


def stop(proc: subprocess.Popen, keep_log: bool = False) -> None:
    """SIGTERM the process group of ``proc`` (mlflow ui, uvicorn, its job runner), SIGKILL after 10 s.

    The log of a server started by ``start_mlflow_ui`` is removed unless ``keep_log``.
    """
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        proc.poll()
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    log_path = getattr(proc, "log_path", None)
    if log_path is not None and not keep_log:
        Path(log_path).unlink(missing_ok=True)


def experiment_url(base_url: str, experiment_id: str, order_by_metric: str | None = None) -> str:
    """The runs table of one experiment in the MLflow 3 UI (``#/experiments/ID`` alone opens its Overview).

    By default nested runs are folded under their parent; ordering by a metric (best first) lists
    every run flat, parents and children alike.
    """
    url = f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs"
    if order_by_metric:
        query = urllib.parse.urlencode({"orderByKey": f"metrics.`{order_by_metric}`", "orderByAsc": "false"},
                                       quote_via=urllib.parse.quote)
        url += f"?{query}"
    return url


def chromium_path() -> str:
    """Debian's chromium; a RuntimeError telling to run ``make browser`` when it is missing."""
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    found = shutil.which("chromium")
    if not found:
        raise RuntimeError("chromium is not installed (no /usr/bin/chromium, none on PATH): run `make browser`")
    return found


def _chromium(url: str, action: list[str], width: int, height: int, wait_ms: int) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="salesml-chromium-") as profile:
        cmd = [chromium_path(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={profile}", f"--window-size={width},{height}",
               f"--virtual-time-budget={wait_ms}", *action, url]
        done = subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL, timeout=wait_ms / 1000 + 120)
    if done.returncode != 0:
        err = "\n".join(done.stderr.decode(errors="replace").splitlines()[-20:])
        raise RuntimeError(f"chromium exited with {done.returncode} on {url}:\n{err}")
    return done


def screenshot(url: str, out_png: Path, width: int = 1600, height: int = 1000, wait_ms: int = 15000) -> Path:
    """Render ``url`` in headless Chromium for ``wait_ms`` of virtual time; save a PNG of the window."""
    out_png = Path(out_png).resolve()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    out_png.unlink(missing_ok=True)
    done = _chromium(url, [f"--screenshot={out_png}"], width, height, wait_ms)
    if not out_png.exists():
        err = "\n".join(done.stderr.decode(errors="replace").splitlines()[-20:])
        raise RuntimeError(f"chromium wrote no screenshot of {url}:\n{err}")
    return out_png


def dump_dom(url: str, wait_ms: int = 15000, width: int = 1600, height: int = 1000) -> str:
    """The DOM of ``url`` as rendered by headless Chromium after ``wait_ms`` of virtual time."""
    return _chromium(url, ["--dump-dom"], width, height, wait_ms).stdout.decode(errors="replace")
