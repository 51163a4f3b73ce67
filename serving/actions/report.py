"""From warning to first intervention: the compliance report (PRODUCT.md: "warning to first
intervention <= 4 h").

Per level, per playbook and per team, never per person: health warnings are about customers, not
about evaluating employees, so no table here has an owner column, and a team with fewer than
``min_team_owners`` distinct owners is pooled with the other small teams (a team of one would be a
person under another name).

Definitions (``now`` and ``target_hours`` are arguments, so a report can be reproduced)
    first intervention  the earliest ``at`` among the warning's interventions, whatever its kind
                        (applied, other, or not applicable: each means a person looked and decided).
    hours_to_first      first intervention - raised_at, in hours.
    within_target       True: first intervention within ``target_hours``; False: later, or none and
                        the target has passed; unknown (NA): none yet and the target not yet passed.
    handled             warnings with at least one intervention.
    share_within_target within_target True / warnings whose within_target is known (a warning
                        raised an hour ago with nobody on it yet is not counted either way).
    median_hours        median of hours_to_first over handled warnings.
    overdue_now         no intervention and ``now`` past its due time (``due_at``, fixed when raised).
    not_applicable      warnings with at least one not-applicable mark.
    escalated           warnings that were escalated (whatever happened after).
"""

from __future__ import annotations

import pandas as pd

from serving.actions.rules import iso
from serving.playbooks import LEVELS

SMALL_TEAMS = "(small teams, pooled)"
NO_PLAYBOOK = "(none offered)"
MEASURES = ["warnings", "handled", "handled_within_target", "share_within_target", "median_hours_to_first",
            "overdue_now", "not_applicable", "escalated"]


def per_warning(frame: pd.DataFrame, now, target_hours: float) -> pd.DataFrame:
    """One row per warning with the timing figures; no owner column (see the module docstring)."""
    now = pd.Timestamp(iso(now))
    hours = frame["hours_to_first_intervention"]
    handled = frame["first_intervention_at"].notna()
    passed = (now - frame["raised_at"]).dt.total_seconds() / 3600 > target_hours
    within = pd.Series(pd.NA, index=frame.index, dtype="boolean")
    within[handled] = hours[handled] <= target_hours
    within[~handled & passed] = False
    return pd.DataFrame({
        "warning_id": frame["warning_id"], "account_id": frame["account_id"], "level": frame["level"],
        "kind": frame["kind"], "playbook_id": frame["playbook_id"].fillna(NO_PLAYBOOK),
        "prompted": frame["prompted"], "team": frame["team"], "source": frame["source"],
        "raised_at": frame["raised_at"], "first_intervention_at": frame["first_intervention_at"],
        "first_intervention_kind": frame["first_intervention_kind"], "hours_to_first": hours,
        "handled": handled, "within_target": within,
        "overdue_now": ~handled & (frame["due_at"] <= now),
        "not_applicable": frame["not_applicable_marks"] > 0, "escalated": frame["escalated_at"].notna(),
        "status": frame["status"],
    })


def _aggregate(rows: pd.DataFrame, by: str) -> pd.DataFrame:
    if rows.empty:
        return pd.DataFrame(columns=[by, *MEASURES])
    g = rows.groupby(by, sort=False, dropna=False)
    out = pd.DataFrame({
        "warnings": g.size(),
        "handled": g["handled"].sum(),
        "handled_within_target": g["within_target"].apply(lambda s: int(s.fillna(False).sum())),
        "share_within_target": g["within_target"].apply(lambda s: s.dropna().astype(float).mean()
                                                        if s.notna().any() else float("nan")),
        "median_hours_to_first": g["hours_to_first"].median(),
        "overdue_now": g["overdue_now"].sum(),
        "not_applicable": g["not_applicable"].sum(),
        "escalated": g["escalated"].sum(),
    })
    for c in ("warnings", "handled", "handled_within_target", "overdue_now", "not_applicable", "escalated"):
        out[c] = out[c].astype(int)
    return out.reset_index()


def pool_small_teams(rows: pd.DataFrame, owners: pd.Series, min_team_owners: int) -> pd.Series:
    """The team each warning is reported under: its own, or SMALL_TEAMS when it has too few owners."""
    per_team = owners.groupby(rows["team"]).nunique()
    small = set(per_team[per_team < min_team_owners].index)
    return rows["team"].where(~rows["team"].isin(small), SMALL_TEAMS)


def report(store, now, target_hours: float = 4.0, *, min_team_owners: int = 3) -> dict[str, pd.DataFrame]:
    """Tables: ``overall``, ``by_level``, ``by_playbook``, ``by_team``, ``playbooks`` (fuse states) and
    ``warnings`` (one row per warning). No table has an owner column."""
    frame = store.frame()
    rows = per_warning(frame, now, target_hours)
    rows["team"] = pool_small_teams(rows, frame["owner"], min_team_owners)
    overall = _aggregate(rows.assign(all="all"), "all").drop(columns="all")
    by_level = _aggregate(rows, "level")
    by_level = by_level.set_index("level").reindex([lv for lv in LEVELS if lv in set(by_level["level"])])
    by_playbook = _aggregate(rows, "playbook_id")
    if not rows.empty:  # prompted vs held out: the two arms the effect estimate compares
        arms = rows.groupby("playbook_id")["prompted"].agg(prompted="sum", held_out=lambda s: int((~s).sum()))
        by_playbook = by_playbook.merge(arms.astype(int).reset_index(), on="playbook_id")
    states = store.playbook_states()
    return {
        "overall": overall,
        "by_level": by_level.reset_index(),
        "by_playbook": by_playbook.sort_values("playbook_id", ignore_index=True),
        "by_team": _aggregate(rows, "team").sort_values("team", ignore_index=True),
        "playbooks": states,
        "warnings": rows,
    }


def _fmt(df: pd.DataFrame) -> str:
    if df.empty:
        return "_none_"
    shown = df.copy()
    for c in shown.columns:
        if c.startswith("share"):
            shown[c] = shown[c].map(lambda v: "" if pd.isna(v) else f"{v:.0%}")
        elif c.startswith("median"):
            shown[c] = shown[c].map(lambda v: "" if pd.isna(v) else f"{v:.1f}")
    return shown.to_markdown(index=False)


def render_markdown(tables: dict[str, pd.DataFrame], now, target_hours: float = 4.0) -> str:
    """The report as markdown (``salesml warnings report``); the per-warning table is left out."""
    frozen = tables["playbooks"][tables["playbooks"]["frozen"] | tables["playbooks"]["flagged_reason"].notna()]
    parts = [f"# Warnings: time to first intervention (target {target_hours:g} h)", "",
             f"As of {iso(now)}. Figures per level, playbook and team; never per person.", "",
             "## Overall", "", _fmt(tables["overall"]), "",
             "## Per level", "", _fmt(tables["by_level"]), "",
             "## Per playbook (prompted vs held out)", "", _fmt(tables["by_playbook"]), "",
             "## Per team", "", _fmt(tables["by_team"]), "",
             "## Playbooks frozen or flagged for review", "",
             _fmt(frozen[["playbook_id", "consecutive_not_applicable", "frozen", "flagged_reason", "flagged_at"]]), ""]
    return "\n".join(parts)
