"""The fuse: per-playbook state of ``serving.actions.warnings.WarningStore`` (a mixin of it).

A playbook marked "not applicable" ``config.fuse`` times in a row is frozen: no longer offered
for new warnings, and flagged for review (PRODUCT.md, the articles' fuse). "In a row" counts the
playbook's not-applicable marks in the order they are recorded, over all its warnings; an
intervention that applied the playbook resets the count. An intervention that names no playbook
("other") neither counts nor resets: it says nothing about this playbook. ``flag_playbook`` lets
the effect estimate flag a harmful playbook (and freeze it); ``unfreeze_playbook`` records the
review's decision to offer it again.

The mixin uses the store's ``_write`` (one write transaction), ``_rows``, ``playbooks`` and ``config``.
"""

from __future__ import annotations

import pandas as pd

from serving.actions.rules import WarningError, iso
from serving.predlog import now_utc


class FuseMixin:
    def _frozen(self, con) -> set[str]:
        return {r[0] for r in con.execute("SELECT playbook_id FROM playbook_state WHERE frozen = 1")}

    def frozen_playbooks(self) -> set[str]:
        """The playbooks frozen now (no longer offered)."""
        return {r["playbook_id"] for r in self._rows("SELECT playbook_id FROM playbook_state WHERE frozen = 1")}

    def _fuse(self, con, playbook_id: str, not_applicable: bool, reason: str | None, at: str) -> None:
        con.execute("INSERT OR IGNORE INTO playbook_state (playbook_id, updated_at) VALUES (?, ?)", (playbook_id, at))
        if not not_applicable:  # applied: the run of not-applicable marks is broken
            con.execute("UPDATE playbook_state SET consecutive_not_applicable = 0, updated_at = ? "
                        "WHERE playbook_id = ?", (at, playbook_id))
            return
        con.execute("UPDATE playbook_state SET consecutive_not_applicable = consecutive_not_applicable + 1, "
                    "updated_at = ? WHERE playbook_id = ?", (at, playbook_id))
        n, frozen = con.execute("SELECT consecutive_not_applicable, frozen FROM playbook_state WHERE playbook_id = ?",
                                (playbook_id,)).fetchone()
        if n >= self.config.fuse and not frozen:
            con.execute("UPDATE playbook_state SET frozen = 1, frozen_at = ?, flagged_at = ?, flagged_reason = ? "
                        "WHERE playbook_id = ?",
                        (at, at, f"marked not applicable {n} times in a row (last reason: {reason})", playbook_id))

    def flag_playbook(self, playbook_id: str, reason: str, *, freeze: bool = True, now=None) -> dict:
        """Flag a playbook for review (e.g. the effect estimate found it harmful); frozen unless ``freeze=False``."""
        if not reason or not reason.strip():
            raise WarningError("reason", "a flag needs a reason")
        at = iso(now or now_utc())

        def work(con) -> None:
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
            "flagged_reason = NULL, flagged_at = NULL, updated_at = ? WHERE playbook_id = ?", (at, playbook_id)))
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
                     frozen=bool(s.get("frozen", 0)), frozen_at=s.get("frozen_at"),
                     flagged_reason=s.get("flagged_reason"), flagged_at=s.get("flagged_at"))
        return pd.DataFrame(out, columns=["playbook_id", "levels", "in_file", "consecutive_not_applicable",
                                          "frozen", "frozen_at", "flagged_reason", "flagged_at"])
