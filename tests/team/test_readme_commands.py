"""Every ``salesml`` command and subcommand, as the README lists it, run on the home of a fresh
``make demo``: none may end in a traceback, and each must exit as documented.

The plan below names every command of the real command line (read from Typer, not from a list kept
by hand): either it is run here, on the demo's home, or it is run by the test named beside it (a
server in the foreground, a browser, a benchmark that takes minutes). A command added to the CLI
without a place in this plan fails ``test_the_plan_covers_every_command``; one missing from the
README's command block fails ``test_the_readme_lists_every_command``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.mlflow]
REPO = Path(__file__).resolve().parents[2]

# (command, subcommand) -> the runs on the demo's home: argv and the exit codes that are success there.
# drift check: 0 = no drift (the demo plants none), 4 would be an empty window.
RUNS: dict[tuple[str, ...], list[tuple[list[str], set[int]]]] = {
    ("data", "contract"): [(["data", "contract"], {0})],
    ("data", "generate"): [(["data", "generate", "--accounts", "40", "--leads", "120", "--reps", "5", "--weeks", "30",
                             "--seed", "3", "--truth-samples", "0", "--out", "{tmp}/generated"], {0}),
                           (["data", "generate", "--shape", "snapshot", "--accounts", "60", "--out", "{tmp}/snapshot"],
                            {0})],
    ("data", "validate"): [(["data", "validate", "{tmp}/generated"], {0}),
                           (["data", "validate", "{tmp}/generated", "--model", "chs"], {0})],
    ("features", "training-set"): [(["features", "training-set", "--model", "chs", "--out", "{tmp}/chs.parquet"],
                                    {0})],
    # --verbose first: it is the run that imports optuna, whose log handler keeps the stream it first saw
    ("tune",): [(["--verbose", "tune", "intent", "--trials", "1", "--study", "readme-verbose"], {0}),
                (["tune", "intent", "--trials", "1", "--study", "readme-smoke"], {0})],
    ("promote",): [(["promote", "intent"], {0, 1})],  # 1: the challenger did not beat the champion (documented)
    ("models", "history"): [(["models", "history", "intent"], {0})],
    ("recalibrate",): [(["recalibrate", "--walk-forward"], {0})],
    ("experiment", "run"): [(["experiment", "run", "experiments/specs/chs_layers.yaml"], {0})],
    ("experiment", "analyze-online"): [(["experiment", "analyze-online", "--model", "chs"], {0})],
    ("drift", "check"): [(["drift", "check", "--model", "chs"], {0})],
    ("keys", "add"): [(["keys", "add", "--role", "csm", "--name", "readme-smoke"], {0})],
    ("warnings", "list"): [(["warnings", "list", "--limit", "5"], {0})],
    ("warnings", "show"): [(["warnings", "show", "{warning_id}"], {0})],
    ("warnings", "intervene"): [(["warnings", "intervene", "{warning_id}", "--by", "readme-smoke",
                                  "--playbook", "{playbook}"], {0})],
    ("warnings", "escalate"): [(["warnings", "escalate"], {0})],
    ("warnings", "deliver"): [(["warnings", "deliver"], {0})],
    ("warnings", "report"): [(["warnings", "report", "--out", "{tmp}/report.md"], {0})],
    ("playbooks", "list"): [(["playbooks", "list"], {0})],
    ("playbooks", "flag"): [(["playbooks", "flag", "{playbook}", "--reason", "readme smoke"], {0})],
    ("playbooks", "unfreeze"): [(["playbooks", "unfreeze", "{playbook}", "--reason", "readme smoke"], {0})],
    ("playbooks", "effects"): [(["playbooks", "effects", "--no-flag"], {0})],
    # 2: the demo scores recent weeks only, and replay says a warning needs 26 weeks of hazards after it
    ("playbooks", "replay"): [(["playbooks", "replay"], {0, 2})],
    ("score", "history"): [(["score", "history", "{account_id}", "--plot", "{tmp}/history.png"], {0})],
    ("bench", "scoring"): [(["bench", "scoring", "--sizes", "2000"], {0})],
}
# What libraries print unasked (issue 22 item 12): MLflow's artifact bars and registration notices,
# optuna's study lines, Python warnings (pydantic deprecations in the service log).
NOISE = ("Downloading artifacts", "Successfully registered model", "Created version",
         "already exists. Creating a new version", "A new study created", "Warning:", "DeprecationWarning",
         "PydanticDeprecated")
# Commands that this test does not run, and the test that runs them for real.
ELSEWHERE: dict[tuple[str, ...], str] = {
    **{cmd: "tests/team/conftest.py::team_demo" for cmd in [  # `make demo` runs these, and fails on an error
        ("team", "up"), ("data", "generate"), ("data", "validate"), ("features", "build"), ("features", "apply"),
        ("features", "materialize"), ("features", "training-set"), ("train",), ("score", "chs"), ("score", "intent"),
        ("warnings", "list"), ("serve-demo",)]},
    ("serve",): "tests/serving/test_server.py::test_sigkill_under_load_loses_no_acknowledged_request",
    ("serve-stop",): "tests/team/conftest.py::team_demo",  # its teardown, checked
    ("team", "down"): "tests/conftest.py::team_env",  # its teardown, checked
    ("experiment", "screenshot"):
        "tests/experiments/test_ui.py::test_a_reviewer_lands_on_the_training_runs_with_their_metrics",
    ("drift", "ui"): "tests/drift/test_ui.py::test_drift_ui_serves_the_workspace_snapshots_and_stops",
    ("bento-models",): "tests/serving/test_server.py::test_make_bento_pins_the_champions_and_the_lock_files_packages",
    ("bench", "features"): "tests/benchmarks/test_homes.py::test_features_bench_leaves_the_demo_untouched",
    ("bench", "load"): ("tests/serving/test_edge_bench_load.py::"
                        "test_edge_bench_load_short_run_answers_every_legitimate_call"),
}
# Benchmarks whose smallest honest run takes minutes: `make bench` runs them, `make test` does not.
BENCH_ONLY = {("bench", n) for n in ("training", "exports", "serving", "experiments", "drift", "tuning")}


def cli_commands() -> set[tuple[str, ...]]:
    """Every leaf command of the real ``salesml`` command line: ``(name,)`` or ``(group, name)``."""
    import typer

    from salesml.cli import app

    found: set[tuple[str, ...]] = set()

    def walk(cmd, path: tuple[str, ...]) -> None:
        if hasattr(cmd, "commands"):  # a group (Typer's own click)
            for name, sub in cmd.commands.items():
                walk(sub, (*path, name))
        else:
            found.add(path)

    walk(typer.main.get_command(app), ())
    return found


def readme_block() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = text.split("## The command line", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.startswith("salesml ")]


def test_the_readme_lists_every_command():
    lines = readme_block()
    missing = []
    for cmd in sorted(cli_commands()):
        words = [re.escape(w) for w in cmd]
        # `salesml group a | b | sub ...` or `salesml serve-demo | serve-stop`
        pattern = (rf"^salesml {words[0]}\b.*(\s|\|){words[1]}(\s|$|\|)" if len(words) == 2
                   else rf"^salesml (\S+ \| )*{words[0]}(\s|$)")
        if not any(re.search(pattern, line) for line in lines):
            missing.append(" ".join(cmd))
    assert not missing, f"commands missing from README's command block: {missing}"


def test_the_plan_covers_every_command():
    planned = set(RUNS) | set(ELSEWHERE) | BENCH_ONLY
    assert cli_commands() - planned == set(), "a command with no run in this plan"
    assert planned - cli_commands() == set(), "the plan names a command the CLI does not have"
    for cmd, where in ELSEWHERE.items():
        path, name = where.split("::")
        assert re.search(rf"def {re.escape(name)}\(", (REPO / path).read_text()), (cmd, where)


def _serve_every_account(team_demo) -> None:
    """``POST /health`` for every account of the demo's export, on the service ``make demo`` left running."""
    import pandas as pd

    from salesml.validation import find_table_file
    from serving.runner import post

    env = team_demo["env"]
    made = subprocess.run([str(REPO / ".venv/bin/salesml"), "keys", "add", "--role", "admin", "--name", "smoke"],
                          cwd=REPO, env=env, capture_output=True, text=True, check=True)
    key = made.stdout.strip().splitlines()[-1]
    accounts = pd.read_parquet(find_table_file(team_demo["settings"].export_dir, "accounts"))["account_id"]
    ids = accounts.astype(str).tolist()
    for i in range(0, len(ids), 100):
        status, body = post(team_demo["port"], "/health", {"account_ids": ids[i:i + 100]}, key, timeout=120)
        assert status == 200, body


@pytest.fixture(scope="module")
def smoke(team_demo, tmp_path_factory):
    """The plan's runs, in order, in one process on the demo's home: {command: [result per run]}."""
    tmp = tmp_path_factory.mktemp("readme")
    _serve_every_account(team_demo)  # the served window `drift check` compares with the training set
    order = [(cmd, [a.replace("{tmp}", str(tmp)) for a in argv]) for cmd, runs in RUNS.items() for argv, _ in runs]
    (tmp / "plan.json").write_text(json.dumps([argv for _, argv in order]))
    env = {**team_demo["env"], "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("cli_smoke.py")), str(tmp / "plan.json")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"argv"')]
    assert len(results) == len(order), proc.stderr[-4000:]
    by_command: dict[tuple[str, ...], list[dict]] = {}
    for (cmd, _), result in zip(order, results):
        by_command.setdefault(cmd, []).append(result)
    return by_command


@pytest.mark.parametrize("command", sorted(RUNS), ids=" ".join)
def test_readme_command_runs_on_the_demo(smoke, command):
    for (_, ok), r in zip(RUNS[command], smoke[command]):
        ran = " ".join(r["argv"])
        assert r["traceback"] is None, f"{ran} raised:\n{r['traceback']}"
        assert r["code"] in ok, f"{ran} exited {r['code']} (expected {sorted(ok)}):\n{r['output']}"
        assert "Traceback (most recent call last)" not in r["output"], r["output"]


def _noise(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(n in line for n in NOISE)]


def test_commands_print_no_library_noise_unless_verbose(smoke, team_demo):
    """make demo (train, score, serve-demo), every command of the plan and the service's own log show
    the project's lines only; --verbose shows MLflow's notices again; off a terminal a long line stays
    one line (rich wrapped at 80 columns)."""
    demo = team_demo["stdout"] + team_demo["stderr"]
    assert not _noise(demo), _noise(demo)
    for results in smoke.values():
        for r in results:
            if "--verbose" not in r["argv"]:
                assert not _noise(r["output"]), (r["argv"], _noise(r["output"]))
    log = (team_demo["settings"].serving_dir / "server.log").read_text()
    assert not _noise(log), _noise(log)[:5]
    verbose = smoke[("tune",)][0]
    assert verbose["argv"][0] == "--verbose" and verbose["code"] == 0, verbose["output"]
    assert "Created version" in verbose["output"] and "of model 'intent'" in verbose["output"], verbose["output"]
    long = [line for line in demo.splitlines() if "outcome windows of" in line]  # train's progress: stderr
    assert long and len(long[0]) > 100 and "complete by the export end" in long[0], long


def test_drift_check_on_the_fresh_demo_says_no_drift(smoke):
    r = smoke[("drift", "check")][0]
    assert r["code"] == 0, r["output"]
    assert "no drift" in r["output"] and "DRIFT" not in r["output"], r["output"]
    served = int(re.search(r"(\d+) served rows", r["output"]).group(1))
    assert served >= 100, f"the check compared only {served} served rows: {r['output']}"


def test_warnings_report_runs_as_a_fresh_process(team_demo, tmp_path):
    """The command that failed on a fresh clone (an import of a name that had moved), as its own process."""
    proc = subprocess.run([str(REPO / ".venv/bin/salesml"), "warnings", "report", "--out", str(tmp_path / "r.md")],
                          cwd=REPO, env={**team_demo["env"]}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert (tmp_path / "r.md").read_text().strip()
