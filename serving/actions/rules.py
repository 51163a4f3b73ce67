"""The pure decisions behind warnings: which transition raises one, and which is held out.

No I/O here: ``serving.actions.warnings`` reads the per-account state in a transaction, calls ``decide``
and writes what it returns, so the rule can be tested (and property-tested) on plain values.

The rule (one warning per worsening, whoever saw it first)
    Per account the store keeps ``AccountState``: the ``as_of`` of the newest transition seen,
    the level then, the *warned rank* (the worst level warned about in the current episode) and
    whether the early warning has been warned about. A transition row (``as_of`` t):

    1. is *stale* when t is earlier than the state's ``as_of``: it neither raises nor changes the
       state (a rerun of an old scoring date, or a run whose data predates a live event already seen);
    2. raises a *level* warning when ``new_level`` is worse than ``old_level`` AND worse than the
       warned rank. A live event that took the account yellow -> orange warns at once and sets
       the warned rank to orange; the next scheduled run, which compares against its previous
       run's level (yellow -> orange), finds orange not worse than orange and raises nothing;
    3. raises an *early_warning* warning when the early warning turns on (``early_warning`` true,
       ``previous_early_warning`` not true) and has not been warned about yet;
    4. raises at most ONE warning: kind ``level`` when 2 holds, else ``early_warning``;
    5. afterwards the warned rank follows an improvement down (new level better than the warned
       rank: the episode is over, so a later worsening warns again) and the early-warning flag
       follows ``early_warning`` (off resets it; unknown leaves it).
    A missing ``old_level`` (an account scored for the first time) counts as green, so a first
    score at yellow or worse raises. As a last guard each warning has a key (account, as_of,
    kind, level) that is unique in the store: replaying a date can never insert a second copy.

Holdout
    ``holdout(salt, key, share)`` hashes the warning's key with the experiment salt: the same
    warning is always drawn the same way, and about ``share`` of warnings are held out.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import timezone

import pandas as pd

from serving.playbooks import LEVELS

RANK = {name: i for i, name in enumerate(LEVELS)}
REQUIRED = ("account_id", "as_of", "new_level")
OPTIONAL = ("old_level", "score", "previous_score", "early_warning", "previous_early_warning",
            "churn_probability", "change_text", "change_points")
SOURCES = ("run", "live")


class WarningError(ValueError):
    """A request about a warning or playbook that cannot be honoured; ``field`` names the argument at fault,
    ``status`` the HTTP answer it stands for (400; 404 an unknown warning; 403 a warning outside the
    key's reach; 429 a key over its rate of not-applicable marks)."""

    def __init__(self, field: str, message: str, status: int = 400):
        super().__init__(message)
        self.field = field
        self.status = status


@dataclass(frozen=True)
class Transition:
    account_id: str
    as_of: str  # ISO-8601 UTC, microseconds: text order is time order
    old_level: str | None
    new_level: str
    early_warning: bool | None
    previous_early_warning: bool | None
    values: dict  # score, previous_score, churn_probability, change_text, change_points


@dataclass(frozen=True)
class AccountState:
    as_of: str
    level: str
    warned_rank: int
    ew_warned: bool


@dataclass(frozen=True)
class Decision:
    transition: Transition
    kind: str  # "level" | "early_warning"
    level: str  # the warning's level: the new level, at least yellow for an early warning

    @property
    def key(self) -> str:
        t = self.transition
        return f"{t.account_id}|{t.as_of}|{self.kind}|{self.level}"

    @property
    def warning_id(self) -> str:
        return "w-" + hashlib.sha256(self.key.encode()).hexdigest()[:16]


def iso(ts) -> str:
    """ISO-8601 UTC with microseconds. Naive times and plain dates are taken as UTC."""
    t = pd.Timestamp(ts)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return t.to_pydatetime().astimezone(timezone.utc).isoformat(timespec="microseconds")


def _missing(v) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def _flag(v) -> bool | None:
    return None if _missing(v) else bool(v)


def _plain(v):
    """Numpy scalars become Python ones and missing values None (they end up in JSON and SQLite)."""
    if _missing(v):
        return None
    return v.item() if hasattr(v, "item") else v


def normalize(transitions: pd.DataFrame) -> list[Transition]:
    """Rows as ``Transition`` in time order (input order among equal times); errors name column and row."""
    missing = [c for c in REQUIRED if c not in transitions.columns]
    if missing:
        raise ValueError(f"transitions lack column(s) {', '.join(missing)}")
    out = []
    for pos, row in enumerate(transitions.to_dict("records")):
        for col in ("old_level", "new_level"):
            v = row.get(col)
            if not _missing(v) and v not in RANK:
                raise ValueError(f"transitions row {pos + 1}: {col} {v!r} is not one of {', '.join(LEVELS)}")
        if _missing(row["new_level"]) or _missing(row["account_id"]) or _missing(row["as_of"]):
            raise ValueError(f"transitions row {pos + 1}: account_id, as_of and new_level are required")
        out.append(Transition(
            account_id=str(row["account_id"]), as_of=iso(row["as_of"]),
            old_level=None if _missing(row.get("old_level")) else row["old_level"], new_level=row["new_level"],
            early_warning=_flag(row.get("early_warning")),
            previous_early_warning=_flag(row.get("previous_early_warning")),
            values={c: _plain(row.get(c)) for c in ("score", "previous_score", "churn_probability",
                                                   "change_text", "change_points")},
        ))
    return sorted(out, key=lambda t: t.as_of)  # sorted() is stable: input order among equal times


def decide(rows: list[Transition], state: dict[str, AccountState]) -> tuple[list[Decision], dict[str, AccountState]]:
    """Apply the rule of the module docstring; returns the decisions and the updated states."""
    state = dict(state)
    decisions = []
    for t in sorted(rows, key=lambda r: r.as_of):
        s = state.get(t.account_id)
        if s is not None and t.as_of < s.as_of:
            continue  # stale: newer information about this account was already seen
        new, old = RANK[t.new_level], RANK[t.old_level or "green"]
        warned = s.warned_rank if s is not None else RANK["green"]
        ew_warned = s.ew_warned if s is not None else False
        level_worse = new > old and new > warned
        ew_on = t.early_warning is True and t.previous_early_warning is not True and not ew_warned
        if level_worse:
            decisions.append(Decision(t, "level", t.new_level))
        elif ew_on:
            decisions.append(Decision(t, "early_warning", LEVELS[max(new, RANK["yellow"])]))
        if level_worse or new < warned:
            warned = new
        if t.early_warning is not None:
            ew_warned = t.early_warning
        state[t.account_id] = AccountState(t.as_of, t.new_level, warned, ew_warned)
    return decisions, state


def bucket(salt: str, key: str) -> float:
    """Deterministic position of a warning in [0, 1) (the same hash as serving.core's A/B split)."""
    h = hashlib.sha256(f"{salt}:playbook-holdout:{key}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def holdout(salt: str, key: str, share: float) -> bool:
    return share > 0 and bucket(salt, key) < share


