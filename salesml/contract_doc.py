"""Render the raw-data contract (salesml/contract.py) as Markdown for docs/data-contract.md."""

from __future__ import annotations

from salesml.contract import FUTURE_TOLERANCE, TABLES

INTRO = f"""# Raw-data contract

The tables a CRM + product-analytics export must provide, one file per table in one folder:
`<table>.parquet` or `<table>.csv`. Check an export with `salesml data validate DIR`; every
violation is reported with its table, column, data rows (1-based, header excluded) and what
was expected, and the command exits 1.

Rules for every table:
- **Timestamps are UTC.** Parquet: tz-aware UTC columns. CSV: ISO-8601 text ending in `Z` or
  `+00:00` (e.g. `2024-05-06T00:00:00Z`), or a bare date `2024-05-06` (read as UTC midnight).
  Naive times and other offsets are rejected rather than guessed. No timestamp may lie in the
  future (tolerance {FUTURE_TOLERANCE.days} day).
- **Required** columns must be present; **optional** ones may be left out of the file entirely
  (the features built from them are then missing). "may be empty" means nulls are allowed.
- Keys are unique; foreign keys must exist in the parent table.
- Booleans in CSV: `true/false`, `1/0`, `yes/no` (any case).
- Extra columns are ignored.
- History may be short: a single usage week per account still yields training sets; trend
  features (week-on-week, month-on-month, below-baseline streak) are then missing.

This file is generated: `salesml data contract > docs/data-contract.md`.
"""


def contract_markdown() -> str:
    parts = [INTRO]
    for t in TABLES.values():
        parts.append(f"\n## `{t.name}`\n\n{t.doc}\n")
        fks = ", ".join(f"`{c}` -> `{p}`" for c, p in t.foreign_keys.items()) or "none"
        parts.append(f"Key: `{', '.join(t.key)}` · event time: `{t.event_ts}` · foreign keys: {fks}\n")
        parts.append("| column | type | required | may be empty | rule | meaning |\n|---|---|---|---|---|---|")
        for c in t.columns:
            rules = "; ".join(_rule(ch) for ch in c.checks)
            parts.append(f"| `{c.name}` | {c.dtype} | {'yes' if c.required else 'no'} | "
                         f"{'yes' if c.nullable else 'no'} | {rules} | {c.doc} |")
    return "\n".join(parts) + "\n"


def _rule(check) -> str:
    stats = getattr(check, "statistics", {}) or {}
    name = check.name
    if name == "isin":
        return "one of " + ", ".join(f"`{v}`" for v in stats.get("allowed_values", []))
    if name == "in_range":
        return f"{stats.get('min_value')}..{stats.get('max_value')}"
    if name == "greater_than_or_equal_to":
        return f">= {stats.get('min_value')}"
    return name
