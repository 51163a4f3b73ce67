"""Read an export folder and check it against the raw-data contract.

Every violation names the table, the column, the data rows (1-based, header excluded) and
what was expected.  Nothing is written anywhere: callers that write (the feature store)
only go on when the list of violations is empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pandera.pandas as pa
import pyarrow as pa_arrow
import pyarrow.parquet as pq

from salesml.contract import FUTURE_TOLERANCE, TABLES, TS, UTC_TEXT, Table

PANDAS_DTYPES = {"str": "string", "int": "Int64", "float": "Float64", "bool": "boolean", "ts": TS}
BOOL_TEXT = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}
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


def find_table_file(directory: Path, table: str) -> Path | None:
    for suffix in (".parquet", ".csv"):
        path = directory / f"{table}{suffix}"
        if path.exists():
            return path
    return None


def read_raw(path: Path, table: Table) -> pd.DataFrame:
    """Read one table file; raises ContractError for unreadable or empty files."""
    if path.stat().st_size == 0:
        raise ContractError([Violation(table.name, None, [], "a non-empty file", f"empty file {path.name}")])
    try:
        if path.suffix == ".parquet":
            df = pq.read_table(path).to_pandas()
        else:
            df = pd.read_csv(path, dtype=str, keep_default_na=True)
    except (pa_arrow.ArrowInvalid, pa_arrow.ArrowException, OSError, pd.errors.ParserError,
            pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        kind = "Parquet" if path.suffix == ".parquet" else "CSV"
        raise ContractError([Violation(
            table.name, None, [], f"a readable {kind} file", f"{path.name}: {exc}".strip()
        )]) from None
    if df.empty:
        raise ContractError([Violation(table.name, None, [], "at least one data row", f"{path.name} has none")])
    return df


def _rows(index) -> list[int]:
    return sorted({int(i) + 1 for i in index if pd.notna(i)})


def _from_pandera(table: Table, err: pa.errors.SchemaErrors) -> list[Violation]:
    cases = err.failure_cases.copy()
    cases["check"] = cases["check"].astype(str)
    missing = cases["check"].str.startswith("column_in_dataframe")
    cases.loc[missing, "column"] = cases.loc[missing, "failure_case"]
    # A value that cannot be coerced also fails the dtype check and any value check on it;
    # report it once, as a type error.
    uncoercible = set(cases.loc[cases["check"].str.startswith("coerce_dtype"), "column"])
    follow_on = cases["column"].isin(uncoercible) & ~cases["check"].str.startswith("coerce_dtype")
    cases = cases[~follow_on]
    out = []
    unique = cases["check"].str.contains("uniqueness")
    if unique.any():
        dup = cases[unique]
        out.append(Violation(table.name, ", ".join(table.key), _rows(dup["index"]),
                             "unique key values (duplicate key)",
                             ", ".join(map(str, dup["failure_case"].astype(str).unique()[:3]))))
    for (column, check), grp in cases[~unique].groupby(["column", "check"], dropna=False, sort=False):
        column = None if pd.isna(column) or column == table.name else str(column)
        examples = ", ".join(map(str, grp["failure_case"].dropna().astype(str).unique()[:3]))
        if check.startswith("column_in_dataframe"):
            examples = ""
        out.append(Violation(table.name, column, _rows(grp["index"]), _explain(check), examples))
    return out


def _explain(check: str) -> str:
    check = str(check)
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
    return check


def _utc_check() -> pa.Check:
    def is_utc(s: pd.Series):
        if isinstance(s.dtype, pd.DatetimeTZDtype):
            return pd.Series(str(s.dtype.tz) in ("UTC", "utc"), index=s.index) | s.isna()
        if pd.api.types.is_datetime64_dtype(s.dtype):
            return s.isna()  # naive datetimes: zone unknown
        return s.isna() | s.astype("string").str.match(UTC_TEXT).fillna(False).astype(bool)

    return pa.Check(is_utc, name="utc_timestamp")


def _raw_schema(table: Table) -> pa.DataFrameSchema:
    """Stage 1: presence of required columns and UTC-ness of timestamps, before any parsing."""
    cols = {}
    for c in table.columns:
        checks = [_utc_check()] if c.dtype == "ts" else []
        cols[c.name] = pa.Column(None, checks=checks, nullable=True, required=c.required)
    return pa.DataFrameSchema(cols, strict=False)


def _typed_schema(table: Table, now: pd.Timestamp) -> pa.DataFrameSchema:
    cols = {}
    for c in table.columns:
        checks = list(c.checks)
        if c.dtype == "ts" and not c.future_ok:
            checks.append(pa.Check(lambda s, lim=now + FUTURE_TOLERANCE: s.isna() | (s <= lim),
                                   name="not_in_future"))
        cols[c.name] = pa.Column(
            PANDAS_DTYPES[c.dtype], checks=checks, nullable=c.nullable,
            required=c.required, coerce=True,
        )
    return pa.DataFrameSchema(cols, unique=list(table.key), strict=False,
                              report_duplicates="all")


def _prepare(df: pd.DataFrame, table: Table) -> pd.DataFrame:
    df = df.copy()
    for c in table.columns:
        if c.name not in df.columns:
            continue
        s = df[c.name]
        if c.dtype == "int" and not pd.api.types.is_integer_dtype(s.dtype):
            # CSV writers turn nullable ints into "9.0": accept integral values, flag the rest
            num = pd.to_numeric(s, errors="coerce")
            integral = num.notna() & (num == num.round())
            df[c.name] = s.where(~integral, num.where(integral).astype("Float64").astype("Int64").astype(object))
        elif c.dtype == "bool" and s.dtype == object:
            mapped = s.astype("string").str.strip().str.lower().map(BOOL_TEXT)
            df[c.name] = mapped.where(s.isna() | mapped.notna(), s)
        elif c.dtype == "ts" and not pd.api.types.is_datetime64_any_dtype(s.dtype):
            parsed = pd.to_datetime(s, utc=True, errors="coerce", format="mixed")
            df[c.name] = parsed.where(parsed.notna(), s)  # unparseable text stays for pandera
        elif c.dtype == "ts" and isinstance(s.dtype, pd.DatetimeTZDtype):
            df[c.name] = s.dt.tz_convert("UTC")
    return df


def validate_table(df: pd.DataFrame, table: Table,
                   now: pd.Timestamp | None = None) -> tuple[pd.DataFrame, list[Violation]]:
    """Return the typed frame (contract dtypes, UTC microsecond timestamps) and the violations."""
    now = now or pd.Timestamp.now(tz="UTC")
    df = df.reset_index(drop=True)
    violations: list[Violation] = []
    try:
        _raw_schema(table).validate(df, lazy=True)
    except pa.errors.SchemaErrors as err:
        violations = _from_pandera(table, err)
    try:
        typed = _typed_schema(table, now).validate(_prepare(df, table), lazy=True)
    except pa.errors.SchemaErrors as err:
        seen = {v.column for v in violations}
        violations += [v for v in _from_pandera(table, err) if v.column not in seen]
    if violations:
        return df, violations
    extra = [c for c in typed.columns if c not in {col.name for col in table.columns}]
    return typed.drop(columns=extra), []


def check_foreign_keys(frames: dict[str, pd.DataFrame]) -> list[Violation]:
    out = []
    for name, df in frames.items():
        for col, parent in TABLES[name].foreign_keys.items():
            if parent not in frames or col not in df.columns:
                continue
            parent_keys = frames[parent][TABLES[parent].key[0]]
            bad = ~df[col].isin(parent_keys) & df[col].notna()
            if bad.any():
                examples = ", ".join(df.loc[bad, col].astype(str).unique()[:3])
                out.append(Violation(name, col, _rows(df.index[bad]),
                                     f"a key present in {parent}.{TABLES[parent].key[0]}", examples))
    return out


def load_export(directory: Path, tables: list[str] | None = None,
                now: pd.Timestamp | None = None) -> tuple[dict[str, pd.DataFrame], list[Violation]]:
    """Read and validate every contract table found in ``directory``."""
    directory = Path(directory)
    frames: dict[str, pd.DataFrame] = {}
    violations: list[Violation] = []
    if not directory.is_dir():
        return frames, [Violation("(export)", None, [], f"a folder of table files at {directory}", "no such folder")]
    for name in tables or list(TABLES):
        table = TABLES[name]
        path = find_table_file(directory, name)
        if path is None:
            violations.append(Violation(name, None, [], f"{name}.parquet or {name}.csv in the export", "missing"))
            continue
        try:
            raw = read_raw(path, table)
        except ContractError as exc:
            violations.extend(exc.violations)
            continue
        typed, problems = validate_table(raw, table, now)
        violations.extend(problems)
        if not problems:
            frames[name] = typed
    violations.extend(check_foreign_keys(frames))
    return frames, violations


def load_valid_export(directory: Path, tables: list[str] | None = None) -> dict[str, pd.DataFrame]:
    frames, violations = load_export(directory, tables)
    if violations:
        raise ContractError(violations)
    return frames

