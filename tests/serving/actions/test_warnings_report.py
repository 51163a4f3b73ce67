"""The time-to-first-intervention report equals a hand count, and never speaks of a person."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from serving.actions.owners import OwnerDirectory
from serving.actions.report import SMALL_TEAMS, render_markdown, report
from serving.actions.warnings import WarningConfig, WarningStore

T0 = pd.Timestamp("2026-11-02 08:00", tz="UTC")
H = pd.Timedelta(hours=1)
NOW = T0 + 10 * H
OWNERS = {"A1": "o1", "A2": "o2", "A3": "o3", "A4": "o4", "A5": "o1", "A6": "o2", "A7": "o4"}
TEAMS = {"o1": "emea", "o2": "emea", "o3": "emea", "o4": "apac"}  # apac has one owner: pooled

# account, old, new, raised (h after T0), first intervention (h after T0) and its kind, or None
CASE = [
    ("A1", "yellow", "orange", 0, (1, "csm-call")),
    ("A2", "green", "yellow", 0, (6, "n/a")),
    ("A3", "orange", "red", 0, (3, "executive-response")),
    ("A4", "yellow", "orange", 2, None),  # overdue at NOW (due T0 + 6 h), escalated
    ("A5", "green", "yellow", 8, None),  # not yet due at NOW: its within-target is unknown
    ("A6", "yellow", "red", 1, (5.5, None)),  # something done, no playbook named
    ("A7", "green", "orange", 3, (3.5, "csm-call")),
]


@pytest.fixture
def tables(tmp_path):
    owners = OwnerDirectory("fallback", owners=OWNERS, teams=TEAMS)
    with WarningStore(tmp_path / "w.db", config=WarningConfig(holdout_share=0.0), owners=owners) as store:
        for account, old, new, raised, first in CASE:
            [w] = store.raise_warnings(pd.DataFrame([dict(account_id=account, as_of="2026-11-02", old_level=old,
                                                          new_level=new)]), source="run", now=T0 + raised * H)
            if first is not None:
                at, what = first
                store.intervene(w["warning_id"], OWNERS[account], T0 + at * H, now=NOW,
                                playbook_id=None if what in (None, "n/a") else what,
                                not_applicable=what == "n/a", reason="customer is migrating" if what == "n/a" else None)
        # a second, later intervention must not change the first-intervention figures
        a1 = store.frame().set_index("account_id").loc["A1", "warning_id"]
        store.intervene(a1, "o1", T0 + 9 * H, playbook_id="csm-call", now=NOW)
        store.escalate(NOW)
        yield report(store, NOW, 4.0)


def _row(table: pd.DataFrame, key: str, value: str) -> dict:
    return table.set_index(key).loc[value].to_dict()


def _check(got: dict, warnings, handled, within, share, median, overdue, na, escalated):
    assert (got["warnings"], got["handled"], got["handled_within_target"], got["overdue_now"],
            got["not_applicable"], got["escalated"]) == (warnings, handled, within, overdue, na, escalated)
    assert math.isclose(got["share_within_target"], share) and math.isclose(got["median_hours_to_first"], median)


def test_overall_and_per_level_figures_equal_a_hand_count(tables):
    # handled: A1 1 h, A2 6 h, A3 3 h, A6 4.5 h, A7 0.5 h; known: those and A4 (late); within: A1, A3, A7
    _check(tables["overall"].iloc[0].to_dict(), 7, 5, 3, 3 / 6, 3.0, 1, 1, 1)
    assert list(tables["by_level"]["level"]) == ["yellow", "orange", "red"]
    _check(_row(tables["by_level"], "level", "orange"), 3, 2, 2, 2 / 3, 0.75, 1, 0, 1)  # A1, A4, A7
    _check(_row(tables["by_level"], "level", "yellow"), 2, 1, 0, 0.0, 6.0, 0, 1, 0)  # A2, A5
    _check(_row(tables["by_level"], "level", "red"), 2, 2, 1, 0.5, 3.75, 0, 0, 0)  # A3, A6


def test_per_playbook_and_per_team_figures_equal_a_hand_count(tables):
    csm = _row(tables["by_playbook"], "playbook_id", "csm-call")
    _check(csm, 3, 2, 2, 2 / 3, 0.75, 1, 0, 1)
    assert (csm["prompted"], csm["held_out"]) == (3, 0)
    _check(_row(tables["by_playbook"], "playbook_id", "executive-response"), 2, 2, 1, 0.5, 3.75, 0, 0, 0)
    assert set(tables["by_team"]["team"]) == {"emea", SMALL_TEAMS}
    _check(_row(tables["by_team"], "team", "emea"), 5, 4, 2, 0.5, 3.75, 0, 1, 0)  # A1 A2 A3 A5 A6
    _check(_row(tables["by_team"], "team", SMALL_TEAMS), 2, 1, 1, 0.5, 0.5, 1, 0, 1)  # A4 A7 (apac, one owner)
    per = tables["warnings"].set_index("account_id")
    assert per.loc["A5", "within_target"] is pd.NA and per.loc["A4", "within_target"] == False  # noqa: E712
    assert per.loc["A1", "hours_to_first"] == 1.0


def test_no_table_names_a_person(tables):
    people = set(OWNERS.values())
    for name, table in tables.items():
        assert not {"owner", "by", "recorded_by"} & set(table.columns), name
        cells = set(table.astype(str).to_numpy().ravel())
        assert not people & cells, name
    text = render_markdown(tables, NOW)
    assert "## Per team" in text and "never per person" in text
    assert not any(f"| {p} " in text for p in people)


def test_an_empty_store_reports_zeros(tmp_path):
    with WarningStore(tmp_path / "w.db") as store:
        tables = report(store, NOW)
    assert tables["by_level"].empty and tables["overall"].empty and "_none_" in render_markdown(tables, NOW)
