"""Bench: how long a pushed usage event takes to reach the warnings inbox (goal: under 1 s).

For accounts whose current level is worse than green, the warnings store is told they were last
seen green on an earlier date (what a scheduled run would have left); then one usage row per
account is pushed over HTTP and ``POST /warnings`` is polled until the account's warning is there.
The time runs from sending the push to the first inbox answer that lists the warning.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from salesml.settings import Settings


def _usage_row(usage: pd.DataFrame, account: str, weeks_ahead: int) -> dict:
    last = usage[usage["account_id"] == account].sort_values("week_start").iloc[-1].to_dict()
    row = {k: (v.isoformat() if isinstance(v, pd.Timestamp) else v) for k, v in last.items() if pd.notna(v)}
    row["week_start"] = (last["week_start"] + pd.Timedelta(weeks=weeks_ahead)).isoformat()
    return row


def push_to_inbox(home: Settings, reader, writer, n: int = 10, timeout_s: float = 10.0) -> np.ndarray:
    """Milliseconds from POST /events to the warning listed by POST /warnings, for ``n`` accounts.

    ``reader``/``writer``: clients with ``post(path, body) -> (status, body)`` and read / write keys."""
    from serving.actions.warnings import open_warning_store

    usage = pd.read_parquet(home.raw_dir / "usage_weekly.parquet")
    latest = usage.groupby("account_id")["week_start"].max()
    candidates = latest[latest == latest.max()].index.astype(str).tolist()  # accounts still active at the end
    levels: dict[str, str] = {}
    for i in range(0, len(candidates), 200):
        status, body = reader.post("/health", {"account_ids": candidates[i:i + 200]})
        levels.update({r["account_id"]: r["level"] for r in body.get("results", []) if "level" in r})
        if sum(v != "green" for v in levels.values()) >= n:
            break
    chosen = [a for a, lv in levels.items() if lv != "green"][:n]
    if len(chosen) < n:
        raise RuntimeError(f"only {len(chosen)} active accounts below green in the bench export; need {n}")
    seen = (pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=14)).date().isoformat()
    with open_warning_store(home) as store:  # "last seen green two weeks ago", as a run would leave it
        store.raise_warnings(pd.DataFrame({"account_id": chosen, "as_of": seen, "old_level": "green",
                                           "new_level": "green"}), source="run")
    took = []
    for account in chosen:
        t0 = time.perf_counter()
        status, body = writer.post("/events", {"table": "usage_weekly", "rows": [_usage_row(usage, account, 1)]})
        if status != 200:
            raise RuntimeError(f"push for {account} answered {status}: {body}")
        while True:
            _, inbox = reader.post("/warnings", {"limit": 50})
            if any(w["account_id"] == account for w in inbox.get("warnings", [])):
                took.append((time.perf_counter() - t0) * 1000)
                break
            if time.perf_counter() - t0 > timeout_s:
                raise RuntimeError(f"no warning for {account} in the inbox after {timeout_s:.0f} s")
            time.sleep(0.01)
    return np.array(took)
