"""Live events across a rebuild (issue 22 item 5): a push made while ``features build`` runs, between
the build and ``materialize``, or while ``materialize`` runs stays counted online; a push never takes
an event id that belongs to another lead, in the export or in the live store."""

from __future__ import annotations

import pandas as pd
import pytest

from features.live import open_live
from features.store import (
    apply,
    build_feature_files,
    materialize,
    online_features,
    open_store,
    push_events,
)
from salesml.settings import Settings
from salesml.validation import ContractError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def home(tmp_path_factory, export_dir) -> Settings:
    """A materialized Feast store of this module's own (its pushes and rebuilds touch no other test)."""
    settings = Settings(home=tmp_path_factory.mktemp("rebuild-home"))
    build_feature_files(settings, export_dir, progress=lambda _: None)
    apply(settings, progress=lambda _: None)
    materialize(settings)
    return settings


def _events(lead: str, ids: list[str], minutes_ago: int = 30) -> pd.DataFrame:
    at = pd.Timestamp.now(tz="UTC").floor("s") - pd.Timedelta(minutes=minutes_ago)
    return pd.DataFrame({"event_id": ids, "lead_id": [lead] * len(ids),
                         "occurred_at": [at + pd.Timedelta(seconds=i) for i in range(len(ids))],
                         "event_type": ["page_view"] * len(ids), "page": ["pricing"] * len(ids)})


def _leads_with_events(raw, first: int, n: int) -> list[str]:
    counts = raw["lead_events"]["lead_id"].value_counts()
    return sorted(counts[counts >= 2].index)[first:first + n]


def _online_total(settings: Settings, store, lead: str) -> int:
    return int(online_features(settings, "intent", [{"lead_id": lead}], store)["events_total"].iloc[0])


def _offline_total(settings: Settings, lead: str) -> int:
    activity = pd.read_parquet(settings.feature_data_dir / "lead_activity.parquet")
    return int(activity.loc[activity["lead_id"] == lead, "events_total"].max())


def test_events_pushed_while_building_and_materializing_stay_online(home, export_dir, raw):
    store = open_store(home)
    leads = _leads_with_events(raw, 40, 4)
    exported = {lead: int((raw["lead_events"]["lead_id"] == lead).sum()) for lead in leads}
    pushed = dict.fromkeys(leads, 0)

    def push(lead: str, tag: str, n: int = 1) -> None:
        push_events(home, export_dir, "lead_events", _events(lead, [f"rb-{tag}-{lead}-{i}" for i in range(n)]), store)
        pushed[lead] += n

    push(leads[0], "before", 2)  # before the build: in the feature files

    def during_build(line: str) -> None:  # after the build has read the live store, before its files exist
        if line == "computing feature tables":
            for lead in leads:
                push(lead, "build")

    build_feature_files(home, export_dir, progress=during_build)
    push(leads[1], "between", 3)  # between the build and materialize

    def during_materialize(view: str, done: int, total: int) -> None:
        if view == "lead_activity":  # just before Feast writes this view's offline rows online
            push(leads[2], "materialize")

    materialize(home, progress=during_materialize)
    for lead in leads:
        assert _online_total(home, store, lead) == exported[lead] + pushed[lead], lead

    # The next rebuild includes them all offline, and online still agrees.
    build_feature_files(home, export_dir, progress=lambda _: None)
    materialize(home)
    for lead in leads:
        assert _offline_total(home, lead) == exported[lead] + pushed[lead], lead
        assert _online_total(home, store, lead) == exported[lead] + pushed[lead], lead


def test_a_push_cannot_take_another_leads_event_id(home, export_dir, raw):
    from serving.service import ERROR_KEY, run_core

    store = open_store(home)
    ev = raw["lead_events"]
    owner, thief = _leads_with_events(raw, 50, 2)
    taken = ev.loc[ev["lead_id"] == owner, "event_id"].iloc[0]
    before = {lead: _online_total(home, store, lead) for lead in (owner, thief)}
    with open_live(home) as live:
        count = live.count("lead_events")

    rows = _events(thief, ["rb-own-1", taken])
    with pytest.raises(ContractError) as err:
        push_events(home, export_dir, "lead_events", rows, store)
    [v] = err.value.violations
    assert (v.table, v.column, v.rows) == ("lead_events", "event_id", [2])
    assert f"{taken!r} belongs to lead_id {owner!r}" in v.found
    answer = run_core(lambda: push_events(home, export_dir, "lead_events", rows, store))[ERROR_KEY]
    assert answer["status"] == 400 and taken in answer["error"] and owner in answer["error"]
    with open_live(home) as live:
        assert live.count("lead_events") == count  # nothing stored
    assert {lead: _online_total(home, store, lead) for lead in (owner, thief)} == before

    # Its own lead may resend it (a correction replaces the exported row: the count stays).
    push_events(home, export_dir, "lead_events", _events(owner, [taken]), store)
    assert _online_total(home, store, owner) == before[owner]

    # A live-only id is its first lead's too, in this process or any other.
    push_events(home, export_dir, "lead_events", _events(owner, ["rb-live-1"]), store)
    with pytest.raises(ContractError, match=r"'rb-live-1' belongs to lead_id"):
        push_events(home, export_dir, "lead_events", _events(thief, ["rb-live-1"]), store)

    build_feature_files(home, export_dir, progress=lambda _: None)
    materialize(home)
    assert _offline_total(home, owner) == _online_total(home, store, owner) == before[owner] + 1
    assert _offline_total(home, thief) == _online_total(home, store, thief) == before[thief]


def test_rows_stored_before_the_refusal_do_not_move_exported_events(home, export_dir, raw):
    """A live store written by the old code may already hold such rows: the export keeps its events,
    an id moved between two leads live belongs to the later one, and offline and online agree."""
    from features.live import LiveStore, live_path
    from salesml.contract import TABLES
    from salesml.validation import validate_table

    store = open_store(home)
    ev = raw["lead_events"]
    owner, thief, other = _leads_with_events(raw, 60, 3)
    taken = ev.loc[ev["lead_id"] == owner, "event_id"].iloc[0]
    exported = {lead: int((ev["lead_id"] == lead).sum()) for lead in (owner, thief, other)}
    rows = pd.concat([_events(thief, [taken]), _events(other, ["rb-moved"]), _events(thief, ["rb-moved"], 20)],
                     ignore_index=True)
    spec = TABLES["lead_events"]
    with LiveStore(live_path(home)) as live:  # straight to the store, as the old push path allowed
        for i in range(len(rows)):
            typed, problems = validate_table(rows.iloc[[i]], spec, optional=set(spec.omittable))
            assert not problems
            live.append("lead_events", typed)
        assert live.rows("lead_events", [other]).empty  # its id moved to thief later
        assert set(live.rows("lead_events", [thief])["event_id"]) == {taken, "rb-moved"}

    build_feature_files(home, export_dir, progress=lambda _: None)
    materialize(home)
    expect = {owner: exported[owner], thief: exported[thief] + 1, other: exported[other]}
    for lead, n in expect.items():
        assert _offline_total(home, lead) == n, lead
        assert _online_total(home, store, lead) == n, lead
    # And the next push of thief's computes the same as the rebuild did.
    push_events(home, export_dir, "lead_events", _events(thief, ["rb-after"], 10), store)
    assert _online_total(home, store, thief) == exported[thief] + 2
