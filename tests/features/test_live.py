"""The live-event store: appends, entity-indexed reads, rebuilds, migration, refusals, rollbacks."""

from __future__ import annotations

import shutil
import sqlite3

import pandas as pd
import pytest

from features.live import LiveStore, legacy_parts_dir, live_path, open_live
from features.store import _history, build_feature_files, known_ids, online_features, push_events
from salesml.contract import TS
from salesml.settings import Settings
from salesml.validation import ContractError

pytestmark = pytest.mark.integration


class RecordingStore:
    """Stands in for the Feast store where a test needs its own working folder: keeps what was pushed."""

    def __init__(self):
        self.pushed: list[tuple[str, pd.DataFrame]] = []

    def write_to_online_store(self, view, df, allow_registry_cache=True):
        self.pushed.append((view, df.copy()))


@pytest.fixture
def fresh(tmp_path) -> Settings:
    """A working folder of its own (an empty live store), reading the session's export."""
    return Settings(home=tmp_path / "home")


def events(lead: str, ids: list[str], at: pd.Timestamp | None = None) -> pd.DataFrame:
    at = at or pd.Timestamp.now(tz="UTC").floor("s") - pd.Timedelta(minutes=5)
    return pd.DataFrame({"event_id": ids, "lead_id": [lead] * len(ids),
                         "occurred_at": [at + pd.Timedelta(seconds=i) for i in range(len(ids))],
                         "event_type": ["page_view"] * len(ids), "page": ["pricing"] * len(ids)})


def typed_events(leads: list[str], prefix: str) -> pd.DataFrame:
    at = pd.Timestamp("2026-01-05T10:00:00.123456Z")
    return pd.DataFrame({"event_id": pd.array([f"{prefix}-{i}" for i in range(len(leads))], dtype="string"),
                         "lead_id": pd.array(leads, dtype="string"),
                         "occurred_at": pd.Series([at] * len(leads)).astype(TS),
                         "event_type": pd.array(["webinar"] * len(leads), dtype="string")})


def test_rows_come_back_with_their_types(tmp_path):
    df = pd.DataFrame({
        "event_id": pd.array(["e1", "e2", "e3"], dtype="string"),
        "lead_id": pd.array(["L-1", "L-2", "L-1"], dtype="string"),
        "occurred_at": pd.Series(pd.to_datetime(["2026-01-01T00:00:00.123456Z", None, "2025-12-31T23:59:59Z"],
                                                utc=True, format="ISO8601")).astype(TS),
        "dwell_seconds": pd.array([0.1 + 0.2, None, 1e-300], dtype="Float64"),
        "visits": pd.array([2**62, None, -1], dtype="Int64"),
        "consented": pd.array([True, None, False], dtype="boolean"),
        "page": pd.array([None, "pricing", "ünïcode \"quoted\""], dtype="string"),
    })
    with LiveStore(tmp_path / "live.db") as live:
        assert live.append("lead_events", df) == 3
        pd.testing.assert_frame_equal(live.rows("lead_events"), df)
        pd.testing.assert_frame_equal(live.rows("lead_events", ["L-1"]), df.iloc[[0, 2]].reset_index(drop=True))
        assert live.rows("lead_events", ["nobody"]).empty
        assert live._con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert live._con.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_a_transaction_blocks_writers_not_readers(tmp_path):
    path = tmp_path / "live.db"
    with LiveStore(path) as a, LiveStore(path, timeout_s=0.1) as b:
        a.append("lead_events", typed_events(["L-1"], "x"))
        with a.transaction():
            a.append("lead_events", typed_events(["L-1"], "y"))
            assert len(b.rows("lead_events", ["L-1"])) == 1  # WAL: a reader sees the last commit, at once
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                with b.transaction():
                    pass
        with pytest.raises(RuntimeError, match="boom"), a.transaction():
            a.append("lead_events", typed_events(["L-1"], "z"))
            raise RuntimeError("boom")
        assert b.count("lead_events") == 2 and b.count("lead_events", ["L-1"]) == 2


def test_pushes_append_and_read_only_the_pushed_entity(fresh, export_dir, raw, monkeypatch):
    lead = raw["leads"]["lead_id"].iloc[10]
    exported = int((raw["lead_events"]["lead_id"] == lead).sum())
    read = []
    rows = LiveStore.rows

    def spy(self, table, ids=None):
        out = rows(self, table, ids)
        read.append((None if ids is None else set(ids), len(out)))
        return out

    monkeypatch.setattr(LiveStore, "rows", spy)
    store = RecordingStore()
    push_events(fresh, export_dir, "lead_events", events(lead, ["p0-a", "p0-b", "p0-c"]), store)
    with open_live(fresh) as live:
        assert live.count("lead_events") == 3  # N events pushed, N rows appended
    for i in range(1, 5):
        push_events(fresh, export_dir, "lead_events", events(lead, [f"p{i}"]), store)
    with open_live(fresh) as live:  # 200 other entities' pushes
        live.append("lead_events", typed_events([f"OTHER-{i}" for i in range(200)], "o"))
    for i in range(5, 10):
        push_events(fresh, export_dir, "lead_events", events(lead, [f"p{i}"]), store)

    assert read == [({lead}, n) for n in (0, *range(3, 12))]  # each push read this lead's rows only
    with open_live(fresh) as live:
        assert live.count("lead_events") == 212
        assert len(live.rows("lead_events", [lead])) == 12
    assert len(_history(fresh, export_dir, "lead_events", "lead_id", {lead})) == exported + 12
    last = store.pushed[-1][1]
    assert last["lead_id"].tolist() == [lead]
    assert last["events_total"].iloc[0] == exported + 12  # the last push saw every earlier one


def test_a_rebuild_includes_every_pushed_event(fresh, export_dir, raw):
    lead = raw["leads"]["lead_id"].iloc[11]
    at = pd.Timestamp.now(tz="UTC").floor("s") - pd.Timedelta(hours=1)
    push_events(fresh, export_dir, "lead_events", events(lead, ["r1"], at), RecordingStore())
    push_events(fresh, export_dir, "lead_events", events(lead, ["r2"], at + pd.Timedelta(minutes=1)),
                RecordingStore())
    usage = raw["usage_weekly"]
    alive = usage.groupby("account_id")["week_start"].max()
    account = alive[alive == alive.max()].index[1]
    last = usage[usage["account_id"] == account].sort_values("week_start").iloc[-1]
    week = last["week_start"] + pd.Timedelta(weeks=1)
    push_events(fresh, export_dir, "usage_weekly",
                pd.DataFrame([{**last.to_dict(), "week_start": week, "api_calls": 4321}]), RecordingStore())

    build_feature_files(fresh, export_dir, progress=lambda _: None)
    activity = pd.read_parquet(fresh.feature_data_dir / "lead_activity.parquet")
    mine = activity[activity["lead_id"] == lead].set_index("event_timestamp")
    exported = int((raw["lead_events"]["lead_id"] == lead).sum())
    assert mine.loc[at + pd.Timedelta(minutes=1), "events_total"] == exported + 2
    assert at in mine.index
    behaviour = pd.read_parquet(fresh.feature_data_dir / "behaviour.parquet")
    assert (behaviour.query("account_id == @account")["api_calls"] == 4321).sum() >= 1


def test_legacy_parquet_parts_are_folded_in_once_then_removed(fresh, export_dir, raw):
    lead = raw["leads"]["lead_id"].iloc[12]
    old = legacy_parts_dir(fresh, "lead_events")
    assert old == fresh.root / "data" / "live" / "lead_events"  # where the old push_events wrote them
    old.mkdir(parents=True)
    part = old / "part-20260101T000000000000-abcd1234.parquet"
    typed_events([lead, lead], "legacy").to_parquet(part, index=False)

    store = RecordingStore()
    push_events(fresh, export_dir, "lead_events", events(lead, ["after-upgrade"]), store)
    assert not part.exists() and not old.exists()
    with open_live(fresh) as live:
        got = live.rows("lead_events", [lead])
    assert got["event_id"].tolist() == ["legacy-0", "legacy-1", "after-upgrade"]
    exported = int((raw["lead_events"]["lead_id"] == lead).sum())
    assert store.pushed[-1][1]["events_total"].iloc[0] == exported + 3

    # A process that died between the commit and the removal: the part is not folded in twice.
    old.mkdir()
    typed_events([lead, lead], "legacy").to_parquet(part, index=False)
    with open_live(fresh) as live:
        assert live.count("lead_events") == 3
    assert not part.exists()


@pytest.mark.parametrize("table, column, bad", [
    ("lead_events", "lead_id", "LEAD-NOT-IN-EXPORT"),
    ("usage_weekly", "account_id", "ACC-NOT-IN-EXPORT"),
    ("lead_events", "lead_id", "../../x"),
    ("lead_events", "event_id", "e" * 500),
])
def test_unknown_or_malformed_ids_are_refused_and_nothing_changes(store_settings, store, export_dir, raw,
                                                                   table, column, bad):
    if table == "lead_events":
        entity, key = raw["leads"]["lead_id"].iloc[13], "lead_id"
        good = events(entity, ["ok-1", "ok-2"])
        service = "intent"
    else:
        usage = raw["usage_weekly"]
        entity, key = usage["account_id"].iloc[0], "account_id"
        last = usage[usage["account_id"] == entity].sort_values("week_start").iloc[-1]
        good = pd.DataFrame([{**last.to_dict(), "week_start": last["week_start"] + pd.Timedelta(weeks=1)}] * 2)
        good["api_calls"] = 777
        service = "chs"
    good.loc[1, column] = bad  # one bad row refuses the whole push
    before = online_features(store_settings, service, [{key: entity}], store)
    with open_live(store_settings) as live:
        count = live.count(table)
    with pytest.raises(ContractError) as err:
        push_events(store_settings, export_dir, table, good, store)
    [v] = err.value.violations
    assert (v.table, v.column, v.rows) == (table, column, [2])
    assert bad[:40] in v.found
    assert f"{table}.{column}: rows 2" in str(err.value)
    with open_live(store_settings) as live:
        assert live.count(table) == count
    pd.testing.assert_frame_equal(online_features(store_settings, service, [{key: entity}], store), before)


def test_a_push_against_an_export_without_the_parent_table_is_refused(fresh, export_dir, raw, tmp_path):
    partial = tmp_path / "no-leads"
    shutil.copytree(export_dir, partial)
    (partial / "leads.parquet").unlink()
    lead = raw["leads"]["lead_id"].iloc[14]
    with pytest.raises(ContractError, match="lead_events.lead_id: rows 1: expected a key present in "
                                            "leads.lead_id .*no usable leads table"):
        push_events(fresh, partial, "lead_events", events(lead, ["x1"]), RecordingStore())
    assert not live_path(fresh).exists()  # refused before the live store was even opened


def test_known_ids_are_read_once_per_file_version(export_dir, raw, tmp_path):
    ids = known_ids(export_dir, "accounts")
    assert ids == frozenset(raw["accounts"]["account_id"])
    assert known_ids(export_dir, "accounts") is ids  # cached
    csv = tmp_path / "accounts.csv"
    raw["accounts"].head(3).to_csv(csv, index=False)
    assert known_ids(tmp_path, "accounts") == frozenset(raw["accounts"]["account_id"].head(3))
    raw["accounts"].head(4).to_csv(csv, index=False)  # a new version of the file is read again
    assert len(known_ids(tmp_path, "accounts")) == 4
    with pytest.raises(ContractError, match="leads.parquet or leads.csv"):
        known_ids(tmp_path, "leads")


def test_a_failed_online_push_keeps_nothing(store_settings, store, export_dir, raw, monkeypatch):
    lead = raw["leads"]["lead_id"].iloc[15]
    before = online_features(store_settings, "intent", [{"lead_id": lead}], store)
    with open_live(store_settings) as live:
        count = live.count("lead_events")

    def down(*args, **kwargs):
        raise ConnectionError("online store down")

    monkeypatch.setattr(store, "write_to_online_store", down)
    with pytest.raises(ConnectionError):
        push_events(store_settings, export_dir, "lead_events", events(lead, ["lost-1"]), store)
    monkeypatch.undo()
    with open_live(store_settings) as live:
        assert live.count("lead_events") == count
        mine = live.rows("lead_events", [lead])
        assert mine.empty or "lost-1" not in set(mine["event_id"])
    pd.testing.assert_frame_equal(online_features(store_settings, "intent", [{"lead_id": lead}], store), before)


def test_concurrent_pushes_for_one_entity_each_see_the_others(fresh, export_dir, raw):
    from concurrent.futures import ThreadPoolExecutor

    lead = raw["leads"]["lead_id"].iloc[16]
    exported = int((raw["lead_events"]["lead_id"] == lead).sum())
    store = RecordingStore()
    open_live(fresh).close()  # create the file first, as the service's first push would

    def worker(w: int):
        for i in range(3):  # each push opens its own connection, as separate workers would
            push_events(fresh, export_dir, "lead_events", events(lead, [f"w{w}-{i}"]), store)

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(worker, range(2)))
    totals = sorted(df["events_total"].iloc[0] for _, df in store.pushed)
    assert totals == [exported + n for n in range(1, 7)]  # no push missed another's row
