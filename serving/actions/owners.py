"""Who owns an account's warnings, and which team a warning is reported under.

Owner
    The account's customer-success manager: ``csm_id`` of the export's ``accounts`` table when
    the export has that column (a custom column: the contract does not require it); else the
    ``csm_id`` of the account's latest interaction that names one (``interactions.csm_id`` is a
    contract column, so an export without a CSM column on accounts still has owners); else
    ``settings.warning_owner_fallback``.
Team
    Reports group warnings by team, never by person. The team is the owner's ``region`` in the
    ``reps`` table when the owner is listed there, else ``"all"``. ``serving.actions.report``
    pools teams with too few owners, so a team of one never stands for a person.

The files are read on the first lookup and again only when one of them changes (a long-running
service picks up a new export without a restart).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from salesml.settings import Settings

ALL_TEAMS = "all"


def _read(export_dir: Path, table: str, columns: list[str]) -> pd.DataFrame | None:
    """The named columns of a table file (strings), or None when the table or a column is absent."""
    from salesml.contract import TABLES
    from salesml.validation import find_table_file, read_raw

    path = find_table_file(export_dir, table)
    if path is None:
        return None
    df = read_raw(path, TABLES[table])
    if any(c not in df.columns for c in columns):
        return None
    return df[columns]


def _owners(export_dir: Path) -> dict[str, str]:
    owners: dict[str, str] = {}
    inter = _read(export_dir, "interactions", ["account_id", "occurred_at", "csm_id"])
    if inter is not None:
        inter = inter.dropna(subset=["csm_id"]).assign(
            occurred_at=lambda d: pd.to_datetime(d["occurred_at"], utc=True, errors="coerce"))
        latest = inter.sort_values("occurred_at", kind="stable").groupby("account_id").tail(1)
        owners.update(zip(latest["account_id"].astype(str), latest["csm_id"].astype(str)))
    accounts = _read(export_dir, "accounts", ["account_id", "csm_id"])
    if accounts is not None:  # the account's own CSM column wins over the interaction history
        accounts = accounts.dropna(subset=["csm_id"])
        owners.update(zip(accounts["account_id"].astype(str), accounts["csm_id"].astype(str)))
    return {a: o for a, o in owners.items() if o.strip()}


def _teams(export_dir: Path) -> dict[str, str]:
    reps = _read(export_dir, "reps", ["rep_id", "region"])
    if reps is None:
        return {}
    reps = reps.dropna()
    return dict(zip(reps["rep_id"].astype(str), reps["region"].astype(str)))


class OwnerDirectory:
    """Owner and team per account: from an export folder, or from plain mappings (tests, callers)."""

    def __init__(self, fallback: str, export_dir: Path | str | None = None,
                 owners: dict[str, str] | None = None, teams: dict[str, str] | None = None):
        self.fallback = fallback
        self.export_dir = Path(export_dir) if export_dir is not None else None
        self._owners, self._teams = owners, teams
        self._stamp: tuple | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> OwnerDirectory:
        return cls(settings.warning_owner_fallback, settings.export_dir)

    def _files_stamp(self, export_dir: Path) -> tuple:
        from salesml.validation import find_table_file

        stamp = []
        for table in ("accounts", "interactions", "reps"):
            path = find_table_file(export_dir, table)
            stamp.append(None if path is None else (str(path), path.stat().st_mtime_ns))
        return tuple(stamp)

    def _refresh(self) -> None:
        if self.export_dir is None:
            self._owners, self._teams = self._owners or {}, self._teams or {}
            return
        stamp = self._files_stamp(self.export_dir) if self.export_dir.is_dir() else ()
        if stamp != self._stamp or self._owners is None:
            if stamp:
                self._owners, self._teams = _owners(self.export_dir), _teams(self.export_dir)
            else:
                self._owners, self._teams = {}, {}
            self._stamp = stamp

    def lookup(self, account_ids) -> dict[str, tuple[str, str]]:
        """account_id -> (owner, team)."""
        with self._lock:
            self._refresh()
            owners, teams = self._owners or {}, self._teams or {}  # _refresh always sets both
        out = {}
        for a in account_ids:
            owner = owners.get(str(a), self.fallback)
            out[str(a)] = (owner, teams.get(owner, ALL_TEAMS))
        return out
