"""The ``mlflow`` command this project starts (``mlflow ui`` for screenshots and tests, ``mlflow
server`` for the team profile): where it is, and the environment it runs in.

Base layer: ``salesml.team`` and ``experiments.ui`` both start it, so it lives below them.
"""

from __future__ import annotations

import os
import shutil
import sys
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
