"""Company-specific columns (``custom_columns`` in salesml.yaml) -> the features they become.

One list, read by the transforms (which compute them), by the Feast definitions (which declare
them in the views) and by the push path, so a custom column is named and typed in one place.

- static tables (accounts, leads, reps) and snapshot tables (contracts, rep_state): the value as
  of the row's event time, under the column's own name;
- usage_weekly: the week's value; numeric columns also get trailing 26- and 52-week sums and
  the lifetime total (the monetary side of recency / frequency / monetary), plus any declared
  aggregation over N days;
- event tables (lead_events, interactions): each declared aggregation over its trailing window
  (``<column>_<fn>_<days>d``), or the latest value (``<column>_last``) when none is declared.
"""

from __future__ import annotations

from dataclasses import dataclass

# The feature view each table's custom columns join (and the entity key it is keyed by).
VIEW_OF_TABLE = {"accounts": "account_profile", "contracts": "contract", "usage_weekly": "behaviour",
                 "interactions": "relationship", "leads": "lead_profile", "lead_events": "lead_activity",
                 "reps": "rep_state", "rep_state": "rep_state"}
LABEL_TABLES = ("churn_events", "lead_assignments")


@dataclass(frozen=True)
class CustomFeature:
    table: str
    column: str
    type: str  # numeric | categorical | boolean
    name: str  # the feature's name in its view
    fn: str | None = None  # None: the value itself; else count|sum|mean|last|max|min
    days: int | None = None  # trailing window; None with a fn: since the first row

    @property
    def is_string(self) -> bool:
        return self.type == "categorical" and self.fn in (None, "last")

    @property
    def view(self) -> str:
        return VIEW_OF_TABLE[self.table]


def custom_features(project) -> dict[str, list[CustomFeature]]:
    """Per table, the features its custom columns become (empty without a configuration)."""
    out: dict[str, list[CustomFeature]] = {}
    for table, cols in (project.custom_columns if project is not None else {}).items():
        if table in LABEL_TABLES:
            raise ValueError(f"custom_columns.{table}: {table} holds labels, not features; declare the column on "
                             f"the table that describes the entity ({', '.join(VIEW_OF_TABLE)})")
        feats = out.setdefault(table, [])
        for name, c in cols.items():
            declared = [CustomFeature(table, name, c.type, f"{name}_{a.fn}_{a.days}d", a.fn, a.days)
                        for a in c.aggregations]
            if table == "usage_weekly":
                feats.append(CustomFeature(table, name, c.type, name))
                if c.type == "numeric":
                    feats += [CustomFeature(table, name, c.type, f"{name}_sum_26w", "sum", 182),
                              CustomFeature(table, name, c.type, f"{name}_sum_52w", "sum", 364),
                              CustomFeature(table, name, c.type, f"{name}_total", "sum", None)]
                feats += declared
            elif table in ("lead_events", "interactions"):
                feats += declared or [CustomFeature(table, name, c.type, f"{name}_last", "last")]
            else:
                feats.append(CustomFeature(table, name, c.type, name))
    return out


def numeric_usage_columns(project) -> list[str]:
    """Custom numeric usage measures: they count as activity and join the own-baseline watch."""
    cols = (project.custom_columns if project is not None else {}).get("usage_weekly", {})
    return [n for n, c in cols.items() if c.type == "numeric"]
