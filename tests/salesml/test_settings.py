"""Every SALESML_* variable is a typed field of Settings; production code reads none of them directly."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from salesml.settings import REPO_ROOT, Settings
from training.models import train_threads

PRODUCTION = ("salesml", "features", "training", "serving", "drift", "experiments")
# os.environ.get("SALESML_X"), os.getenv("SALESML_X"), os.environ["SALESML_X"] (not followed by =)
DIRECT_READ = re.compile(r"""(environ\.get|getenv)\(\s*["']SALESML_|environ\[\s*["']SALESML_\w*["']\s*\](?!\s*=)""")


@pytest.fixture(autouse=True)
def no_env_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no .env of the checkout


def test_train_threads_come_from_settings_and_the_environment(monkeypatch):
    assert train_threads() == 1
    monkeypatch.setenv("SALESML_TRAIN_THREADS", "3")
    assert train_threads() == 3  # read at the call: the scoring benchmark sets it around each run
    assert train_threads(Settings(train_threads=2)) == 2
    monkeypatch.setenv("SALESML_TRAIN_THREADS", "0")
    with pytest.raises(ValidationError, match="train_threads"):
        train_threads()


@pytest.mark.parametrize("value, expected", [(None, False), ("1", True), ("true", True), ("0", False)])
def test_feast_stock_join_is_a_flag(monkeypatch, value, expected):
    if value is not None:
        monkeypatch.setenv("SALESML_FEAST_STOCK_JOIN", value)
    assert Settings().feast_stock_join is expected


@pytest.mark.parametrize("name", ["SALESML_CONFIG", "SALESML_CONFIG_FILE"])
def test_the_documented_config_variable_sets_the_project_file(monkeypatch, tmp_path, name):
    monkeypatch.setenv(name, str(tmp_path / "salesml.yaml"))
    assert Settings().config_file == tmp_path / "salesml.yaml"
    assert Settings(config_file=tmp_path / "other.yaml").config_file == tmp_path / "other.yaml"


def test_production_code_reads_no_salesml_variable_but_through_settings():
    settings_py = REPO_ROOT / "salesml" / "settings.py"
    offenders = [f"{path.relative_to(REPO_ROOT)}:{n}: {line.strip()}"
                 for package in PRODUCTION for path in sorted((REPO_ROOT / package).rglob("*.py"))
                 if path != settings_py
                 for n, line in enumerate(path.read_text().splitlines(), 1) if DIRECT_READ.search(line)]
    assert not offenders, "read these through salesml.settings.Settings:\n" + "\n".join(offenders)


def test_the_scan_finds_a_direct_read():
    assert DIRECT_READ.search('threads = int(os.environ.get("SALESML_TRAIN_THREADS", "1"))')
    assert DIRECT_READ.search("os.getenv('SALESML_HOME')")
    assert DIRECT_READ.search('x = os.environ["SALESML_HOME"]')
    assert not DIRECT_READ.search('os.environ["SALESML_TRAIN_THREADS"] = "2"')  # setting one is not reading it
    assert not DIRECT_READ.search('env = {**os.environ, "SALESML_HOME": str(root)}')

