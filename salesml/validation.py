"""Read an export folder and check it against the raw-data contract.

Every violation names the table, the column, the data rows (1-based, header excluded) and
what was expected.  One run reports every violation of every table: a value that does not
convert becomes NA in the typed frame (reported once, as a type error) and every other check,
foreign keys included, still runs.  Nothing is written anywhere: callers that write (the
feature store) only go on when the list of violations is empty.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow as pa_arrow
import pyarrow.parquet as pq

from salesml.contract import (
    FLOAT32_MAX,
    FLOAT_RULE,
    FUTURE_OK_YEARS,
    FUTURE_TOLERANCE,
    ID_MAX_LENGTH,
    ID_PATTERN,
    MIN_TIMESTAMP,
    MONDAY_MIDNIGHT,
    NOT_BEFORE_MIN,
    TABLES,
    TS,
    UTC_TEXT,
    Col,
    Table,
    range_text,
)

PANDAS_DTYPES = {"str": "string", "int": "Int64", "float": "Float64", "bool": "boolean", "ts": TS}
BOOL_TEXT = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}
# What a type error says was expected, per contract dtype. True/false is never a number, a time or
# text: pandas would read it as 1/0, and a time parser raises on it.
TYPE_TEXT = {
    "str": "type string (text; a number or true/false is not an id or a label)",
    "int": "type Int64 (a whole number; true/false is not one)",
    "float": f"type Float64 ({FLOAT_RULE}; true/false is not one)",
    "bool": "type boolean",
    "ts": "type datetime64[us, UTC]",
}
ID_TEXT = f"an id of at most {ID_MAX_LENGTH} characters matching {ID_PATTERN} (what the API can query)"
MAX_ROWS_SHOWN = 10


@dataclass
class Violation:
    table: str
    column: str | None
    rows: list[int]
    expected: str
    found: str = ""

    def __str__(self) -> str:
        where = f"{self.table}.{self.column}" if self.column else self.table
        rows = ""
        if self.rows:
            shown = ", ".join(map(str, self.rows[:MAX_ROWS_SHOWN]))
            more = f" (+{len(self.rows) - MAX_ROWS_SHOWN} more)" if len(self.rows) > MAX_ROWS_SHOWN else ""
            rows = f" rows {shown}{more}:"
        found = f" (found {self.found})" if self.found else ""
        return f"{where}:{rows} expected {self.expected}{found}"


class ContractError(ValueError):
    """Raised when an export violates the contract; ``violations`` lists every problem."""

    def __init__(self, violations: list[Violation]):
        self.violations = violations
        lines = "\n".join(f"  - {v}" for v in violations)
        super().__init__(f"{len(violations)} contract violation(s):\n{lines}")


def table_files(directory: Path, table: str) -> list[Path]:
    """Every file that holds ``table`` in ``directory``: more than one is a violation (read_export)."""
    return [p for p in (directory / f"{table}.parquet", directory / f"{table}.csv") if p.exists()]


def find_table_file(directory: Path, table: str) -> Path | None:
    """The table's file (parquet first); read_export reports a folder that holds both."""
    files = table_files(Path(directory), table)
    return files[0] if files else None


def _column_names(path: Path) -> list[str]:
    """The column names as the file spells them (pandas renames a repeated CSV name to ``name.1``)."""
    if path.suffix == ".parquet":
        return list(pq.read_schema(path).names)
    with path.open(newline="", encoding="utf-8-sig") as f:
        return next(csv.reader(f), [])


def _duplicate_columns(path: Path, table: Table) -> list[Violation]:
    counts = Counter(_column_names(path))
    return [Violation(table.name, name, [], "each column name once in the header",
                      f"'{name}' {n} times in {path.name}") for name, n in counts.items() if n > 1]


def read_raw(path: Path, table: Table) -> pd.DataFrame:
    """Read one table file; raises ContractError for unreadable or empty files."""
    if path.stat().st_size == 0:
        raise ContractError([Violation(table.name, None, [], "a non-empty file", f"empty file {path.name}")])
    try:
        duplicates = _duplicate_columns(path, table)
        if not duplicates:
            if path.suffix == ".parquet":
                df = pq.read_table(path).to_pandas()
            else:
                df = pd.read_csv(path, dtype=str, keep_default_na=True)
    except (pa_arrow.ArrowInvalid, pa_arrow.ArrowException, OSError, pd.errors.ParserError,
            pd.errors.EmptyDataError, UnicodeDecodeError, csv.Error) as exc:
        kind = "Parquet" if path.suffix == ".parquet" else "CSV"
        raise ContractError([Violation(
            table.name, None, [], f"a readable {kind} file", f"{path.name}: {exc}".strip()
        )]) from None
    if duplicates:  # which of the two is meant is unknown: the file is not read at all
        raise ContractError(duplicates)
    if df.empty:
        raise ContractError([Violation(table.name, None, [], "at least one data row", f"{path.name} has none")])
    return df


def _rows(index) -> list[int]:
    return sorted({int(i) + 1 for i in index if pd.notna(i)})


def _examples(values: pd.Series) -> str:
    return ", ".join(map(str, values.dropna().astype(str).unique()[:3]))


def _failure_cases(err: pa.errors.SchemaErrors) -> pd.DataFrame:
    cases = err.failure_cases.copy()
    cases["check"] = cases["check"].astype(str)
    missing = cases["check"].str.startswith("column_in_dataframe")
    cases.loc[missing, "column"] = cases.loc[missing, "failure_case"]
    return cases


def _from_pandera(table: Table, cases: pd.DataFrame) -> list[Violation]:
    out = []
    unique = cases["check"].str.contains("uniqueness")
    if unique.any():
        dup = cases[unique]
        out.append(Violation(table.name, ", ".join(table.key), _rows(dup["index"]),
                             "unique key values (duplicate key)", _examples(dup["failure_case"])))
    for (column, check), grp in cases[~unique].groupby(["column", "check"], dropna=False, sort=False):
        column = None if pd.isna(column) or column == table.name else str(column)
        examples = "" if check.startswith("column_in_dataframe") else _examples(grp["failure_case"])
        out.append(Violation(table.name, column, _rows(grp["index"]), _explain(check), examples))
    return out


_BOUND = re.compile(r"^(in_range|greater_than_or_equal_to|less_than_or_equal_to)\(([^,()]+)(?:, ([^,()]+))?\)$")


def _explain(check: str) -> str:
    check = str(check)
    bound = _BOUND.match(check)
    if bound:
        kind, a, b = bound.groups()
        lo, hi = {"in_range": (a, b), "greater_than_or_equal_to": (a, None), "less_than_or_equal_to": (None, a)}[kind]
        return range_text(None if lo is None else float(lo), None if hi is None else float(hi))
    if check.startswith("coerce_dtype("):
        return "type " + check[len("coerce_dtype("):].rstrip(")").strip("'")
    if check.startswith("column_in_dataframe"):
        return "the required column to be present (it is missing)"
    if check == "not_nullable":
        return "a value (column is not nullable)"
    if check.startswith("field_uniqueness") or check.startswith("multiple_fields_uniqueness"):
        return "unique key values (duplicate key)"
    if check == "utc_timestamp":
        return "a UTC timestamp (tz-aware UTC, or ISO text ending in Z/+00:00)"
    if check == "not_in_future":
        return f"a timestamp not in the future (tolerance {FUTURE_TOLERANCE})"
    if check == "not_far_future":
        return f"a date at most {FUTURE_OK_YEARS} years in the future"
    if check == NOT_BEFORE_MIN.name:
        return f"a timestamp not before {MIN_TIMESTAMP:%Y-%m-%d %H:%M} UTC (the contract's earliest)"
    if check == MONDAY_MIDNIGHT.name:
        return "a Monday 00:00 UTC (the start of the week)"
    return check


def _utc_check() -> pa.Check:
    def is_utc(s: pd.Series):
        if isinstance(s.dtype, pd.DatetimeTZDtype):
            return pd.Series(str(s.dtype.tz) in ("UTC", "utc"), index=s.index) | s.isna()
        if pd.api.types.is_datetime64_dtype(s.dtype):
            return s.isna()  # naive datetimes: zone unknown
        return s.isna() | s.astype("string").str.match(UTC_TEXT).fillna(False).astype(bool)

    return pa.Check(is_utc, name="utc_timestamp")


def _columns(table: Table, extra: Iterable[Col], optional: Iterable[str]) -> tuple[Col, ...]:
    """The contract columns (``optional`` ones not required) followed by the declared extras."""
    names = {c.name for c in table.columns}
    extra, optional = tuple(extra), set(optional)
    if optional - names:
        raise ValueError(f"{table.name}: optional names no contract column: {', '.join(sorted(optional - names))}")
    for c in extra:
        if c.name in names or sum(e.name == c.name for e in extra) > 1:
            raise ValueError(f"{table.name}.{c.name}: extra column declared twice or already in the contract")
        if c.dtype not in PANDAS_DTYPES:
            raise ValueError(f"{table.name}.{c.name}: dtype '{c.dtype}' is not one of {', '.join(PANDAS_DTYPES)}")
    return tuple(replace(c, required=False) if c.name in optional else c for c in table.columns) + extra


def _raw_schema(cols: tuple[Col, ...]) -> pa.DataFrameSchema:
    """Stage 1: UTC-ness of timestamps, before parsing erases the zone (stage 2 reports missing columns)."""
    return pa.DataFrameSchema({c.name: pa.Column(None, checks=[_utc_check()], nullable=True, required=False)
                               for c in cols if c.dtype == "ts"}, strict=False)


def _typed_schema(table: Table, cols: tuple[Col, ...], present, now: pd.Timestamp) -> pa.DataFrameSchema:
    schema = {}
    observed, scheduled = now + FUTURE_TOLERANCE, now + pd.DateOffset(years=FUTURE_OK_YEARS)
    for c in cols:
        checks = list(c.checks)
        if c.dtype == "ts" and not c.future_ok:
            checks.append(pa.Check(lambda s: s.isna() | (s <= observed), name="not_in_future"))
        elif c.dtype == "ts":  # a scheduled date: ahead is fine, centuries ahead is an error
            checks.append(pa.Check(lambda s: s.isna() | (s <= scheduled), name="not_far_future"))
        schema[c.name] = pa.Column(PANDAS_DTYPES[c.dtype], checks=checks, nullable=c.nullable,
                                   required=c.required, coerce=True)
    # pandera checks a partial key when a key column is absent; that column is reported missing instead
    unique = list(table.key) if set(table.key) <= set(present) else None
    return pa.DataFrameSchema(schema, unique=unique, strict=False, report_duplicates="all")


def _one_timestamp(text: str):
    try:
        t = pd.Timestamp(text)
        if t.year < 1:  # pandas parses year 0, which Python's datetime (and so the frame) cannot hold
            return pd.NaT
        return (t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")).as_unit("us")
    except (ValueError, TypeError, OverflowError):
        return pd.NaT


def _parse_utc_text(s: pd.Series) -> pd.Series:
    """Timestamp text as UTC; ISO text outside pandas' nanosecond range (before 1677, after 2262)
    is parsed at microsecond resolution, so year 1000 or 2999 meets the range checks, not a type error."""
    out = pd.to_datetime(s, utc=True, errors="coerce", format="mixed").astype(TS)
    text = s.astype("string").str.strip()
    retry = out.isna() & text.str.match(UTC_TEXT).fillna(False).astype(bool)
    if retry.any():
        out[retry] = pd.Series([_one_timestamp(t) for t in text[retry]], index=s.index[retry], dtype=TS)
    return out


def _flags(s: pd.Series) -> pd.Series:
    """Where ``s`` holds true/false (a boolean column, or bool objects among other values)."""
    if pd.api.types.is_bool_dtype(s.dtype):
        return s.notna()
    if s.dtype == object:
        return s.map(lambda v: isinstance(v, (bool, np.bool_))).astype(bool)
    return pd.Series(False, index=s.index)


def _floats(s: pd.Series) -> pd.Series:
    """Where ``s`` holds a float (a float column, or float objects among text): not an id or a label."""
    if pd.api.types.is_float_dtype(s.dtype):
        return s.notna()
    if s.dtype == object:
        return s.map(lambda v: isinstance(v, (float, np.floating)) and v == v).astype(bool)
    return pd.Series(False, index=s.index)


def _coerce(s: pd.Series, dtype: str) -> tuple[pd.Series, pd.Series]:
    """The column in its contract dtype with NA where a value does not convert, and where that was.

    True/false converts only in a bool column; a float never becomes text (an id sent as 0.0 is
    not the id "0.0"); a float column holds finite float32 values only."""
    original = s
    refused = _flags(s) if dtype != "bool" else pd.Series(False, index=s.index)
    if dtype == "str":
        refused |= _floats(s)
    if refused.any():
        s = s.astype(object).where(~refused)
    numeric = pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype)
    if dtype == "str":
        out = s.astype("string")
    elif dtype == "ts":
        if isinstance(s.dtype, pd.DatetimeTZDtype):
            out = s.dt.tz_convert("UTC")
        elif pd.api.types.is_datetime64_dtype(s.dtype):
            out = pd.Series(pd.NaT, index=s.index, dtype=TS)  # zone unknown; the UTC check names it
        else:  # only text is a time here: a number or a flag is a type error, never an epoch
            out = _parse_utc_text(s.where(s.map(lambda v: isinstance(v, str))))
        out = out.astype(TS)
    elif dtype == "bool":
        if pd.api.types.is_bool_dtype(s.dtype):
            out = s.astype("boolean")
        elif numeric:
            out = s.where(s.isin([0, 1])).astype("boolean")
        else:  # text: "false" must not become True, as any non-empty string would
            out = s.astype("string").str.strip().str.lower().map(BOOL_TEXT).astype("boolean")
    else:
        num = s if numeric else pd.to_numeric(s, errors="coerce")
        if dtype == "float":
            f = num.astype("Float64").to_numpy(dtype="float64", na_value=np.nan)
            out = pd.Series(np.where(np.isfinite(f) & (np.abs(f) <= FLOAT32_MAX), f, np.nan),
                            index=s.index).astype("Float64")  # inf and |x| > float32 max: NA, a type error
        elif pd.api.types.is_integer_dtype(num.dtype):
            out = num.astype("Int64")
        else:  # CSV writers turn nullable ints into "9.0": accept integral values, flag the rest
            f = num.astype("Float64")
            integral = ((f == f.round()) & (f.abs() < 2**63)).fillna(False)
            out = f.where(integral).astype("Int64")
    return out, original.notna() & out.isna()


def validate_table(df: pd.DataFrame, table: Table, now: pd.Timestamp | None = None,
                   extra: Iterable[Col] = (), optional: Iterable[str] = frozenset(),
                   ) -> tuple[pd.DataFrame, list[Violation]]:
    """Return the typed frame and every violation.

    The frame holds the contract columns and the declared ``extra`` ones in their dtypes (UTC
    microsecond timestamps); other columns are dropped.  A value that does not convert is NA
    there, so the frame is only fit for use when the list is empty.  ``optional`` names contract
    columns that may be absent in this call.
    """
    now = now or pd.Timestamp.now(tz="UTC")
    cols = _columns(table, extra, optional)
    df = df.reset_index(drop=True)
    violations: list[Violation] = []
    # Cells already reported, per column: a later check on them would repeat the same problem.
    reported: dict[str, pd.Index] = {}
    try:
        _raw_schema(cols).validate(df, lazy=True)
    except pa.errors.SchemaErrors as err:
        cases = _failure_cases(err)
        violations += _from_pandera(table, cases)
        reported = {str(col): pd.Index(grp["index"]) for col, grp in cases.groupby("column")}
    typed = df[[c for c in df.columns if c in {col.name for col in cols}]].copy()
    for c in cols:
        if c.name not in typed.columns:
            continue
        typed[c.name], bad = _coerce(df[c.name], c.dtype)
        seen = reported.get(c.name, pd.Index([]))
        new = bad & ~typed.index.isin(seen)
        if new.any():
            violations.append(Violation(table.name, c.name, _rows(typed.index[new]),
                                        TYPE_TEXT[c.dtype], _examples(df.loc[new, c.name])))
        reported[c.name] = seen.union(typed.index[bad])
        if c.is_id:
            malformed = typed[c.name].notna() & ~is_api_id(typed[c.name])
            if malformed.any():
                violations.append(Violation(table.name, c.name, _rows(typed.index[malformed]), ID_TEXT,
                                            _show(typed.loc[malformed, c.name])))
                reported[c.name] = reported[c.name].union(typed.index[malformed])
    schema = _typed_schema(table, cols, typed.columns, now)
    try:
        typed = schema.validate(typed, lazy=True)
    except pa.errors.SchemaErrors as err:
        cases = _failure_cases(err)
        repeat = pd.Series(False, index=cases.index)
        for col, rows in reported.items():
            repeat |= (cases["column"] == col) & cases["index"].isin(rows)
        # Uncoercible key cells are NA, and NA keys compare equal: no duplicate to report there.
        bad_keys = [i for k in table.key for i in reported.get(k, [])]
        repeat |= cases["check"].str.contains("uniqueness") & cases["index"].isin(bad_keys)
        violations += _from_pandera(table, cases[~repeat])
        for col, grp in cases.groupby("column"):  # refused cells: a row rule does not judge them again
            reported[str(col)] = reported.get(str(col), pd.Index([])).union(pd.Index(grp["index"].dropna()))
    violations += _row_rule_violations(table, typed, reported)
    return typed, violations


def is_api_id(s: pd.Series) -> pd.Series:
    """Where a text column holds an id the API's id pattern can query (an emoji or '' cannot be asked for)."""
    text = s.astype("string")
    return ((text.str.len() <= ID_MAX_LENGTH) & text.str.fullmatch(ID_PATTERN)).fillna(False).astype(bool)


def _show(values: pd.Series) -> str:
    """Up to three values as written (repr: an empty or blank id must be visible in the message)."""
    return ", ".join(repr(str(v))[:80] for v in values.unique()[:3])


def _row_rule_violations(table: Table, typed: pd.DataFrame, reported: dict[str, pd.Index]) -> list[Violation]:
    out = []
    for rule in table.row_rules:
        if not set(rule.needs) <= set(typed.columns):
            continue
        bad = rule.bad(typed).fillna(False).astype(bool)
        for col in rule.needs:  # a value already refused is not also a broken rule
            bad &= ~typed.index.isin(reported.get(col, pd.Index([])))
        if bad.any():
            shown = typed.loc[bad, list(rule.needs)].head(3)
            found = "; ".join(", ".join(f"{k}={_plain(v)}" for k, v in row.items())
                              for row in shown.to_dict("records"))
            out.append(Violation(table.name, rule.column, _rows(typed.index[bad]), rule.text, found))
    return out


def _plain(v) -> str:
    if v is None or v is pd.NA or v is pd.NaT:
        return "empty"
    return v.isoformat() if hasattr(v, "isoformat") else str(v)


def ignored_columns(df_columns: Iterable[str], table: Table | str, extra: Iterable[Col] = ()) -> list[str]:
    """Columns of a file that are neither contract columns nor declared extras, in file order."""
    table = TABLES[table] if isinstance(table, str) else table
    known = {c.name for c in table.columns} | {c.name for c in extra}
    return [c for c in df_columns if c not in known]


def check_foreign_keys(frames: dict[str, pd.DataFrame]) -> list[Violation]:
    """Foreign keys among the frames given; one whose parent (or its key column) is absent is skipped."""
    out = []
    for name, df in frames.items():
        for col, parent in TABLES[name].foreign_keys.items():
            parent_key = TABLES[parent].key[0]
            if parent not in frames or parent_key not in frames[parent].columns or col not in df.columns:
                continue
            bad = ~df[col].isin(frames[parent][parent_key].dropna()) & df[col].notna()
            if bad.any():
                out.append(Violation(name, col, _rows(df.index[bad]),
                                     f"a key present in {parent}.{parent_key}", _examples(df.loc[bad, col])))
    return out


@dataclass
class ExportReport:
    """What reading an export found; ``frames`` holds only the tables without any violation."""

    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)
    ignored: dict[str, list[str]] = field(default_factory=dict)  # table -> columns dropped, file order
    files: dict[str, Path] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # asked for, no file


def read_export(directory: Path, tables: Iterable[str] | None = None, now: pd.Timestamp | None = None,
                extra: dict[str, tuple[Col, ...]] | None = None, optional: dict[str, set[str]] | None = None,
                required_tables: Iterable[str] | None = None) -> ExportReport:
    """Read and validate ``tables`` (default: all) in ``directory``; an absent table is a violation
    only when it is in ``required_tables`` (default: all of ``tables``)."""
    directory = Path(directory)
    names = list(TABLES) if tables is None else list(tables)
    required = set(names if required_tables is None else required_tables)
    extra, optional = extra or {}, optional or {}
    unknown = (set(names) | required | set(extra) | set(optional)) - set(TABLES)
    if unknown:
        raise ValueError(f"unknown table(s) {', '.join(sorted(unknown))}: expected one of {', '.join(TABLES)}")
    if required - set(names):
        raise ValueError(f"required_tables not among the tables read: {', '.join(sorted(required - set(names)))}")
    report = ExportReport()
    if not directory.is_dir():
        report.missing = names
        report.violations.append(
            Violation("(export)", None, [], f"a folder of table files at {directory}", "no such folder"))
        return report
    now = now or pd.Timestamp.now(tz="UTC")  # one clock for every table of the export
    typed: dict[str, pd.DataFrame] = {}
    for name in names:
        table, files = TABLES[name], table_files(directory, name)
        if len(files) > 1:  # which one is the export? neither is read
            report.violations.append(Violation(
                name, None, [], "one file per table", " and ".join(f.name for f in files) + " both present"))
            continue
        path = files[0] if files else None
        if path is None:
            report.missing.append(name)
            if name in required:
                report.violations.append(
                    Violation(name, None, [], f"{name}.parquet or {name}.csv in {directory}", "missing"))
            continue
        report.files[name] = path
        try:
            raw = read_raw(path, table)
        except ContractError as exc:
            report.violations.extend(exc.violations)
            continue
        declared = tuple(extra.get(name, ()))
        report.ignored[name] = ignored_columns(raw.columns, table, declared)
        typed[name], problems = validate_table(raw, table, now, extra=declared,
                                               optional=set(optional.get(name, ())))
        report.violations.extend(problems)
    # Every table read takes part, violations or not: a type error must not hide an unknown key.
    report.violations.extend(check_foreign_keys(typed))
    flagged = {v.table for v in report.violations}
    report.frames = {name: df for name, df in typed.items() if name not in flagged}
    return report


def load_export(directory: Path, tables: list[str] | None = None, now: pd.Timestamp | None = None, *,
                extra: dict[str, tuple[Col, ...]] | None = None, optional: dict[str, set[str]] | None = None,
                ) -> tuple[dict[str, pd.DataFrame], list[Violation]]:
    """Read and validate every contract table in ``directory`` (each one must be there)."""
    report = read_export(directory, tables or None, now, extra=extra, optional=optional)
    return report.frames, report.violations


def load_valid_export(directory: Path, tables: list[str] | None = None, *,
                      extra: dict[str, tuple[Col, ...]] | None = None,
                      optional: dict[str, set[str]] | None = None) -> dict[str, pd.DataFrame]:
    frames, violations = load_export(directory, tables, extra=extra, optional=optional)
    if violations:
        raise ContractError(violations)
    return frames
