"""Quiet and legible output (issue 22 item 12), the mechanisms: Python warnings stay off after a
library resets the filters, MLflow's artifact bars follow the settings, rich output is wide off a
terminal. That real commands (make demo's train, score and serve-demo, every README command, the
service's log) print no library line unless ``--verbose``:
``tests/team/test_readme_commands.py::test_commands_print_no_library_noise_unless_verbose``.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys


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
