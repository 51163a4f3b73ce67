"""The background servers this project starts and stops: the ``mlflow`` command (``mlflow ui`` for
screenshots and tests, ``mlflow server`` for the team profile), where it is and the environment it
runs in; waiting until a started server answers; stopping a server's whole process group.

Base layer: ``salesml.team``, ``serving.runner`` and ``experiments.ui`` all start servers, so the
one way to wait for them and to stop them lives below all three.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def mlflow_bin() -> str:
    """The ``mlflow`` command next to this Python (the project's venv), else the one on PATH."""
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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str, timeout: float = 2.0) -> bool:
    """True when a GET of ``url`` answers 200 within ``timeout`` seconds."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


class ProcessExited(RuntimeError):
    """The server process exited before it answered."""

    def __init__(self, returncode: int | None):
        super().__init__(f"exited with {returncode}")
        self.returncode = returncode


def wait_until_ready(proc: subprocess.Popen, url: str, timeout: float, interval: float = 0.5) -> bool:
    """Poll ``url`` until it answers 200 (True) or ``timeout`` seconds pass (False).

    Raises ``ProcessExited`` as soon as ``proc``, the server behind ``url``, has exited: a server
    that died will not answer, and its exit status says more than a timeout would.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ProcessExited(proc.returncode)
        if answers(url):
            return True
        time.sleep(interval)
    return False


def kill_process_group(pid: int, grace: float = 10.0, proc: subprocess.Popen | None = None) -> bool:
    """SIGTERM the process group ``pid`` leads, SIGKILL after ``grace`` seconds; False if it was gone.

    Servers are started with ``start_new_session=True``, so the group holds the server and every
    worker it forked. ``proc``, when this process started the leader, is reaped as the group
    winds down (a zombie leader would keep the group alive to ``killpg(pid, 0)``); without it a
    leader that is this process's child is reaped all the same (``serving.runner.stop`` has only
    the pid: its exited server waited out the whole grace, then took a SIGKILL it no longer needed).
    """
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        gone = True
    else:
        gone = False
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if proc is not None:
                proc.poll()
            else:
                _reap(pid)
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if proc is not None:
        proc.wait()
    return not gone


def _reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is an exited child of this process (else nothing)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child, or reaped already
        pass
