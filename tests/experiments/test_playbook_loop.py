"""The whole loop on the simulator with planted playbook effects: warnings raised by the real warnings
store (its holdout draw and playbook offer), the simulator's replay of what CSMs did and of churn
(salesml.simulator.playbooks), the interventions recorded back into the store (the fuse), and the
effect estimate: every interval covers its true effect, the harmful playbook is flagged, and a
playbook is frozen when the 5th person in a row marks it "not applicable", not before."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments.playbooks import estimate_effects
from salesml.simulator.playbooks import LoopConfig, PlaybookTruth, replay, synthetic_hazards
from serving.actions.owners import OwnerDirectory
from serving.actions.rules import WarningError
from serving.actions.warnings import WarningConfig, WarningStore

START = pd.Timestamp("2025-01-06", tz="UTC")  # a Monday
H, WEEKS, N = 26, 60, 3000
LEVEL_BOOK = {"yellow": "self-service-guide", "orange": "csm-call", "red": "executive-response"}
TRUTH = {  # planted: harmful, helpful, mildly helpful; 'monitor' is offered on no warning here
    "self-service-guide": PlaybookTruth(hazard_ratio=1.8, p_not_applicable=0.05, not_applicable_reason="no admin"),
    "csm-call": PlaybookTruth(hazard_ratio=0.4, p_not_applicable=0.6, not_applicable_reason="unreachable"),
    "executive-response": PlaybookTruth(hazard_ratio=0.7, p_not_applicable=0.05, not_applicable_reason="no sponsor"),
    "monitor": PlaybookTruth(hazard_ratio=1.0),
}


def _world(seed: int = 3):
    """Weekly hazards per account and, per account, one worsening at a random week with a full horizon left."""
    acc, base, hazards = synthetic_hazards(N, WEEKS, START, seed)
    rng = np.random.default_rng(seed + 1)
    level = np.array(["yellow", "orange", "red"])[np.digitize(base, np.quantile(base, [1 / 3, 2 / 3]))]
    week = rng.integers(0, WEEKS - H + 1, N)
    transitions = pd.DataFrame({"account_id": acc, "week": week, "old_level": "green", "new_level": level,
                                "score": 100 * (1 - base), "change_text": "CHS fell"})
    return hazards, transitions


CONFIG = WarningConfig(due_hours=4, holdout_share=0.3, salt="loop", fuse=5)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The raised warnings (a closed store file, built once) and the simulator's replay of them."""
    hazards, transitions = _world()
    path = tmp_path_factory.mktemp("loop") / "warnings.db"
    owners = OwnerDirectory("csm-team", owners={a: f"csm-{i % 25}" for i, a in enumerate(transitions["account_id"])})
    with WarningStore(path, config=CONFIG, owners=owners) as store:  # 25 CSMs: the fuse counts people
        for week, group in transitions.groupby("week"):
            at = START + pd.Timedelta(weeks=int(week), hours=9)
            store.raise_warnings(group.assign(as_of=at.date().isoformat()).drop(columns="week"), source="run",
                                 now=at)
        warnings = store.frame()
    played = replay(warnings, hazards, LoopConfig(seed=1, horizon_weeks=H, playbooks=TRUTH))
    return path, warnings, played


@pytest.fixture
def loop(world, tmp_path):
    """Each test's own copy of the store: interventions and flags of one test never reach another."""
    import shutil

    path, warnings, played = world
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{path}{suffix}").exists():
            shutil.copy(f"{path}{suffix}", tmp_path / f"warnings.db{suffix}")
    with WarningStore(tmp_path / "warnings.db", config=CONFIG) as store:
        yield store, warnings, played


def test_store_offers_the_levels_playbooks_and_holds_out_a_share(loop):
    _, warnings, played = loop
    assert len(warnings) == N and not played.skipped
    assert (warnings["playbook_id"] == warnings["new_level"].map(LEVEL_BOOK)).all()
    assert abs(warnings["holdout"].mean() - 0.3) < 0.03


def test_the_fuse_freezes_at_the_fifth_person_in_a_row_marking_not_applicable_and_not_before(loop):
    store, warnings, played = loop
    book = warnings.set_index("warning_id")["playbook_id"]
    streak = {p: 0 for p in TRUTH}
    people: dict[str, set] = {p: set() for p in TRUTH}  # the run's distinct people: the fuse counts them
    froze_at, refused = {}, 0
    for iv in played.interventions.sort_values(["at", "warning_id"]).itertuples():
        pb = book[iv.warning_id]
        try:
            store.intervene(iv.warning_id, iv.by, iv.at, playbook_id=None if iv.not_applicable else pb,
                            not_applicable=bool(iv.not_applicable), reason=iv.reason, now=iv.at)
        except WarningError as exc:  # applying a playbook frozen since the warning was raised
            assert exc.field == "playbook_id" and pb in froze_at
            refused += 1
            continue
        if pb in froze_at:
            continue
        streak[pb] = streak[pb] + 1 if iv.not_applicable else 0
        people[pb] = people[pb] | {iv.by} if iv.not_applicable else set()
        state = store.playbook_states().set_index("playbook_id").loc[pb]
        assert int(state["consecutive_not_applicable"]) == streak[pb]
        assert int(state["not_applicable_people"]) == len(people[pb])
        assert bool(state["frozen"]) == (len(people[pb]) >= 5), (pb, people[pb])  # at the 5th person, not the 4th
        if len(people[pb]) >= 5:
            froze_at[pb] = iv.at
    assert set(froze_at) == {"csm-call"}  # 60% not applicable: frozen; 5%: a run of 5 never came
    states = store.playbook_states().set_index("playbook_id")
    assert states.loc["csm-call", "frozen"] and states.loc["csm-call", "flagged_reason"]
    assert not states.loc[["self-service-guide", "executive-response"], "frozen"].any()
    assert refused > 0  # warnings raised before the freeze could no longer apply it


def test_each_interval_covers_its_planted_effect_and_the_harmful_one_is_flagged(loop):
    store, warnings, played = loop
    as_of = warnings["raised_at"].max() + pd.Timedelta(weeks=H, days=1)
    table = estimate_effects(warnings, played.outcomes, horizon_days=7 * H, as_of=as_of).set_index("playbook_id")
    truth = played.truth.set_index("playbook_id")
    for pb in LEVEL_BOOK.values():
        row = table.loc[pb]
        assert row["ci_low"] <= truth.loc[pb, "true_effect"] <= row["ci_high"], (pb, row.to_dict())
    assert table.loc["self-service-guide", "verdict"] == "harmful"
    assert table.loc["csm-call", "effect"] < 0  # helpful, diluted by its 60% not-applicable marks (intent to treat)
    assert table.loc["self-service-guide", "n_holdout"] > 200
    store.flag_playbook("self-service-guide", "harmful: prompted warnings churned more than held-out ones")
    state = store.playbook_states().set_index("playbook_id").loc["self-service-guide"]
    assert state["frozen"] and "harmful" in state["flagged_reason"]
    offer = store.playbooks.pick("yellow", frozen={"self-service-guide"})
    assert offer.playbook is None and offer.note  # nothing left to offer for yellow: the warning says so
