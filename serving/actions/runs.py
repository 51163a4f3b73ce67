"""A scheduled run's scores go through the warning rule (``serving.actions.rules``).

Every scored account is passed, not only the ones that worsened: the rule keeps each account's
last level (what a live event is compared with, and how an episode ends when the level
improves). An account without a previous run, or a first run, is passed with its own level as the
old one: it raises nothing, it only sets the level later runs and live events compare with.
"""

from __future__ import annotations

import pandas as pd


def run_transitions(run) -> pd.DataFrame:
    """The rule's input for every account of a CHS ``ScoreRun``."""
    f = run.frame
    ew = f["early_warning"].astype("boolean") if "early_warning" in f else pd.Series(pd.NA, index=f.index,
                                                                                   dtype="boolean")
    prev_ew = f["previous_early_warning"].astype("boolean") if "previous_early_warning" in f else ew
    return pd.DataFrame({
        "account_id": f["account_id"].astype(str), "as_of": run.as_of.isoformat(),
        "old_level": f["previous_level"].fillna(f["level"]), "new_level": f["level"], "score": f["score"],
        "previous_score": f["previous_score"], "early_warning": ew,
        "previous_early_warning": prev_ew.fillna(ew),  # no previous run: an early warning already on is not news
        "churn_probability": f["churn_probability"], "change_text": f["change_text"],
        "change_points": f["change_points"]})


def warn_from_run(store, run) -> list[dict]:
    """Raise the warnings of a CHS run (idempotent: re-running a date raises nothing new)."""
    if run.model != "chs":
        return []
    return store.raise_warnings(run_transitions(run), source="run")
