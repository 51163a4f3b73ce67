"""Warnings raised from CHS level changes, with their playbook, owner, deadline and interventions.

File
    ``<home>/actions/warnings.db`` (``warnings_path``). SQLite in WAL mode, ``busy_timeout`` so
    writers from several processes (the scoring job, service workers, the CLI) queue; every write
    is one ``BEGIN IMMEDIATE`` transaction, so reading the per-account state, deciding and writing
    cannot interleave with another writer. One connection per store, guarded by a lock: an
    instance may be shared by the threads of a process (the background webhook deliverer).

Tables
    ``warnings``        one row per warning; ``key`` (account|as_of|kind|level) is UNIQUE.
    ``account_state``   per account, what the idempotency rule needs (``serving.actions.rules``).
    ``events``          the outbox: ``warning.raised`` / ``warning.escalated``, written in the same
                        transaction as the change they announce, UNIQUE (event, warning_id).
    ``deliveries``      every webhook attempt (``serving.actions.webhook``).
    ``interventions``   who did what when: ``applied`` (a playbook), ``other`` (no playbook named)
                        or ``not_applicable`` (with a reason); ``recorded_by`` the key (or the CLI's
                        ``--by``), ``person`` whom the fuse counts (the key's owner, else the key).
    ``playbook_state``  the fuse: the current run of not-applicable marks and its distinct people,
                        frozen, flagged reason.
    Columns added since a store was created are added to it when it is opened.

Raising (``raise_warnings``) follows the rule written in ``serving.actions.rules``: re-running a
scoring date raises nothing new, and a worsening seen first by a live push is not raised again
by the next scheduled run. A share ``holdout_share`` of warnings is held out: raised, owned,
delivered and tracked like any other, but without the playbook prompt; the playbook that would
have been offered is recorded (``playbook_id``, ``prompted`` = 0) so each playbook's effect can
be estimated by comparing prompted with held-out warnings. The person-facing view
(``public_view``, ``inbox``, webhook payloads) never shows a held-out warning's playbook.

The fuse (``serving.actions.fuse``): a playbook marked not applicable by ``fuse`` distinct people
in a row is frozen, no longer offered, and flagged for review; ``flag_playbook`` lets the effect
estimate flag (and freeze) a harmful one too.

Who may act (``intervene`` and ``inbox`` given the calling key, a ``serving.auth.Caller``): a key
with an owner or a team reaches only the warnings of its owner and of its team (403 naming the
warning otherwise); an admin key, or one with neither, reaches all. A key may date its
intervention at most ``CLOCK_SKEW`` before or after the request's arrival (400 on ``at``): the
time a person clicked, not the time the warning was raised. The command line (``salesml warnings
intervene --by``, an operator on the host) may record an earlier time, never one before the
warning was raised. A key records at most ``marks_per_key_hour`` not-applicable marks in any hour
(429 beyond).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from salesml import sqlite
from serving.actions.fuse import FuseMixin
from serving.actions.owners import OwnerDirectory
from serving.actions.rules import SOURCES, AccountState, WarningError, decide, holdout, iso, normalize
from serving.auth import Caller
from serving.playbooks import Playbooks, load_playbooks
from serving.predlog import now_utc

if TYPE_CHECKING:
    from salesml.settings import Settings

__all__ = ["WarningConfig", "WarningError", "WarningStore", "open_warning_store", "public_view", "warnings_path"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS warnings (
    warning_id TEXT PRIMARY KEY, key TEXT NOT NULL UNIQUE, account_id TEXT NOT NULL, as_of TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('level', 'early_warning')), old_level TEXT, new_level TEXT NOT NULL,
    level TEXT NOT NULL, score REAL, previous_score REAL, early_warning INTEGER, churn_probability REAL,
    change_text TEXT, change_points REAL, playbook_id TEXT, playbook_version TEXT, playbook_text TEXT,
    playbook_note TEXT, prompted INTEGER NOT NULL, holdout INTEGER NOT NULL, owner TEXT NOT NULL,
    team TEXT NOT NULL, raised_at TEXT NOT NULL, due_at TEXT NOT NULL, status TEXT NOT NULL,
    escalated_at TEXT, source TEXT NOT NULL CHECK (source IN ('run', 'live')));
CREATE INDEX IF NOT EXISTS warnings_owner_status ON warnings (owner, status);
CREATE INDEX IF NOT EXISTS warnings_status_due ON warnings (status, due_at);
CREATE INDEX IF NOT EXISTS warnings_account ON warnings (account_id);
CREATE TABLE IF NOT EXISTS account_state (
    account_id TEXT PRIMARY KEY, as_of TEXT NOT NULL, level TEXT NOT NULL, warned_rank INTEGER NOT NULL,
    ew_warned INTEGER NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY, event TEXT NOT NULL, warning_id TEXT NOT NULL REFERENCES warnings,
    payload TEXT NOT NULL, created_at TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'pending',
    claimed_at TEXT, delivered_at TEXT, UNIQUE (event, warning_id));
CREATE INDEX IF NOT EXISTS events_status ON events (status);
CREATE INDEX IF NOT EXISTS events_warning ON events (warning_id, status);
CREATE TABLE IF NOT EXISTS deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL, event TEXT NOT NULL,
    warning_id TEXT NOT NULL, attempt INTEGER NOT NULL, at TEXT NOT NULL, url TEXT, http_status INTEGER,
    error TEXT, delivered INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS deliveries_event ON deliveries (event_id, attempt);
CREATE TABLE IF NOT EXISTS interventions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, warning_id TEXT NOT NULL REFERENCES warnings,
    recorded_by TEXT NOT NULL, at TEXT NOT NULL, recorded_at TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('applied', 'other', 'not_applicable')), playbook_id TEXT, reason TEXT,
    person TEXT);
CREATE INDEX IF NOT EXISTS interventions_warning ON interventions (warning_id, at);
CREATE TABLE IF NOT EXISTS playbook_state (
    playbook_id TEXT PRIMARY KEY, consecutive_not_applicable INTEGER NOT NULL DEFAULT 0,
    frozen INTEGER NOT NULL DEFAULT 0, frozen_at TEXT, flagged_reason TEXT, flagged_at TEXT, updated_at TEXT,
    run_people TEXT NOT NULL DEFAULT '[]');
CREATE INDEX IF NOT EXISTS interventions_by ON interventions (recorded_by, kind, recorded_at);
"""
# columns added since the first schema: (table, column, declaration), added to an older store on open
ADDED = (("interventions", "person", "TEXT"), ("playbook_state", "run_people", "TEXT NOT NULL DEFAULT '[]'"))
# how far a key's intervention time may lie from the request's arrival, either way (clocks differ,
# a form is filled in for a minute or two); the command line may record earlier times
CLOCK_SKEW = timedelta(minutes=5)
_CHUNK = 500


@dataclass(frozen=True)
class WarningConfig:
    due_hours: float = 4.0
    holdout_share: float = 0.1
    salt: str = "ab-1"
    fuse: int = 5
    marks_per_key_hour: int = 20

    @classmethod
    def from_settings(cls, settings: Settings) -> WarningConfig:
        return cls(settings.warning_due_hours, settings.playbook_holdout_share, settings.experiment_salt,
                   settings.playbook_fuse, settings.playbook_marks_per_key_hour)


def warnings_path(settings: Settings) -> Path:
    return settings.actions_dir / "warnings.db"


def open_warning_store(settings: Settings) -> WarningStore:
    """The store of ``settings``: its file, playbooks, owners (from the export) and rules."""
    return WarningStore(warnings_path(settings), config=WarningConfig.from_settings(settings),
                        playbooks=load_playbooks(settings), owners=OwnerDirectory.from_settings(settings),
                        synchronous=settings.log_synchronous)


def public_view(w: dict) -> dict:
    """A warning as its owner sees it: a held-out warning shows no playbook (nor that it is held out)."""
    out = {k: w[k] for k in ("warning_id", "account_id", "as_of", "kind", "old_level", "new_level", "level",
                             "score", "previous_score", "early_warning", "churn_probability", "change_text",
                             "change_points", "owner", "team", "raised_at", "due_at", "status",
                             "escalated_at", "source")}
    shown = bool(w["prompted"]) and w["playbook_id"] is not None
    out["playbook"] = ({"id": w["playbook_id"], "version": w["playbook_version"], **json.loads(w["playbook_text"])}
                       if shown else None)
    out["playbook_note"] = w["playbook_note"] if w["prompted"] else None
    out["early_warning"] = None if w["early_warning"] is None else bool(w["early_warning"])
    return out


class WarningStore(FuseMixin):
    def __init__(self, path: Path | str, *, config: WarningConfig | None = None, playbooks: Playbooks | None = None,
                 owners: OwnerDirectory | None = None, synchronous: str = "NORMAL", timeout_s: float = 30.0):
        self.path = Path(path)
        self.config = config or WarningConfig()
        self.playbooks = playbooks or load_playbooks()
        self.owners = owners or OwnerDirectory("csm-team")
        self._lock = threading.RLock()
        self._con = sqlite.connect(self.path, SCHEMA, synchronous=synchronous, timeout_s=timeout_s, threads=True)
        self._con.row_factory = sqlite3.Row
        self._write(self._add_columns)

    @staticmethod
    def _add_columns(con: sqlite3.Connection) -> None:
        """A store created before a column of ``ADDED`` gets it (in the write transaction, so two
        processes opening it at once add it once)."""
        for table, column, decl in ADDED:
            if column not in {r[1] for r in con.execute(f"PRAGMA table_info({table})")}:
                con.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")

    # --- plumbing --------------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            self._con.close()

    def __enter__(self) -> WarningStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _write(self, work):
        """``work(con)`` in one BEGIN IMMEDIATE transaction (the write lock up front, so a concurrent
        writer waits on busy_timeout instead of failing on upgrade); all or nothing."""
        with self._lock, sqlite.immediate(self._con) as con:
            return work(con)

    def _rows(self, sql: str, params=()) -> list[dict]:
        with self._lock:
            return [dict(r) for r in self._con.execute(sql, params).fetchall()]

    @staticmethod
    def _event(con, event: str, warning: dict, at: str) -> None:
        payload = {"event": event, "warning": public_view(warning)}
        con.execute("INSERT OR IGNORE INTO events (event_id, event, warning_id, payload, created_at) "
                    "VALUES (?, ?, ?, ?, ?)", (f"{event}:{warning['warning_id']}", event, warning["warning_id"],
                                               json.dumps(payload), at))

    # --- raising ---------------------------------------------------------------------------------
    def raise_warnings(self, transitions: pd.DataFrame, *, source: str, now=None,
                       owners: OwnerDirectory | None = None) -> list[dict]:
        """Raise the warnings ``transitions`` call for (see the module docstring); returns the new ones."""
        if source not in SOURCES:
            raise WarningError("source", f"source must be one of {', '.join(SOURCES)}, got {source!r}")
        rows = normalize(transitions)
        if not rows:
            return []
        raised_at = iso(now or now_utc())
        due_at = iso(pd.Timestamp(raised_at) + pd.Timedelta(hours=self.config.due_hours))
        who = (owners or self.owners).lookup({t.account_id for t in rows})  # file reads outside the write lock

        def work(con) -> list[dict]:
            ids = sorted(who)
            state = {}
            for i in range(0, len(ids), _CHUNK):
                chunk = ids[i:i + _CHUNK]
                for r in con.execute(f"SELECT * FROM account_state WHERE account_id IN ({','.join('?' * len(chunk))})",
                                     chunk):
                    state[r["account_id"]] = AccountState(r["as_of"], r["level"], r["warned_rank"],
                                                          bool(r["ew_warned"]))
            decisions, new_state = decide(rows, state)
            frozen, out = self._frozen(con), []
            for d in decisions:
                t = d.transition
                offer = self.playbooks.pick(d.level, frozen)
                held = holdout(self.config.salt, d.key, self.config.holdout_share)
                owner, team = who[t.account_id]
                w = dict(warning_id=d.warning_id, key=d.key, account_id=t.account_id, as_of=t.as_of, kind=d.kind,
                         old_level=t.old_level, new_level=t.new_level, level=d.level,
                         early_warning=None if t.early_warning is None else int(t.early_warning), **t.values,
                         playbook_id=offer.playbook.id if offer.playbook else None,
                         playbook_version=offer.version if offer.playbook else None,
                         playbook_text=json.dumps({"title": offer.playbook.title, "steps": offer.playbook.steps})
                         if offer.playbook else None,
                         playbook_note=offer.note, prompted=int(not held), holdout=int(held), owner=owner, team=team,
                         raised_at=raised_at, due_at=due_at, status="open", escalated_at=None, source=source)
                cur = con.execute(f"INSERT OR IGNORE INTO warnings ({', '.join(w)}) VALUES ({', '.join('?' * len(w))})",
                                  list(w.values()))
                if cur.rowcount == 1:  # 0: the same warning was raised before (the last guard of the rule)
                    self._event(con, "warning.raised", w, raised_at)
                    out.append(w)
            con.executemany(
                "INSERT INTO account_state VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (account_id) DO UPDATE SET "
                "as_of = excluded.as_of, level = excluded.level, warned_rank = excluded.warned_rank, "
                "ew_warned = excluded.ew_warned, updated_at = excluded.updated_at",
                [(a, s.as_of, s.level, s.warned_rank, int(s.ew_warned), raised_at) for a, s in new_state.items()
                 if state.get(a) != s])
            return out

        return self._write(work)

    # --- reading ---------------------------------------------------------------------------------
    def get(self, warning_id: str) -> dict | None:
        """The full record (held-out fields included) with its interventions; ``public_view`` for people."""
        rows = self._rows("SELECT * FROM warnings WHERE warning_id = ?", (warning_id,))
        if not rows:
            return None
        rows[0]["interventions"] = self._rows(
            "SELECT recorded_by AS by, at, recorded_at, kind, playbook_id, reason FROM interventions "
            "WHERE warning_id = ? ORDER BY at, seq", (warning_id,))
        return rows[0]

    def account_levels(self, account_ids) -> dict[str, dict]:
        """The last level seen per account (by a run or a live event) and its date: what a live event
        is compared with. Accounts never scored are absent."""
        ids = sorted({str(a) for a in account_ids})
        out: dict[str, dict] = {}
        for i in range(0, len(ids), _CHUNK):
            chunk = ids[i:i + _CHUNK]
            for r in self._rows(f"SELECT account_id, as_of, level FROM account_state WHERE account_id IN "
                                f"({','.join('?' * len(chunk))})", chunk):
                out[r["account_id"]] = {"as_of": r["as_of"], "level": r["level"]}
        return out

    def inbox(self, owner: str | None = None, status: str | None = None, level: str | None = None,
              limit: int = 100, *, caller: Caller | None = None) -> list[dict]:
        """Warnings as their owners see them (``public_view``), newest first; those ``caller`` reaches
        (see the module docstring). Asking for another owner's warnings with a key that has an owner
        and no team is refused (403 on ``owner``)."""
        filters = (("owner", owner), ("status", status), ("level", level))
        where: list[tuple[str, tuple[str | None, ...]]] = [(f"{k} = ?", (v,)) for k, v in filters if v is not None]
        if caller is not None and caller.scoped:
            if owner is not None and owner != caller.owner and caller.team is None:
                raise WarningError("owner", f"key {caller.key_id} (owner {caller.owner}) reads only its own "
                                            f"warnings, not those of {owner!r}", status=403)
            where.append(("(owner = ? OR team = ?)", (caller.owner, caller.team)))
        sql = ("SELECT * FROM warnings" + (" WHERE " + " AND ".join(c for c, _ in where) if where else "")
               + " ORDER BY raised_at DESC, warning_id LIMIT ?")
        return [public_view(w) for w in self._rows(sql, (*(p for _, ps in where for p in ps), int(limit)))]

    def frame(self) -> pd.DataFrame:
        """Every warning with its first intervention (by time done), for reports and effect estimates."""
        with self._lock:
            df = pd.read_sql_query(
                "WITH ranked AS (SELECT *, ROW_NUMBER() OVER (PARTITION BY warning_id ORDER BY at, seq) AS n, "
                "COUNT(*) OVER (PARTITION BY warning_id) AS n_interventions, "
                "SUM(kind = 'not_applicable') OVER (PARTITION BY warning_id) AS not_applicable_marks "
                "FROM interventions) "
                "SELECT w.*, r.at AS first_intervention_at, r.kind AS first_intervention_kind, "
                "r.playbook_id AS first_intervention_playbook, COALESCE(r.n_interventions, 0) AS n_interventions, "
                "COALESCE(r.not_applicable_marks, 0) AS not_applicable_marks "
                "FROM warnings w LEFT JOIN ranked r ON r.warning_id = w.warning_id AND r.n = 1 "
                "ORDER BY w.raised_at, w.warning_id", self._con)
        for c in ("as_of", "raised_at", "due_at", "escalated_at", "first_intervention_at"):
            df[c] = pd.to_datetime(df[c], utc=True, format="ISO8601")
        for c in ("prompted", "holdout"):
            df[c] = df[c].astype(bool)
        for c in ("score", "previous_score", "churn_probability", "change_points"):
            df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
        df["early_warning"] = df["early_warning"].astype("boolean")
        df["hours_to_first_intervention"] = (df["first_intervention_at"] - df["raised_at"]).dt.total_seconds() / 3600
        return df.drop(columns="playbook_text")

    # --- interventions and the fuse --------------------------------------------------------------
    def intervene(self, warning_id: str, by: str | Caller, at=None, playbook_id: str | None = None,
                  not_applicable: bool = False, reason: str | None = None, *, now=None) -> dict:
        """Record an intervention; returns the warning's new record. Errors are ``WarningError``s with
        ``field`` and ``status``.

        ``by``: the calling key (its reach, time skew and mark rate are checked, see the module
        docstring), or a name (the command line: an operator). ``now``: when the request arrived.
        ``playbook_id`` given: that playbook was applied (or, with ``not_applicable``, is the one judged
        not applicable). Not applicable without a playbook counts against the playbook the warning
        prompted; a held-out warning prompted none, so its not-applicable marks feed no fuse."""
        now_ts = pd.Timestamp(iso(now or now_utc()))
        caller = by if isinstance(by, Caller) else None
        name = caller.key_id if caller is not None else str(by or "").strip()
        if not name:
            raise WarningError("by", "say who intervened")
        person = caller.person if caller is not None else name
        if not_applicable and not (reason and reason.strip()):
            raise WarningError("reason", "a not-applicable mark needs a reason")
        if playbook_id is not None and self.playbooks.get(playbook_id) is None:
            known = ", ".join(p.id for p in self.playbooks.items)
            raise WarningError("playbook_id", f"unknown playbook {playbook_id!r} (playbooks file version "
                                              f"{self.playbooks.version}: {known})")
        try:
            at_ts = pd.Timestamp(iso(at if at is not None else now_ts))
        except (ValueError, TypeError):
            raise WarningError("at", f"not a time: {at!r}") from None
        skew = int(CLOCK_SKEW.total_seconds() // 60)
        if at_ts > now_ts + CLOCK_SKEW:
            raise WarningError("at", f"{at_ts.isoformat()} is in the future (more than {skew} min after the "
                                     f"request arrived at {now_ts.isoformat()})")
        if caller is not None and at_ts < now_ts - CLOCK_SKEW:
            raise WarningError("at", f"{at_ts.isoformat()} is more than {skew} min before the request arrived "
                                     f"({now_ts.isoformat()}): record an intervention when it is done")

        def work(con) -> None:
            w = con.execute("SELECT * FROM warnings WHERE warning_id = ?", (warning_id,)).fetchone()
            if w is None:
                raise WarningError("warning_id", f"unknown warning {warning_id!r}", status=404)
            if caller is not None and not caller.reaches(w["owner"], w["team"]):
                raise WarningError("warning_id", f"key {caller.key_id} (owner {caller.owner or '-'}, team "
                                                 f"{caller.team or '-'}) may not act on warning {warning_id}: it "
                                                 f"belongs to owner {w['owner']} of team {w['team']}", status=403)
            if caller is not None and not_applicable:
                self._check_mark_rate(con, caller.key_id, now_ts)
            if at_ts < pd.Timestamp(w["raised_at"]):
                raise WarningError("at", f"{at_ts.isoformat()} is before the warning was raised ({w['raised_at']})")
            if playbook_id is not None and not not_applicable and playbook_id in self._frozen(con):
                raise WarningError("playbook_id", f"playbook {playbook_id!r} is frozen for review")
            kind = "not_applicable" if not_applicable else ("applied" if playbook_id else "other")
            target = playbook_id or (w["playbook_id"] if not_applicable and w["prompted"] else None)
            con.execute("INSERT INTO interventions (warning_id, recorded_by, at, recorded_at, kind, playbook_id, "
                        "reason, person) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (warning_id, name, iso(at_ts), iso(now_ts), kind, target, reason, person))
            con.execute("UPDATE warnings SET status = ? WHERE warning_id = ?",
                        ("not_applicable" if not_applicable else "handled", warning_id))
            if target is not None and kind != "other":
                self._fuse(con, target, not_applicable, reason, iso(now_ts), person)

        self._write(work)
        done = self.get(warning_id)
        assert done is not None  # written above, and warnings are never deleted
        return done

    # --- escalation ------------------------------------------------------------------------------
    def escalate(self, now=None) -> list[dict]:
        """Escalate, once, every open warning past its due time without any intervention."""
        at = iso(now or now_utc())

        def work(con) -> list[dict]:
            due = [dict(r) for r in con.execute(
                "SELECT * FROM warnings w WHERE status = 'open' AND due_at <= ? AND NOT EXISTS "
                "(SELECT 1 FROM interventions i WHERE i.warning_id = w.warning_id)", (at,))]
            for w in due:
                w.update(status="escalated", escalated_at=at)
                con.execute("UPDATE warnings SET status = 'escalated', escalated_at = ? WHERE warning_id = ?",
                            (at, w["warning_id"]))
                self._event(con, "warning.escalated", w, at)
            return due

        return self._write(work)

    # --- the outbox (serving.actions.webhook delivers it) ---------------------------------------------------
    def claim_event(self, now, lease_s: float) -> dict | None:
        """The oldest pending event nobody else is delivering, marked as claimed now (one per call: a
        claim starts when its delivery does, so it never outlives its lease waiting behind others).
        An event whose warning has an earlier event still pending waits for it: the events of one
        warning are delivered in order, however many deliverers run. A claim older than ``lease_s``
        is taken to be from a deliverer that died."""
        at = iso(now)
        stale = iso(pd.Timestamp(at) - pd.Timedelta(seconds=lease_s))

        def work(con) -> dict | None:
            r = con.execute("SELECT * FROM events e WHERE status = 'pending' AND "
                            "(claimed_at IS NULL OR claimed_at < ?) AND NOT EXISTS (SELECT 1 FROM events p "
                            "WHERE p.warning_id = e.warning_id AND "
                            "p.status = 'pending' AND (p.created_at, p.event_id) < (e.created_at, e.event_id)) "
                            "ORDER BY created_at, event_id LIMIT 1", (stale,)).fetchone()
            if r is not None:
                con.execute("UPDATE events SET claimed_at = ? WHERE event_id = ?", (at, r["event_id"]))
            return None if r is None else dict(r)

        return self._write(work)

    def requeue_failed(self) -> int:
        """Failed events (every attempt spent) become pending again, to be retried."""
        return self._write(lambda con: con.execute(
            "UPDATE events SET status = 'pending', claimed_at = NULL WHERE status = 'failed'").rowcount)

    def note_undeliverable(self, note: str, at) -> int:
        """Log ``note`` once (attempt 0) for each pending event that does not have it yet; events stay pending."""
        return self._write(lambda con: con.execute(
            "INSERT INTO deliveries (event_id, event, warning_id, attempt, at, url, http_status, error, delivered) "
            "SELECT e.event_id, e.event, e.warning_id, 0, ?, NULL, NULL, ?, 0 FROM events e WHERE e.status = 'pending' "
            "AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.event_id AND d.error = ?)",
            (iso(at), note, note)).rowcount)

    def attempts_made(self, event_id: str) -> int:
        rows = self._rows("SELECT MAX(attempt) AS n FROM deliveries WHERE event_id = ?", (event_id,))
        return int(rows[0]["n"] or 0)

    def log_delivery(self, event: dict, attempt: int, at, url: str | None, http_status: int | None,
                     error: str | None, delivered: bool) -> None:
        self._write(lambda con: con.execute(
            "INSERT INTO deliveries (event_id, event, warning_id, attempt, at, url, http_status, error, delivered) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (event["event_id"], event["event"], event["warning_id"], attempt,
                                                   iso(at), url, http_status, error, int(delivered))))

    def finish_event(self, event_id: str, status: str, at=None) -> None:
        """``delivered`` or ``failed`` (all attempts spent), or ``pending`` again (released, e.g. no webhook)."""
        self._write(lambda con: con.execute(
            "UPDATE events SET status = ?, claimed_at = NULL, delivered_at = ? WHERE event_id = ?",
            (status, iso(at) if status == "delivered" and at is not None else None, event_id)))

    def events(self, status: str | None = None) -> pd.DataFrame:
        with self._lock:
            return pd.read_sql_query("SELECT * FROM events" + (" WHERE status = ?" if status else "")
                                     + " ORDER BY created_at, event_id", self._con, params=(status,) if status else ())

    def deliveries(self, event_id: str | None = None) -> pd.DataFrame:
        with self._lock:
            return pd.read_sql_query("SELECT * FROM deliveries" + (" WHERE event_id = ?" if event_id else "")
                                     + " ORDER BY seq", self._con, params=(event_id,) if event_id else ())
