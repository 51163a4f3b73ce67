"""A test that runs a command in-process leaves the environment as it found it (tests/conftest.py).

Left behind, what ``salesml.cli.base.quiet`` sets (PYTHONWARNINGS=ignore, MLflow's log level and progress
bar) reached every later test of the session and every server those tests started."""

from __future__ import annotations

import os

import pytest

_before: dict[str, str | None] = {}  # the variables quiet() sets, as the first test found them


def test_an_in_process_command_sets_the_quiet_environment():
    from typer.testing import CliRunner

    from salesml.cli import app
    from salesml.cli.base import QUIET_ENV

    if "PYTHONWARNINGS" in os.environ or os.environ.get("SALESML_VERBOSE"):
        pytest.skip("the environment of this run sets PYTHONWARNINGS or SALESML_VERBOSE itself")
    _before.update({name: os.environ.get(name) for name in QUIET_ENV})
    CliRunner().invoke(app, ["features", "training-set", "--model", "nope"])
    assert os.environ.get("PYTHONWARNINGS") == "ignore"  # what the servers a command starts inherit


def test_the_next_test_finds_the_environment_as_it_was():
    if not _before:
        pytest.skip("runs after the test above")
    assert {name: os.environ.get(name) for name in _before} == _before
