"""Render the raw-data contract (salesml/contract.py) as Markdown for docs/data-contract.md."""

from __future__ import annotations

from salesml.contract import (
    FLOAT_RULE,
    FUTURE_OK_YEARS,
    FUTURE_TOLERANCE,
    ID_MAX_LENGTH,
    ID_PATTERN,
    MIN_TIMESTAMP,
    TABLES,
    number_text,
)

INTRO = f"""# Raw-data contract

The tables a CRM + product-analytics export must provide, one file per table in one folder:
`<table>.parquet` or `<table>.csv`. Check an export with `salesml data validate DIR`; every
violation is reported with its table, column, data rows (1-based, header excluded) and what
was expected, and the command exits 1.

Rules for every table:
- **Timestamps are UTC.** Parquet: tz-aware UTC columns. CSV: ISO-8601 text ending in `Z` or
  `+00:00` (e.g. `2024-05-06T00:00:00Z`), or a bare date `2024-05-06` (read as UTC midnight).
  Naive times and other offsets are rejected rather than guessed. No timestamp may lie in the
  future (tolerance {FUTURE_TOLERANCE.days} day), except scheduled dates (a contract's end), which
  may lie at most {FUTURE_OK_YEARS} years ahead; none may lie before {MIN_TIMESTAMP:%Y-%m-%d}.
- **One file per table, each column named once**: `accounts.csv` beside `accounts.parquet`, or a
  header that repeats a name, is rejected rather than one of them silently preferred.
- **Required** columns must be present; **optional** ones may be left out of the file entirely
  (the features built from them are then missing). "may be empty" means nulls are allowed.
- Keys are unique; foreign keys must exist in the parent table. Every `*_id` column holds ids the
  API can query: at most {ID_MAX_LENGTH} characters matching `{ID_PATTERN}` (no emoji, no
  spaces, never empty).
- **Numbers are bounded.** Every float column holds {FLOAT_RULE}:
  XGBoost scores float32, so a larger value (1e39, 1e308) or inf would make its entity
  unscorable. Each numeric column also has a plausible range, its "rule" below, set far above
  the largest customer one would meet (10 million people, 100 million logins a week, 10 billion
  a year, a day on one page, ten years of sales cycle): a week of 10^18 logins is a broken feed,
  not a busy account. A custom column's `min` and `max` in `salesml.yaml` are its range. The
  same checks guard `POST /events`: a pushed row outside them is refused (400), never stored.
- **Types are not guessed.** A `true`/`false` value (JSON, a parquet boolean) is refused in
  number, time and text columns, and a number in a text column (an id sent as `0.0`) is refused
  rather than stored as `"0.0"`.
- Booleans in CSV: `true/false`, `1/0`, `yes/no` (any case).
- Columns the contract does not name are ignored, and `salesml data validate` lists each one,
  unless they are declared under `custom_columns` in the project's `salesml.yaml`: then they are
  checked like contract columns (type, range, nulls) and become features (README, "Bring your own
  export").
- A business need not have every table: `salesml data validate DIR --model chs|intent|lead_match`
  checks only the tables and columns that model reads (see each table's "may be left out" line).
- Say when the export was taken: `export.as_of` in `salesml.yaml` (or `SALESML_EXPORT_AS_OF`,
  or `salesml --as-of DATE ...`). An observation is labelled only when its whole outcome window
  lies before that moment; without it, the latest timestamp found in the tables is taken, and the
  commands say so.
- History may be short. One snapshot date trains: with fewer than 3 distinct observation times
  the training split is random, stratified by label and grouped by entity (the run is tagged
  `split=grouped_random`); with 3 or more, the newest observations are the test window
  (`split=time`). Trend features (week-on-week, month-on-month, the below-baseline streak) need
  weeks of history and stay empty without it.

This file is generated: `salesml data contract > docs/data-contract.md`.
"""


def contract_markdown() -> str:
    parts = [INTRO]
    for t in TABLES.values():
        parts.append(f"\n## `{t.name}`\n\n{t.doc}\n")
        fks = ", ".join(f"`{c}` -> `{p}`" for c, p in t.foreign_keys.items()) or "none"
        parts.append(f"Key: `{', '.join(t.key)}` · event time: `{t.event_ts}` · foreign keys: {fks}\n")
        if t.omittable:
            parts.append(f"May be left out although required (the features built from them stay empty): "
                         f"{', '.join(f'`{c}`' for c in t.omittable)}.\n")
        if t.row_rules:
            parts.append("Each row holds " + "; ".join(f"{r.text} (`{r.column}`)" for r in t.row_rules) + ".\n")
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
        return f"{number_text(stats['min_value'])}..{number_text(stats['max_value'])}"
    if name == "greater_than_or_equal_to":
        return f">= {number_text(stats['min_value'])}"
    if name == "less_than_or_equal_to":
        return f"<= {number_text(stats['max_value'])}"
    return name
