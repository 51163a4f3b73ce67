"""Quiet and legible output (issue 22 item 12): what a user sees from ``salesml`` is the project's own
lines, as wide as they are. No MLflow progress bar ("Downloading artifacts"), registration notice
("Successfully registered model ...", "Created version ...") or Python warning (pydantic deprecations in
the service log) unless ``--verbose``; rich output not wrapped at 80 columns when it goes to no terminal.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

# What libraries print unasked: MLflow's artifact bars and registration notices, Python warnings.
NOISE = ("Downloading artifacts", "Successfully registered model", "Created version",
         "already exists. Creating a new version", "Warning:", "DeprecationWarning", "PydanticDeprecated")
SMALL = ["--accounts", "150", "--leads", "600", "--reps", "12", "--weeks", "60", "--seed", "11"]  # tests/conftest.py

# Runs each argv with Typer's runner in one process (libraries imported once), one JSON line per command.
RUNNER = """
import json, sys
from typer.testing import CliRunner
from salesml.cli import app, base
for argv in json.loads(sys.argv[1]):
    base.overrides.clear()
    r = CliRunner().invoke(app, argv, catch_exceptions=True)
    print(json.dumps({"argv": argv, "code": r.exit_code, "output": r.output,
                      "error": None if r.exception is None or isinstance(r.exception, SystemExit)
                      else repr(r.exception)}), flush=True)
"""


def _noise(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(n in line for n in NOISE)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A small home of its own (export, features, store); the server a test starts is stopped after."""
    root = tmp_path_factory.mktemp("quiet-home")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SALESML_", "MLFLOW_", "PYTHONWARNINGS", "COLUMNS"))}
    env["SALESML_HOME"] = str(root)
    yield root, env
    salesml = str(Path(sys.executable).with_name("salesml"))
    subprocess.run([salesml, "serve-stop"], env=env, capture_output=True, timeout=60)


def _run(env: dict, plan: list[list[str]]) -> list[dict]:
    done = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(plan)], env=env, capture_output=True,
                          text=True, timeout=600)
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(results) == len(plan), f"runner stopped ({done.returncode}): {done.stderr[-3000:]}"
    for r in results:
        assert r["error"] is None, (r["argv"], r["error"], r["output"][-2000:])
    return results


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.mlflow
def test_train_drift_and_serve_print_no_library_noise_unless_verbose(home):
    root, env = home
    port = str(_free_port())
    plan = [["data", "generate", *SMALL, "--truth-samples", "0", "--out", str(root / "data" / "raw")],
            ["features", "build"], ["features", "apply"], ["features", "materialize"],
            ["train", "intent"],
            ["drift", "check", "--model", "intent"],
            ["serve-demo", "--port", port], ["serve-stop"],
            ["--verbose", "train", "intent"]]
    results = _run(env, plan)
    by_cmd = {" ".join(r["argv"][:2]): r for r in results}
    train, drift = by_cmd["train intent"], by_cmd["drift check"]
    assert train["code"] == 0 and "registered version 1" in train["output"], train["output"][-2000:]
    assert drift["code"] in (0, 3, 4), drift["output"][-2000:]  # 4: the window holds no served row yet
    for r in results[:-1]:
        assert not _noise(r["output"]), (r["argv"], _noise(r["output"]))
    # the service's own log: no artifact bar, no pydantic deprecation per request
    log = (root / "serving" / "server.log").read_text()
    assert "Successfully" not in log and not _noise(log), _noise(log)[:5]
    # off a terminal, a long line stays one line (rich wrapped at 80 columns)
    long = [line for line in train["output"].splitlines() if "outcome windows of" in line]
    assert long and len(long[0]) > 100 and "complete by the export end" in long[0], long
    # --verbose: MLflow's notices are shown again
    verbose = results[-1]
    assert verbose["code"] == 0, verbose["output"][-2000:]
    assert "Created version '2' of model 'intent'" in verbose["output"], verbose["output"][-2000:]


def _warning_shown(verbose: bool) -> str:
    """stderr of a process that applies ``library_output`` and then, as Feast does when imported, resets
    the warning filters before a library warns."""
    code = ("import warnings\n"
            "from salesml.settings import Settings\n"
            "from training.tracking import library_output\n"
            f"library_output(Settings(verbose={verbose}))\n"
            "warnings.simplefilter('once', DeprecationWarning)\n"
            "warnings.warn('model_fields on the instance is deprecated', DeprecationWarning)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SALESML_", "PYTHONWARNINGS"))}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120, check=True).stderr


def test_library_warnings_stay_off_after_a_library_resets_the_filters():
    assert "deprecated" not in _warning_shown(False)
    assert "model_fields on the instance is deprecated" in _warning_shown(True)


def test_library_output_switches_mlflow_artifact_bars(monkeypatch):
    from salesml.settings import Settings
    from training.tracking import library_output

    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "true")
    import logging

    held = logging.getLogger("py.warnings").level
    try:
        library_output(Settings(verbose=False))
        assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"
        library_output(Settings(verbose=True))
        assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "true"
    finally:
        logging.captureWarnings(False)
        logging.getLogger("py.warnings").setLevel(held)


def test_output_off_a_terminal_is_wide_and_columns_still_wins(monkeypatch):
    from salesml.cli import base

    monkeypatch.delenv("COLUMNS", raising=False)
    piped = base._Console(file=io.StringIO())
    assert piped.width == base.WIDE >= 200
    text = "x" * 50 + " " + "y" * 150
    piped.print(text)
    assert piped.file.getvalue().rstrip("\n") == text  # one line, not wrapped at 80
    assert base.out.width == base.WIDE and base.console.width == base.WIDE  # pytest's output is no terminal
    monkeypatch.setenv("COLUMNS", "97")
    assert base._Console(file=io.StringIO()).width == 97
