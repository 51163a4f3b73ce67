"""The API key file when it goes wrong (issue 22 items 3, 9), and the stores' file mode: every
unreadable, empty, deleted or ambiguous key file is a fast 503 with an access row, never a 401, a
hang or a plain 500; a new SQLite store is readable by its owner only."""

from __future__ import annotations

import json
import stat
import time

import pytest
from starlette.testclient import TestClient

from salesml import sqlite
from salesml.settings import Settings
from serving.auth import KeyFileError, KeyStore, digest
from serving.gate import Gate
from serving.predlog import PredictionLog


async def _ok(scope, receive, send):
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b"{}"})


def _break_unicode(path):
    path.write_bytes(b"\x00\x9f\xff\xfe binary \x80\x81")


def _break_utf16(path):
    path.write_bytes(path.read_text().encode("utf-16"))  # with its BOM


def _break_directory(path):
    path.unlink()
    path.mkdir()


def _break_empty(path):
    path.write_bytes(b"")


def _break_blank(path):
    path.write_text("  \n")


def _break_deleted(path):
    path.unlink()


def _break_duplicate(path):
    entries = json.loads(path.read_text())
    sales = next(e for e in entries if e["role"] == "sales")
    entries.append({"key_id": "hand-edited", "role": "admin", "sha256": sales["sha256"]})
    path.write_text(json.dumps(entries))


BREAKS = {"binary": (_break_unicode, "not UTF-8"), "utf16-bom": (_break_utf16, "not UTF-8"),
          "directory": (_break_directory, "directory"), "empty": (_break_empty, "empty"),
          "blank": (_break_blank, "empty"), "deleted": (_break_deleted, "does not exist"),
          "duplicate-digest": (_break_duplicate, "same sha256")}


@pytest.mark.parametrize("how", sorted(BREAKS))
def test_a_broken_key_file_is_a_fast_503_on_every_call_with_an_access_row(tmp_path, how):
    settings = Settings(home=tmp_path)
    store = KeyStore(settings.api_keys_path)
    keys = {role: store.add(role, f"t-{role}")[1] for role in ("sales", "admin")}
    client = TestClient(Gate(_ok, settings), raise_server_exceptions=False)
    assert client.post("/health", json={}, headers={"X-API-Key": keys["sales"]}).status_code == 200
    brk, words = BREAKS[how]
    brk(settings.api_keys_path)
    t0 = time.perf_counter()
    answers = [client.post(path, json={}, headers={"X-API-Key": key})
               for key in (keys["sales"], keys["admin"], "sml_unknown") for path in ("/health", "/events")]
    assert time.perf_counter() - t0 < 5
    assert [r.status_code for r in answers] == [503] * 6, [(r.status_code, r.text) for r in answers]
    assert all("key file" in r.json()["error"] for r in answers)
    assert client.get("/livez").status_code == 200
    access = PredictionLog(settings.prediction_log_path).access()
    assert list(access["status"]) == [200] + [503] * 6
    with pytest.raises(KeyFileError, match=words):
        KeyStore(settings.api_keys_path).callers()


def test_a_duplicate_digest_names_both_key_ids_and_never_lets_the_later_role_win(tmp_path):
    path = tmp_path / "keys.json"
    entries = [{"key_id": "a-sales", "role": "sales", "sha256": digest("k")},
               {"key_id": "b-admin", "role": "admin", "sha256": digest("k")}]
    path.write_text(json.dumps(entries))
    with pytest.raises(KeyFileError, match=r"entries 0 and 1 have the same sha256 .*a-sales, b-admin"):
        KeyStore(path).resolve("k")
    path.write_text(json.dumps([entries[0], {**entries[0], "sha256": digest("other")}]))
    with pytest.raises(KeyFileError, match="same key_id a-sales"):
        KeyStore(path).check()


def test_a_fixed_key_file_serves_again_and_keys_add_mends_an_empty_one(tmp_path):
    settings = Settings(home=tmp_path)
    store = KeyStore(settings.api_keys_path)
    assert store.check() == 0  # no file yet: serve starts, every call is a 503 until a key exists
    key = store.add("csm", "t")[1]
    settings.api_keys_path.write_bytes(b"")
    with pytest.raises(KeyFileError, match="empty"):
        store.resolve(key)
    again = store.add("csm", "t2")[1]  # creating a key is how an empty file is fixed
    assert store.resolve(again) is not None and store.resolve(key) is None
    settings.api_keys_path.write_bytes(b"\xff\xfe")
    with pytest.raises(KeyFileError, match="not UTF-8"):
        store.add("csm", "t3")  # an unreadable file is never overwritten


def test_keys_carry_owner_and_team_and_old_entries_are_unscoped(tmp_path):
    path = tmp_path / "keys.json"
    store = KeyStore(path)
    key = store.add("csm", "ana", owner="csm-7", team="emea")[1]
    entries = json.loads(path.read_text())
    entries.append({"key_id": "legacy", "role": "csm", "sha256": digest("old")})  # a file from before owners
    path.write_text(json.dumps(entries))
    ana, legacy = store.resolve(key), store.resolve("old")
    assert (ana.owner, ana.team, ana.scoped) == ("csm-7", "emea", True)
    assert ana.reaches("csm-7", "apac") and ana.reaches("csm-9", "emea") and not ana.reaches("csm-9", "apac")
    assert (legacy.owner, legacy.team, legacy.scoped, legacy.person) == (None, None, False, "legacy")
    assert legacy.reaches("anyone", "any team")
    with pytest.raises(ValueError, match="owner must not be blank"):
        store.add("csm", "x", owner=" ")


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o000])
def test_a_new_sqlite_store_is_mode_0600_whatever_the_umask(tmp_path, umask):
    import os

    old = os.umask(umask)
    try:
        con = sqlite.connect(tmp_path / "s" / "store.db", "CREATE TABLE t (x INTEGER);")
        with sqlite.immediate(con):
            con.execute("INSERT INTO t VALUES (1)")
    finally:
        os.umask(old)
    files = sorted(tmp_path.joinpath("s").iterdir())
    assert {p.name for p in files} >= {"store.db", "store.db-wal", "store.db-shm"}
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {p.name: 0o600 for p in files}
    con.close()


def test_the_services_stores_are_created_0600(tmp_path):
    from serving.actions.warnings import WarningStore

    settings = Settings(home=tmp_path)
    PredictionLog(settings.prediction_log_path).access()
    WarningStore(tmp_path / "actions" / "warnings.db").close()
    for path in (settings.prediction_log_path, tmp_path / "actions" / "warnings.db"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
