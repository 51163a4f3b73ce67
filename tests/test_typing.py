"""The type checker of ``make lint`` (mypy, configured in pyproject.toml) catches what broke a user's
command before: an import of a name that does not exist, also inside a function; a wrong return type;
and ``tests/typing_rules.py`` an unannotated ``settings`` parameter."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from salesml.settings import REPO_ROOT

MYPY = str(Path(sys.executable).with_name("mypy"))
RULES = REPO_ROOT / "tests" / "typing_rules.py"


def mypy(scratch: Path, cache: Path) -> subprocess.CompletedProcess:
    """mypy with the project's configuration on one scratch module that imports the real packages."""
    env = {**os.environ, "MYPYPATH": str(REPO_ROOT), "COLUMNS": "1000"}
    return subprocess.run([MYPY, "--config-file", str(REPO_ROOT / "pyproject.toml"), "--cache-dir", str(cache),
                           "--no-error-summary", str(scratch)], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mypy-cache")


def scratch(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "scratch_module.py"
    path.write_text("from __future__ import annotations\n\nfrom salesml.settings import Settings\n\n\n"
                    + textwrap.dedent(body))
    return path


def test_an_import_of_a_missing_name_inside_a_function_fails(tmp_path, cache):
    # the shape of the bug that broke `salesml warnings report`: a name that moved, imported in a command
    path = scratch(tmp_path, """\
        def report(settings, now=None):
            from serving.actions.rules import no_such_name

            return no_such_name(now)
        """)
    done = mypy(path, cache)
    assert done.returncode == 1, done.stdout + done.stderr
    assert 'Module "serving.actions.rules" has no attribute "no_such_name"' in done.stdout, done.stdout
    assert "scratch_module.py:7" in done.stdout


def test_a_wrong_return_type_fails_and_a_right_one_passes(tmp_path, cache):
    wrong = mypy(scratch(tmp_path, """\
        def home(settings: Settings) -> int:
            return settings.root
        """), cache)
    assert wrong.returncode == 1 and "Incompatible return value type" in wrong.stdout, wrong.stdout
    right = mypy(scratch(tmp_path, """\
        from pathlib import Path


        def home(settings: Settings) -> Path:
            return settings.root
        """), cache)
    assert right.returncode == 0, right.stdout + right.stderr


def test_an_unannotated_settings_parameter_fails_the_rules(tmp_path):
    bad = scratch(tmp_path, """\
        def run(settings, model: str) -> None:
            pass
        """)
    done = subprocess.run([sys.executable, str(RULES), str(bad)], capture_output=True, text=True)
    assert done.returncode == 1 and "run(settings) has no type annotation" in done.stdout, done.stdout
    good = scratch(tmp_path, """\
        def run(settings: Settings, model: str) -> None:
            pass
        """)
    assert subprocess.run([sys.executable, str(RULES), str(good)], capture_output=True).returncode == 0


def test_the_production_packages_annotate_every_settings_parameter():
    done = subprocess.run([sys.executable, str(RULES)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_make_lint_runs_the_type_checker_and_the_rules():
    """`make lint` (and so `make test` and CI) runs mypy with the project's configuration and the rules."""
    done = subprocess.run(["make", "-n", "lint"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    recipe = done.stdout.splitlines()
    assert any(line.strip() == ".venv/bin/mypy" for line in recipe), done.stdout
    assert any(line.strip() == ".venv/bin/python tests/typing_rules.py" for line in recipe), done.stdout
