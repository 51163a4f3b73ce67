"""Shared-study tuning workers with a trivial objective: exactly N finished trials between them (SQLite;
PostgreSQL too where it is reachable), dead workers' trials failed and their slots run again."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from salesml.settings import Settings
from training import tuning

pytestmark = pytest.mark.optuna

# A worker process with a trivial objective: the study logic is what is under test here.
WORKER = """
import sys, time
from salesml.settings import Settings
from training import tuning
home, target, sleep, url = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
settings = Settings(home=home, optuna_storage=url or None)
study = tuning.open_study(settings, "toy", "toy-study", seed=0, heartbeat=1, grace=3)
def objective(trial):
    x = trial.suggest_float("x", -10, 10)
    time.sleep(sleep)
    return -(x - 2) ** 2
lock = lambda: tuning.study_lock(settings, tuning.storage_url(settings), "toy-study")
ran = tuning.run_worker(study, target, objective, lambda _: None, lock, heartbeat=1, poll=0.2, seed=0)
print("ran", ran)
"""


def _worker(home: Path, target: int, sleep: float = 0.05, url: str = "") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WORKER, str(home), str(target), str(sleep), url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _trials(home: Path, url: str | None = None) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name="toy-study", storage=url or tuning.storage_url(Settings(home=home)))
    return study.get_trials(deepcopy=False)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def storage(request, tmp_path) -> str:
    """"" for the SQLite default under tmp_path; a throwaway PostgreSQL database otherwise."""
    return "" if request.param == "sqlite" else request.getfixturevalue("postgres_database")


def test_two_workers_run_exactly_the_requested_trials_between_them(tmp_path, storage):
    workers = [_worker(tmp_path, 12, url=storage), _worker(tmp_path, 12, url=storage)]
    outs = [w.communicate(timeout=120) for w in workers]
    assert all(w.returncode == 0 for w in workers), outs
    ran = [int(o[0].split()[-1]) for o in outs]
    trials = _trials(tmp_path, storage)
    assert sum(ran) == 12 and len(trials) == 12
    assert all(t.state.name == "COMPLETE" for t in trials)
    assert sorted(t.number for t in trials) == list(range(12))
    assert len({t.params["x"] for t in trials}) == 12  # no trial run twice
    assert min(ran) >= 1, f"one worker did all the work: {ran}"


def test_a_dead_workers_trial_is_failed_and_its_slot_run_again(tmp_path):
    settings = Settings(home=tmp_path)
    study = tuning.open_study(settings, "toy", "toy-study", seed=0, heartbeat=1, grace=3)
    # A worker that asked for a trial, beat once and died: its trial stays RUNNING.
    dead = study.ask()
    study._storage.record_heartbeat(dead._trial_id)
    started = time.monotonic()
    w = _worker(tmp_path, 5)
    out = w.communicate(timeout=120)
    assert w.returncode == 0, out
    trials = _trials(tmp_path)
    states = {t.number: t.state.name for t in trials}
    assert states[dead.number] == "FAIL"
    assert sum(s == "COMPLETE" for s in states.values()) == 5
    assert "RUNNING" not in states.values()
    assert time.monotonic() - started >= 3  # it waited out the grace period, it did not skip the slot


def test_a_finished_study_runs_no_more_trials(tmp_path):
    w = _worker(tmp_path, 3)
    assert w.wait(timeout=120) == 0
    again = _worker(tmp_path, 3)
    out = again.communicate(timeout=120)
    assert again.returncode == 0 and out[0].split()[-1] == "0"
    assert len(_trials(tmp_path)) == 3


def test_a_worker_waits_while_other_workers_hold_the_last_slots(tmp_path):
    study = tuning.open_study(Settings(home=tmp_path), "toy", "s", seed=0, heartbeat=1, grace=30)
    first = tuning.next_trial(study, 2)
    second = tuning.next_trial(study, 2)
    study._storage.record_heartbeat(first._trial_id)
    study._storage.record_heartbeat(second._trial_id)
    assert tuning.next_trial(study, 2) is None  # both slots are running elsewhere: wait
    study.tell(first, 1.0)
    assert tuning.next_trial(study, 2) is None  # one finished, one still running
    study.tell(second, 2.0)
    assert tuning.next_trial(study, 2) == "done"


def test_a_trial_whose_worker_died_before_its_first_heartbeat_is_failed_after_the_grace(tmp_path):
    study = tuning.open_study(Settings(home=tmp_path), "toy", "s", seed=0, heartbeat=1, grace=2)
    orphan = study.ask()  # asked, then the worker was killed: no heartbeat, no worker attribute
    assert tuning.next_trial(study, 1) is None  # within the grace period it may still be claimed
    time.sleep(2.5)
    replacement = tuning.next_trial(study, 1)
    assert replacement not in (None, "done")
    assert study._storage.get_trial(orphan._trial_id).state.name == "FAIL"
    study.tell(replacement, 1.0)
    assert tuning.next_trial(study, 1) == "done"


def test_optuna_says_a_study_was_created_with_verbose_only(tmp_path):
    import subprocess
    import sys

    code = ("import sys\nfrom salesml.settings import Settings\nfrom training import tuning\n"
            "tuning.open_study(Settings(home=sys.argv[1], verbose=sys.argv[2] == 'loud'), 'toy', sys.argv[2], "
            "seed=0, heartbeat=1, grace=3)\n")
    err = {how: subprocess.run([sys.executable, "-c", code, str(tmp_path), how], capture_output=True, text=True,
                               timeout=120, check=True).stderr for how in ("quiet", "loud")}
    assert "A new study created" not in err["quiet"], err["quiet"]
    assert "A new study created in RDB with name: loud" in err["loud"], err["loud"]
