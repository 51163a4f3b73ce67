"""The fuse: per-playbook state of ``serving.actions.warnings.WarningStore`` (a mixin of it).

A playbook marked "not applicable" by ``config.fuse`` distinct people in a row is frozen: no
longer offered for new warnings, and flagged for review (PRODUCT.md, the articles' fuse). "In a
row" is the playbook's current run of not-applicable marks, in the order they are recorded, over
all its warnings; an intervention that applied the playbook ends the run (so does the review's
unfreezing). The run counts people, not requests: a person is the owner of the key that recorded
the mark (a key without an owner is a person of its own; the command line's ``--by`` is the
person), so one key, or one person's several keys, can never freeze a playbook that works for
everyone else, however often it marks. ``consecutive_not_applicable`` is the run's length in
marks, ``not_applicable_people`` its distinct people. On top, each key records at most
``config.marks_per_key_hour`` not-applicable marks in any hour (``_check_mark_rate``, 429 beyond).
An intervention that names no playbook ("other") neither counts nor ends the run: it says nothing
about this playbook. ``flag_playbook`` lets the effect estimate flag a harmful playbook (and freeze
it); ``unfreeze_playbook`` records the review's decision to offer it again.

The mixin uses the store's ``_write`` (one write transaction), ``_rows``, ``playbooks`` and ``config``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import pandas as pd

from serving.actions.rules import WarningError, iso
from serving.predlog import now_utc

if TYPE_CHECKING:
    from serving.actions.warnings import WarningConfig
    from serving.playbooks import Playbooks

T = TypeVar("T")
HOUR = pd.Timedelta(hours=1)


class FuseMixin:
    # what the store provides (serving.actions.warnings.WarningStore)
    config: WarningConfig
    playbooks: Playbooks

    if TYPE_CHECKING:
        def _write(self, work: Callable[[sqlite3.Connection], T]) -> T: ...

        def _rows(self, sql: str, params: Any = ()) -> list[dict]: ...

    def _check_mark_rate(self, con: sqlite3.Connection, key_id: str, now: pd.Timestamp) -> None:
        """A WarningError (429) when ``key_id`` already recorded its hour's share of not-applicable marks."""
        limit = self.config.marks_per_key_hour
        n, first = con.execute("SELECT COUNT(*), MIN(recorded_at) FROM interventions WHERE recorded_by = ? AND "
                               "kind = 'not_applicable' AND recorded_at > ?", (key_id, iso(now - HOUR))).fetchone()
        if n >= limit:
            again = pd.Timestamp(first) + HOUR
            raise WarningError("not_applicable", f"key {key_id} recorded {n} not-applicable marks in the last hour, "
                                                 f"the most a key may (playbook_marks_per_key_hour = {limit}); "
                                                 f"the next one is taken from {iso(again)}", status=429)
    def _frozen(self, con: sqlite3.Connection) -> set[str]:
        return {r[0] for r in con.execute("SELECT playbook_id FROM playbook_state WHERE frozen = 1")}

    def frozen_playbooks(self) -> set[str]:
        """The playbooks frozen now (no longer offered)."""
        return {r["playbook_id"] for r in self._rows("SELECT playbook_id FROM playbook_state WHERE frozen = 1")}

    def _fuse(self, con: sqlite3.Connection, playbook_id: str, not_applicable: bool, reason: str | None, at: str,
              person: str) -> None:
        con.execute("INSERT OR IGNORE INTO playbook_state (playbook_id, updated_at) VALUES (?, ?)", (playbook_id, at))
        if not not_applicable:  # applied: the run of not-applicable marks is broken
            con.execute("UPDATE playbook_state SET consecutive_not_applicable = 0, run_people = '[]', updated_at = ? "
                        "WHERE playbook_id = ?", (at, playbook_id))
            return
        n, frozen, run = con.execute("SELECT consecutive_not_applicable, frozen, run_people FROM playbook_state "
                                     "WHERE playbook_id = ?", (playbook_id,)).fetchone()
        people = list(json.loads(run or "[]"))
        if person not in people:
            people.append(person)
        n += 1
        con.execute("UPDATE playbook_state SET consecutive_not_applicable = ?, run_people = ?, updated_at = ? "
                    "WHERE playbook_id = ?", (n, json.dumps(people), at, playbook_id))
        if len(people) >= self.config.fuse and not frozen:
            con.execute("UPDATE playbook_state SET frozen = 1, frozen_at = ?, flagged_at = ?, flagged_reason = ? "
                        "WHERE playbook_id = ?",
                        (at, at, f"marked not applicable by {len(people)} people in a row ({n} marks; last reason: "
                                 f"{reason})", playbook_id))

    def flag_playbook(self, playbook_id: str, reason: str, *, freeze: bool = True, now=None) -> dict:
        """Flag a playbook for review (e.g. the effect estimate found it harmful); frozen unless ``freeze=False``."""
        if not reason or not reason.strip():
            raise WarningError("reason", "a flag needs a reason")
        at = iso(now or now_utc())

        def work(con: sqlite3.Connection) -> None:
            con.execute("INSERT OR IGNORE INTO playbook_state (playbook_id, updated_at) VALUES (?, ?)",
                        (playbook_id, at))
            con.execute("UPDATE playbook_state SET flagged_reason = ?, flagged_at = ?, updated_at = ?, "
                        "frozen = MAX(frozen, ?), frozen_at = CASE WHEN ? AND frozen = 0 THEN ? ELSE frozen_at END "
                        "WHERE playbook_id = ?", (reason, at, at, int(freeze), int(freeze), at, playbook_id))

        self._check_playbook(playbook_id)
        self._write(work)
        return self._state(playbook_id)

    def unfreeze_playbook(self, playbook_id: str, reason: str, *, now=None) -> dict:
        """The review's outcome: offered again, the not-applicable count starts over, the flag is cleared."""
        if not reason or not reason.strip():
            raise WarningError("reason", "say what the review decided")
        self._check_playbook(playbook_id)
        at = iso(now or now_utc())
        self._write(lambda con: con.execute(
            "UPDATE playbook_state SET frozen = 0, frozen_at = NULL, consecutive_not_applicable = 0, "
            "run_people = '[]', flagged_reason = NULL, flagged_at = NULL, updated_at = ? WHERE playbook_id = ?",
            (at, playbook_id)))
        return self._state(playbook_id)

    def _check_playbook(self, playbook_id: str) -> None:
        known = {p.id for p in self.playbooks.items} | {r["playbook_id"] for r in self._rows(
            "SELECT playbook_id FROM playbook_state")}
        if playbook_id not in known:
            raise WarningError("playbook_id", f"unknown playbook {playbook_id!r}")

    def _state(self, playbook_id: str) -> dict:
        return next(r for r in self.playbook_states().to_dict("records") if r["playbook_id"] == playbook_id)

    def playbook_states(self) -> pd.DataFrame:
        """Every configured playbook (and any that left the file but has state), with its fuse state."""
        rows = {r["playbook_id"]: r for r in self._rows("SELECT * FROM playbook_state")}
        out = []
        for p in self.playbooks.items:
            out.append({"playbook_id": p.id, "levels": ",".join(p.levels), "in_file": True})
        for pid in rows.keys() - {p.id for p in self.playbooks.items}:
            out.append({"playbook_id": pid, "levels": "", "in_file": False})
        for r in out:
            s = rows.get(r["playbook_id"], {})
            r.update(consecutive_not_applicable=s.get("consecutive_not_applicable", 0),
                     not_applicable_people=len(json.loads(s.get("run_people") or "[]")),
                     frozen=bool(s.get("frozen", 0)), frozen_at=s.get("frozen_at"),
                     flagged_reason=s.get("flagged_reason"), flagged_at=s.get("flagged_at"))
        return pd.DataFrame(out, columns=["playbook_id", "levels", "in_file", "consecutive_not_applicable",
                                          "not_applicable_people", "frozen", "frozen_at", "flagged_reason",
                                          "flagged_at"])
