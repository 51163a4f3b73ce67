"""A live event that worsens an account's level raises its warning at once, not at the next run.

After ``/events`` stores usage rows, the pushed accounts are rescored from the online store (the
same champion and code as ``/health``, without logging a served prediction) and compared with the
level each account had when last seen (``account_state``: the last scheduled run or live event).
The transitions go through the same rule as a run's (``serving.actions.rules``), so the next run
that sees the same worsening raises nothing. Accounts no run has scored yet have no level to
compare with: they are skipped and counted.
"""

from __future__ import annotations

from datetime import date, datetime, time, timezone

import pandas as pd

from serving.auth import Caller

LIVE = Caller(key_id="live-warning-check", role="csm")  # who the rescore is on behalf of (logged nowhere)


def live_warnings(core, store, account_ids: list[str], now: datetime) -> dict:
    """Rescore ``account_ids``, raise the warnings their new levels call for; a summary for the answer."""
    from serving.errors import RequestError

    seen = store.account_levels(account_ids)
    ids = [a for a in dict.fromkeys(map(str, account_ids)) if a in seen]
    if not ids:
        return {"checked": 0, "not_scored_yet": len(set(account_ids)), "raised": []}
    today = now.astimezone(timezone.utc).date()
    rows = []
    by_date: dict[date, list[str]] = {}
    for a in ids:  # attribution since the day of the level it is compared with (none if that is today)
        by_date.setdefault(date.fromisoformat(seen[a]["as_of"][:10]), []).append(a)
    for since, group in by_date.items():
        when = datetime.combine(since, time.max, tzinfo=timezone.utc) if since < today else None
        try:
            answer = core.health(LIVE, group, since=when, role="csm", record=False)
        except RequestError:  # the last level's date lies outside the offline history: no attribution
            answer = core.health(LIVE, group, role="csm", record=False)
        for r in answer["results"]:
            if "error" in r:
                continue
            change = r.get("change") or {}
            rows.append({"account_id": r["account_id"], "as_of": today.isoformat(),
                         "old_level": seen[r["account_id"]]["level"], "new_level": r["level"], "score": r["score"],
                         "previous_score": change.get("previous_score"), "early_warning": r.get("early_warning"),
                         "previous_early_warning": None, "churn_probability": r["churn_probability"],
                         "change_text": change.get("text"), "change_points": change.get("points")})
    raised = store.raise_warnings(pd.DataFrame(rows), source="live", now=now) if rows else []
    return {"checked": len(rows), "not_scored_yet": len(set(account_ids)) - len(ids),
            "raised": [w["warning_id"] for w in raised]}
