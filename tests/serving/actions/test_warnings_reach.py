"""Object-level checks of the warnings loop (issue 22 item 6): a key with an owner and a team acts on
and reads only its owner's and team's warnings; the fuse counts distinct people, and each key's
not-applicable marks are rate-limited; a key dates its intervention within the clock skew of the
request's arrival."""

from __future__ import annotations

import sqlite3

import pandas as pd
import pytest

from serving.actions.owners import OwnerDirectory
from serving.actions.warnings import CLOCK_SKEW, WarningConfig, WarningError, WarningStore
from serving.auth import Caller

NOW = pd.Timestamp("2026-11-02 09:00", tz="UTC")
H = pd.Timedelta(hours=1)
OWNERS = {"A1": "csm-1", "A2": "csm-2", "A3": "csm-3", "A4": "csm-4"}
TEAMS = {"csm-1": "emea", "csm-2": "emea", "csm-3": "apac", "csm-4": "apac"}
ANA = Caller("ana-1a2b3c", "csm", owner="csm-1", team="emea")


def _store(tmp_path, **config) -> WarningStore:
    return WarningStore(tmp_path / "w.db", config=WarningConfig(holdout_share=0, **config),
                        owners=OwnerDirectory("nobody", owners=dict(OWNERS), teams=dict(TEAMS)))


def _raise(store, accounts, now=NOW) -> dict[str, str]:
    rows = pd.DataFrame([{"account_id": a, "as_of": "2026-11-02", "old_level": "yellow", "new_level": "orange"}
                         for a in accounts])
    return {w["account_id"]: w["warning_id"] for w in store.raise_warnings(rows, source="run", now=now)}


def test_a_csm_key_intervenes_on_its_own_and_its_teams_warnings_only(tmp_path):
    with _store(tmp_path) as s:
        ids = _raise(s, OWNERS)
        assert s.intervene(ids["A1"], ANA, now=NOW + H)["status"] == "handled"  # its own
        assert s.intervene(ids["A2"], ANA, now=NOW + H)["status"] == "handled"  # its team's
        with pytest.raises(WarningError) as err:  # the other team's
            s.intervene(ids["A3"], ANA, now=NOW + H, playbook_id="csm-call")
        assert (err.value.status, err.value.field) == (403, "warning_id")
        assert ids["A3"] in str(err.value) and "csm-3" in str(err.value) and "apac" in str(err.value)
        assert s.get(ids["A3"])["interventions"] == [] and s.get(ids["A3"])["status"] == "open"  # nothing written
        solo = Caller("bo-000001", "csm", owner="csm-2")  # an owner, no team: its own warnings only
        with pytest.raises(WarningError, match="may not act"):
            s.intervene(ids["A1"], solo, now=NOW + H)
        for anyone in (Caller("adm", "admin", owner="root", team="hq"), Caller("console", "csm")):
            assert s.intervene(ids["A4"], anyone, now=NOW + H)["status"] == "handled"  # admin, unscoped
        assert [i["by"] for i in s.get(ids["A4"])["interventions"]] == ["adm", "console"]


def test_a_scoped_key_reads_only_its_own_and_its_teams_inbox(tmp_path):
    with _store(tmp_path) as s:
        _raise(s, OWNERS)
        sales = Caller("sam-1", "sales", owner="csm-3", team="apac")
        assert {w["owner"] for w in s.inbox(caller=sales)} == {"csm-3", "csm-4"}
        assert {w["owner"] for w in s.inbox(owner="csm-4", caller=sales)} == {"csm-4"}
        assert s.inbox(owner="csm-1", caller=sales) == []  # another team's owner: nothing of theirs
        mine = Caller("sam-2", "sales", owner="csm-3")
        assert {w["owner"] for w in s.inbox(caller=mine)} == {"csm-3"}
        with pytest.raises(WarningError) as err:
            s.inbox(owner="csm-1", caller=mine)
        assert (err.value.status, err.value.field) == (403, "owner")
        assert len(s.inbox(caller=Caller("legacy", "sales"))) == 4 == len(s.inbox())


def test_one_key_marking_many_times_never_freezes_a_playbook_five_people_do(tmp_path):
    accounts = [f"B{i}" for i in range(30)]
    with _store(tmp_path, fuse=5, marks_per_key_hour=100) as s:
        ids = list(_raise(s, accounts).values())
        one = Caller("fuzzer-1", "csm")  # an unscoped key: reaches everything, is one person
        for wid in ids[:12]:
            s.intervene(wid, one, now=NOW + H, not_applicable=True, reason="n/a")
        state = s.playbook_states().set_index("playbook_id").loc["csm-call"]
        assert not state["frozen"] and (state["consecutive_not_applicable"], state["not_applicable_people"]) == (12, 1)
        twin = Caller("fuzzer-2", "csm", owner="fuzzer", team="t")  # one person's two keys count once
        twin2 = Caller("fuzzer-3", "csm", owner="fuzzer", team="t")
        s.intervene(ids[12], Caller("a", "admin", owner="fuzzer"), now=NOW + H, not_applicable=True, reason="x")
        for c in (twin, twin2):
            assert c.person == "fuzzer"
        assert s.playbook_states().set_index("playbook_id").loc["csm-call", "not_applicable_people"] == 2
        for i, wid in enumerate(ids[13:16]):
            s.intervene(wid, Caller(f"k{i}", "admin", owner=f"p{i}"), now=NOW + H, not_applicable=True, reason="x")
        state = s.playbook_states().set_index("playbook_id").loc["csm-call"]
        assert state["frozen"] and state["not_applicable_people"] == 5 and "by 5 people" in state["flagged_reason"]


def test_a_key_over_its_hourly_marks_is_refused_429_and_nothing_is_written(tmp_path):
    with _store(tmp_path, fuse=50, marks_per_key_hour=3) as s:
        ids = list(_raise(s, [f"C{i}" for i in range(8)]).values())
        key = Caller("busy-1", "csm")
        for i, wid in enumerate(ids[:3]):
            s.intervene(wid, key, now=NOW + i * 10 * pd.Timedelta(minutes=1), not_applicable=True, reason="n/a")
        with pytest.raises(WarningError) as err:
            s.intervene(ids[3], key, now=NOW + 30 * pd.Timedelta(minutes=1), not_applicable=True, reason="n/a")
        assert (err.value.status, err.value.field) == (429, "not_applicable") and "busy-1" in str(err.value)
        assert s.get(ids[3])["interventions"] == []
        other = Caller("calm-1", "csm")  # the limit is per key
        s.intervene(ids[3], other, now=NOW + 30 * pd.Timedelta(minutes=1), not_applicable=True, reason="n/a")
        s.intervene(ids[4], key, now=NOW + 30 * pd.Timedelta(minutes=1), playbook_id="csm-call")  # applying: no limit
        s.intervene(ids[5], key, now=NOW + 61 * pd.Timedelta(minutes=1), not_applicable=True, reason="n/a")  # hour on


def test_a_key_dates_its_intervention_within_the_skew_of_its_arrival(tmp_path):
    with _store(tmp_path) as s:
        ids = _raise(s, OWNERS)
        arrival = NOW + 2 * H
        for at in (NOW, arrival - CLOCK_SKEW - pd.Timedelta(seconds=1), arrival + CLOCK_SKEW + pd.Timedelta(seconds=1)):
            with pytest.raises(WarningError) as err:  # the warning's raised_at (0.0 h to first), too early, future
                s.intervene(ids["A1"], ANA, at, now=arrival)
            assert (err.value.field, err.value.status) == ("at", 400), at
        assert "5 min" in str(err.value)
        s.intervene(ids["A1"], ANA, arrival - CLOCK_SKEW + pd.Timedelta(seconds=1), now=arrival)
        s.intervene(ids["A2"], ANA, arrival + CLOCK_SKEW, now=arrival)
        hours = s.frame().set_index("account_id")["hours_to_first_intervention"]
        assert hours["A1"] > 1.9 and hours["A2"] > 2.0
        # an operator's command line (a name, not a key) may record an earlier time, never before the warning
        s.intervene(ids["A3"], "csm-3", NOW + 0.5 * H, now=arrival)
        with pytest.raises(WarningError, match="before the warning was raised"):
            s.intervene(ids["A4"], "csm-4", NOW - H, now=arrival)


def test_a_store_from_before_people_were_counted_gains_the_columns_and_keeps_its_rows(tmp_path):
    path = tmp_path / "w.db"
    with _store(tmp_path) as s:
        wid = _raise(s, ["A1"])["A1"]
        s.intervene(wid, "csm-1", now=NOW + H, not_applicable=True, reason="old")
    con = sqlite3.connect(path)  # as the schema was: without the added columns
    con.execute("ALTER TABLE interventions DROP COLUMN person")
    con.execute("ALTER TABLE playbook_state DROP COLUMN run_people")
    con.commit()
    con.close()
    with _store(tmp_path) as s:
        assert len(s.get(wid)["interventions"]) == 1
        state = s.playbook_states().set_index("playbook_id").loc["csm-call"]
        assert (state["consecutive_not_applicable"], state["not_applicable_people"]) == (1, 0)
        wid2 = _raise(s, ["A2"])["A2"]
        s.intervene(wid2, ANA, now=NOW + H, not_applicable=True, reason="new")
        assert s.playbook_states().set_index("playbook_id").loc["csm-call", "not_applicable_people"] == 1
