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
import subprocess
import tempfile
import urllib.parse
from pathlib import Path

from salesml.processes import ProcessExited, kill_process_group, mlflow_bin, mlflow_server_env, wait_until_ready
from salesml.processes import free_port as _free_port

CHROMIUM = "/usr/bin/chromium"
# The host name the browser opens a local MLflow UI by. MLflow 3.17 opens its Assistant panel (a quarter
# of the window) on the first page load in a browser when the page's host is localhost, 127.0.0.1 or
# ::1, and offers it on those hosts only; a saved view cannot say otherwise (the panel's state lives in
# the browser's localStorage, "mlflow.assistant.panelOpen" and "mlflow.assistant.fab.autoOpenedOnFirstLoad",
# and headless Chromium starts with an empty profile each time). Chromium resolves any *.localhost name
# to the loopback address itself, so the page is the same server under a name that is not one of those.
REVIEW_HOST = "mlflow-review.localhost"


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
    cmd = [mlflow_bin(), "ui", "--backend-store-uri", tracking_uri,
           "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    if artifact_root is not None:
        cmd += ["--artifacts-destination", str(Path(artifact_root).resolve())]
    fd, log_name = tempfile.mkstemp(prefix="mlflow-ui-", suffix=".log")
    log_path = Path(log_name)
    # MLflow refuses a Host header and a state-changing Origin it does not know (DNS rebinding, CSRF):
    # the browser's REVIEW_HOST is added to its defaults (loopback and private addresses).
    env = {**mlflow_server_env(),
           "MLFLOW_SERVER_ALLOWED_HOSTS": ",".join(["localhost", "localhost:*", "127.0.0.1", "127.0.0.1:*",
                                                    "[::1]", "[[]::1]:*", f"{REVIEW_HOST}:{port}"]),
           "MLFLOW_SERVER_CORS_ALLOWED_ORIGINS": f"http://{REVIEW_HOST}:{port}"}
    with os.fdopen(fd, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)
    proc.log_path = log_path  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{port}"
    try:
        if wait_until_ready(proc, f"{url}/health", timeout):
            return proc, url
    except ProcessExited as exc:
        raise RuntimeError(f"mlflow ui exited with {exc.returncode}; log {log_path}:\n{_tail(log_path)}") from None
    tail = _tail(log_path)
    stop(proc, keep_log=True)
    raise RuntimeError(f"mlflow ui did not answer {url}/health within {timeout:.0f} s; log {log_path}:\n{tail}")


def stop(proc: subprocess.Popen, keep_log: bool = False) -> None:
    """SIGTERM the process group of ``proc`` (mlflow ui, uvicorn, its job runner), SIGKILL after 10 s.

    The log of a server started by ``start_mlflow_ui`` is removed unless ``keep_log``.
    """
    kill_process_group(proc.pid, proc=proc)
    log_path = getattr(proc, "log_path", None)
    if log_path is not None and not keep_log:
        Path(log_path).unlink(missing_ok=True)


def experiment_url(base_url: str, experiment_id: str, order_by_metric: str | None = None) -> str:
    """The page a reviewer lands on for one experiment: its training runs in one of the project's
    review views (``training.tracking.review_path``: test ROC-AUC, baseline and truth columns first, the
    run descriptions), newest first, or best ``order_by_metric`` first (``test_roc_auc``: a saved view
    orders by it), nested runs folded under their parent.

    MLflow 3.17 opens ``#/experiments/ID`` alone on the GenAI overview (its workflow switch defaults
    to GenAI), whatever the experiment's type tag, hence the explicit ``workflowType``. A metric no
    view orders by is ordered through the URL, which lists every run flat, parents and children
    alike, in the UI's default columns (an ``orderByKey`` in the URL drops a view's columns).
    """
    from training.tracking import review_path

    base = base_url.rstrip("/")
    path = review_path(experiment_id, order_by_metric or None)
    if path is not None:
        return f"{base}/{path}"
    query = urllib.parse.urlencode({"workflowType": "machine_learning", "orderByKey": f"metrics.`{order_by_metric}`",
                                    "orderByAsc": "false"}, quote_via=urllib.parse.quote)
    return f"{base}/#/experiments/{experiment_id}/runs?{query}"


def chromium_path() -> str:
    """Debian's chromium; a RuntimeError telling to run ``make browser`` when it is missing."""
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    found = shutil.which("chromium")
    if not found:
        raise RuntimeError("chromium is not installed (no /usr/bin/chromium, none on PATH): run `make browser`")
    return found


def browser_url(url: str) -> str:
    """``url`` as the browser opens it: a loopback host (a server ``start_mlflow_ui`` started) as
    ``REVIEW_HOST``, so that MLflow does not open its Assistant panel over the runs table."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost") or parts.port is None:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{REVIEW_HOST}:{parts.port}"))


def _chromium(url: str, action: list[str], width: int, height: int, wait_ms: int) -> subprocess.CompletedProcess:
    url = browser_url(url)
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
