"""Two `salesml tune` workers on one PostgreSQL-backed study and the shared MLflow server."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

import optuna
import pytest

from salesml.settings import Settings
from training import tracking

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.mlflow, pytest.mark.optuna]
REPO = Path(__file__).resolve().parents[2]


def _worker(env: dict, study: str, trials: int) -> subprocess.Popen:
    cmd = [str(REPO / ".venv/bin/salesml"), "tune", "chs", "--trials", str(trials), "--study", study,
           "--no-register", "--heartbeat", "1", "--grace", "4"]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _study(settings: Settings, name: str) -> optuna.Study:
    assert settings.optuna_storage_url.startswith("postgresql")
    return optuna.load_study(study_name=name, storage=settings.optuna_storage_url)


def _child_runs(settings: Settings, parent_id: str):
    client = tracking.client(settings)
    parent = client.get_run(parent_id)
    return client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'",
                              max_results=1000)


def test_two_workers_share_one_study_exactly(team_demo):
    env = team_demo["env"]
    settings = team_demo["settings"]
    name = f"par-{uuid.uuid4().hex[:6]}"
    workers = [_worker(env, name, 8), _worker(env, name, 8)]
    outs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], "\n".join(o[-3000:] for o in outs)

    trials = _study(settings, name).get_trials(deepcopy=False)
    assert len(trials) == 8 and all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    assert sorted(t.number for t in trials) == list(range(8))
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 8  # no parameter set run twice
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both workers took trials

    parent_id = _study(settings, name).user_attrs["mlflow_parent_run_id"]
    children = _child_runs(settings, parent_id)
    assert sorted(int(r.data.tags["trial_number"]) for r in children) == list(range(8))
    assert {r.data.tags["worker"] for r in children} == {t.user_attrs["worker"] for t in trials}

    # The final run without --no-register finds the study complete: no trial, retrain the best, challenger.
    started_ms = time.time() * 1000
    final = subprocess.run([str(REPO / ".venv/bin/salesml"), "tune", "chs", "--trials", "8", "--study", name],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    said = " ".join(final.stdout.split())
    assert "ran 0 trial(s)" in said
    study = _study(settings, name)
    assert len(study.get_trials(deepcopy=False)) == 8
    registered = re.search(r"registered version (\d+) as challenger", said)
    assert registered, said[-2000:]
    client = tracking.client(settings)
    challenger = client.get_model_version_by_alias("chs", "challenger")
    assert str(challenger.version) == registered.group(1)
    run = client.get_run(challenger.run_id)
    assert run.info.start_time >= started_ms - 5_000  # trained by this command, not an earlier one
    assert run.data.params["xgb_max_depth"] == str(study.best_params["max_depth"])


def test_killing_a_worker_mid_trial_leaves_a_consistent_study(team_demo):
    env = team_demo["env"]
    settings = team_demo["settings"]
    name = f"kill-{uuid.uuid4().hex[:6]}"
    victim, survivor = _worker(env, name, 10), _worker(env, name, 10)
    victim_tag = f":{victim.pid}"
    storage = optuna.storages.RDBStorage(settings.optuna_storage_url)
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and time.monotonic() < deadline:
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:  # not created yet
            time.sleep(0.2)
            continue
        running = [t for t in study.get_trials(deepcopy=False)
                   if t.state.name == "RUNNING" and t.user_attrs.get("worker", "").endswith(victim_tag)]
        if running:
            os.killpg(victim.pid, signal.SIGKILL)
            killed = running[0].number
        time.sleep(0.05)
    assert killed is not None, "the victim never held a running trial"
    victim.wait(timeout=30)
    out = survivor.communicate(timeout=600)[0]
    assert survivor.returncode == 0, out[-3000:]

    trials = {t.number: t for t in _study(settings, name).get_trials(deepcopy=False)}
    states = [t.state.name for t in trials.values()]
    assert trials[killed].state.name == "FAIL"  # failed by the survivor after the grace period
    assert sum(s in ("COMPLETE", "PRUNED") for s in states) == 10
    assert "RUNNING" not in states and "WAITING" not in states
    # Its MLflow run was ended too, not left RUNNING on the shared server.
    run_id = trials[killed].user_attrs.get("mlflow_run_id")
    if run_id:  # the kill may land between asking the trial and starting its run
        assert tracking.client(settings).get_run(run_id).info.status == "KILLED"
