"""The import layers of DESIGN.md hold (``lint-imports``, configured in pyproject.toml), and a wrong
import, even one inside a function, breaks the contract it crosses."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from salesml.settings import REPO_ROOT

LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))
PACKAGES = ("salesml", "features", "training", "serving", "experiments", "drift", "benchmarks")
CONTRACTS = {
    "layers": "Layers: base < features < training < serving < experiments | drift < benchmarks < cli",
    "simulator": "The simulator is a tool of the cli, the benchmarks and the tests: no production module imports it",
    "benchmarks": "Benchmarks are imported by the cli alone",
    "core-actions": "The scoring core and the actions stay apart: what both need (errors, playbooks, auth, logs) "
                    "lives beside them",
}


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on the packages under ``root`` with ``root``'s pyproject.toml; wide lines, so a
    contract's name is never wrapped."""
    env = {**os.environ, "COLUMNS": "1000", "PYTHONPATH": str(root)}
    return subprocess.run([LINT_IMPORTS, "--config", str(root / "pyproject.toml"), "--no-cache", "--no-logo"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)


def test_the_repository_keeps_every_contract():
    done = lint_imports(REPO_ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in CONTRACTS.values():
        assert f"{name} KEPT" in done.stdout
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in done.stdout


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """The packages and the configuration, copied: each case edits one module of the copy."""
    root = tmp_path_factory.mktemp("layers")
    shutil.copy(REPO_ROOT / "pyproject.toml", root)
    for pkg in PACKAGES:
        shutil.copytree(REPO_ROOT / pkg, root / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return root


@pytest.mark.parametrize(("module", "wrong_import", "broken"), [
    ("features/store.py", "from serving.core import ScoringCore", {"layers"}),  # a lower layer reaching up
    ("training/models.py", "import experiments.stats", {"layers"}),
    ("drift/monitor.py", "from experiments import stats", {"layers"}),  # independent siblings
    ("salesml/settings.py", "import features.transforms", {"layers"}),
    ("serving/core.py", "from salesml.simulator import generate", {"simulator"}),
    ("salesml/simulator/export.py", "import benchmarks.features", {"benchmarks"}),
    # and through benchmarks.scoring, which simulates its export, the simulator too (chains count)
    ("serving/scores.py", "import benchmarks.scoring", {"layers", "benchmarks", "simulator"}),
    # the scoring core and the actions: neither way (the cycle of issue [3.2])
    ("serving/actions/live.py", "from serving.core import RequestError", {"core-actions"}),
    ("serving/core.py", "from serving.actions.warnings import open_warning_store", {"core-actions"}),
])
def test_a_wrong_import_breaks_its_contract(tree, module, wrong_import, broken):
    path = tree / module
    original = path.read_text()
    # Inside a function, where a module-level scan would not look: import-linter still sees it.
    path.write_text(original + f"\n\ndef _wrong():\n    {wrong_import}\n")
    try:
        done = lint_imports(tree)
    finally:
        path.write_text(original)
    assert done.returncode == 1, done.stdout + done.stderr
    for cid, name in CONTRACTS.items():
        assert f"{name} {'BROKEN' if cid in broken else 'KEPT'}" in done.stdout, done.stdout
    importer = module.removesuffix(".py").replace("/", ".")
    assert importer in done.stdout  # the report names the module at fault
