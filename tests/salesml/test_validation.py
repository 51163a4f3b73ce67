"""The contract rejects broken exports with errors that name table, column and rows."""

from __future__ import annotations

import shutil

import pandas as pd
import pandera.pandas as pa
import pytest
from typer.testing import CliRunner

from salesml.cli import app
from salesml.contract import TABLES, Col
from salesml.validation import (
    ContractError,
    ignored_columns,
    load_export,
    read_export,
    validate_table,
)


def ts(values):
    return pd.to_datetime(values, utc=True)


def usage(**overrides) -> pd.DataFrame:
    df = pd.DataFrame({
        "account_id": ["a1", "a1", "a2"],
        "week_start": ["2024-01-01T00:00:00Z", "2024-01-08T00:00:00Z", "2024-01-01T00:00:00Z"],
        "logins": ["3", "4", "5"], "active_users": ["1", "2", "2"],
        "key_feature_uses": ["7", "8", "9"], "api_calls": ["100", "90", "80"],
        "config_changes": ["0", "1", "0"],
    })
    for k, v in overrides.items():
        df[k] = v
    return df


def test_valid_csv_text_is_typed_and_utc():
    typed, problems = validate_table(usage(), TABLES["usage_weekly"])
    assert problems == []
    assert str(typed["week_start"].dtype) == "datetime64[us, UTC]"
    assert typed["api_calls"].tolist() == [100, 90, 80]
    assert "scans_run" not in typed.columns  # optional columns may be absent


@pytest.mark.parametrize(
    "frame, column, rows, expected",
    [
        (usage().drop(columns=["api_calls"]), "api_calls", [], "required column"),
        (usage(logins=["3", "many", "5"]), "logins", [2], "type Int64"),
        (usage(account_id=["a1", "a1", "a1"], week_start=["2024-01-01"] * 3), "account_id, week_start",
         [1, 2, 3], "duplicate key"),
        (usage(week_start=["2024-01-01T00:00:00Z", "2024-01-08T00:00:00+02:00", "2024-01-01T09:00:00"]),
         "week_start", [2, 3], "UTC timestamp"),
        (usage(week_start=["2024-01-01", "2099-01-05", "2024-01-01"]), "week_start", [2], "not in the future"),
        (usage(api_calls=["1", "-5", "2"]), "api_calls", [2], "a value from 0 to 1,000,000,000,000"),
    ],
    ids=["missing-column", "wrong-type", "duplicate-key", "non-utc", "future", "negative"],
)
def test_each_violation_names_table_column_and_rows(frame, column, rows, expected):
    _, problems = validate_table(frame, TABLES["usage_weekly"])
    match = [p for p in problems if p.column == column]
    assert match, [str(p) for p in problems]
    assert match[0].table == "usage_weekly"
    assert match[0].rows == rows
    assert expected in str(match[0])


def test_naive_parquet_timestamps_are_rejected():
    df = usage()
    df["week_start"] = pd.to_datetime(df["week_start"]).dt.tz_localize(None)
    _, problems = validate_table(df, TABLES["usage_weekly"])
    assert [p.column for p in problems] == ["week_start"]
    assert problems[0].rows == [1, 2, 3]


def test_bool_text_is_parsed_not_truthy():
    df = pd.DataFrame({"assignment_id": ["s1", "s2"], "lead_id": ["l1", "l2"], "rep_id": ["r1", "r1"],
                       "assigned_at": ["2024-01-01", "2024-01-02"], "converted": ["false", "maybe"]})
    _, problems = validate_table(df, TABLES["lead_assignments"])
    assert [(p.column, p.rows) for p in problems] == [("converted", [2])]
    df["converted"] = ["false", "TRUE"]
    typed, problems = validate_table(df, TABLES["lead_assignments"])
    assert problems == [] and typed["converted"].tolist() == [False, True]


@pytest.fixture
def broken_export(export_dir, tmp_path):
    target = tmp_path / "export"
    shutil.copytree(export_dir, target)
    return target


def test_unknown_foreign_key_is_reported(broken_export):
    path = broken_export / "usage_weekly.parquet"
    df = pd.read_parquet(path)
    df.loc[[0, 5], "account_id"] = "no-such-account"
    df.to_parquet(path, index=False)
    _, problems = load_export(broken_export)
    assert len(problems) == 1
    assert problems[0].table == "usage_weekly" and problems[0].column == "account_id"
    assert problems[0].rows == [1, 6] and "accounts.account_id" in str(problems[0])


def test_empty_and_non_parquet_files_are_reported(broken_export):
    (broken_export / "churn_events.parquet").write_bytes(b"")
    (broken_export / "reps.parquet").write_bytes(b"this is not parquet at all")
    _, problems = load_export(broken_export)
    by_table = {p.table: str(p) for p in problems}
    assert "empty file churn_events.parquet" in by_table["churn_events"]
    assert "readable Parquet file" in by_table["reps"]


def test_csv_export_validates_like_parquet(export_dir, tmp_path):
    for table in TABLES:
        pd.read_parquet(export_dir / f"{table}.parquet").to_csv(tmp_path / f"{table}.csv", index=False)
    frames, problems = load_export(tmp_path)
    assert problems == []
    expected = pd.read_parquet(export_dir / "usage_weekly.parquet")
    assert len(frames["usage_weekly"]) == len(expected)
    assert frames["usage_weekly"]["api_calls"].sum() == expected["api_calls"].sum()


def test_cli_validate_exits_nonzero_and_lists_violations(broken_export):
    path = broken_export / "contracts.parquet"
    df = pd.read_parquet(path)
    df.loc[2, "tier"] = "platinum"
    df.to_parquet(path, index=False)
    result = CliRunner().invoke(app, ["data", "validate", str(broken_export)])
    assert result.exit_code == 1
    assert "contracts.tier" in result.output and "rows 3" in result.output
    assert "platinum" in result.output


def test_cli_validate_accepts_the_simulated_export(export_dir):
    result = CliRunner().invoke(app, ["data", "validate", str(export_dir)])
    assert result.exit_code == 0, result.output
    assert "all 10 tables satisfy the contract" in result.output


def test_contract_error_lists_every_violation():
    _, problems = validate_table(usage(logins=["x", "3", "5"], api_calls=["1", "-1", "2"]),
                                 TABLES["usage_weekly"])
    err = ContractError(problems)
    assert "2 contract violation(s)" in str(err)
    assert "usage_weekly.logins" in str(err) and "usage_weekly.api_calls" in str(err)


def write_csv(folder, **frames):
    for name, df in frames.items():
        df.to_csv(folder / f"{name}.csv", index=False)
    return folder


def leads() -> pd.DataFrame:
    return pd.DataFrame({
        "lead_id": ["l1", "l2"], "industry": ["saas", "retail"], "region": ["emea", "na"],
        "source": ["web", "event"], "product_interest": ["scan", "scan"],
        "created_at": ["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"],
    })


def test_one_run_reports_every_violation_of_a_file(tmp_path):
    events = pd.DataFrame({
        "event_id": ["e1", "e2", "e3", "e4"],
        "lead_id": ["l1", "l2", "l1", "no-such-lead"],
        "occurred_at": ["2024-02-01T00:00:00Z", "2024-02-02T00:00:00Z", "2099-01-01T00:00:00Z",
                        "2024-02-03T00:00:00Z"],
        "event_type": ["page_view", "webinar", None, "webinar"],
        "dwell_seconds": ["12.5", "a while", "3", "-1"],
        "webinar_completion": [None, "-0.5", None, "0.8"],
    })
    frames, problems = load_export(write_csv(tmp_path, leads=leads(), lead_events=events),
                                   ["leads", "lead_events"])
    found = {(p.table, p.column, tuple(p.rows)): str(p) for p in problems}
    expected = {
        ("lead_events", "dwell_seconds", (2,)): "type Float64",
        ("lead_events", "dwell_seconds", (4,)): "a value from 0 to 86,400",  # same column, coercible row
        ("lead_events", "occurred_at", (3,)): "not in the future",
        ("lead_events", "webinar_completion", (2,)): "a value from 0 to 1",
        ("lead_events", "event_type", (3,)): "not nullable",
        ("lead_events", "lead_id", (4,)): "leads.lead_id",
    }
    assert set(found) == set(expected), list(found.values())
    for where, text in expected.items():
        assert text in found[where]
    assert list(frames) == ["leads"]  # a table with violations stays out of the frames


@pytest.mark.parametrize("dtype, text, value, type_name", [
    ("float", "2.5", 2.5, "Float64"),
    ("int", "9.0", 9, "Int64"),  # CSV writers turn nullable ints into "9.0"
])
def test_extra_numeric_column_is_checked_like_a_contract_column(dtype, text, value, type_name):
    seats = Col("seats", dtype, nullable=True, checks=(pa.Check.ge(0),))
    frame, problems = validate_table(usage(seats=[text, "-1", "lots"]), TABLES["usage_weekly"], extra=(seats,))
    found = {(p.table, p.column, tuple(p.rows), p.expected) for p in problems}
    assert {(t, c, r, e.split(" (")[0]) for t, c, r, e in found} == {
        ("usage_weekly", "seats", (2,), "a value >= 0"), ("usage_weekly", "seats", (3,), f"type {type_name}")}
    assert str(frame["seats"].dtype) == type_name
    assert frame["seats"].iloc[0] == value


def test_extra_int_column_rejects_fractions():
    seats = Col("seats", "int")
    _, problems = validate_table(usage(seats=["9.0", "2.5", "3"]), TABLES["usage_weekly"], extra=(seats,))
    assert [(p.column, p.rows, p.expected.split(" (")[0]) for p in problems] == [("seats", [2], "type Int64")]


def test_extra_bool_column_is_parsed_and_kept():
    flag = Col("sso_enabled", "bool")
    frame, problems = validate_table(usage(sso_enabled=["yes", "no", "YES"]), TABLES["usage_weekly"],
                                     extra=(flag,))
    assert problems == []
    assert str(frame["sso_enabled"].dtype) == "boolean"
    assert frame["sso_enabled"].tolist() == [True, False, True]


@pytest.mark.parametrize("required, violations", [(True, 1), (False, 0)])
def test_declared_extra_missing_from_the_file(required, violations):
    seats = Col("seats", "float", required=required)
    _, problems = validate_table(usage(), TABLES["usage_weekly"], extra=(seats,))
    assert len(problems) == violations
    if violations:
        assert problems[0].column == "seats" and "required column" in str(problems[0])


def test_undeclared_columns_are_dropped_and_listed(tmp_path):
    seats = Col("seats", "float")
    df = usage(internal_note=["x", "y", "z"], seats=["1", "2", "3"])
    frame, problems = validate_table(df, TABLES["usage_weekly"], extra=(seats,))
    assert problems == [] and "internal_note" not in frame.columns and "seats" in frame.columns
    assert ignored_columns(df.columns, TABLES["usage_weekly"], (seats,)) == ["internal_note"]
    assert ignored_columns(df.columns, "usage_weekly") == ["internal_note", "seats"]
    report = read_export(write_csv(tmp_path, usage_weekly=df), ["usage_weekly"],
                         extra={"usage_weekly": (seats,)})
    assert report.violations == []
    assert report.ignored == {"usage_weekly": ["internal_note"]}
    assert report.files == {"usage_weekly": tmp_path / "usage_weekly.csv"}
    assert list(report.frames["usage_weekly"].columns) == [c for c in df.columns if c != "internal_note"]


def test_optional_contract_column_may_be_absent(tmp_path):
    df = usage().drop(columns=["logins"])
    _, problems = validate_table(df, TABLES["usage_weekly"])
    assert [p.column for p in problems] == ["logins"]
    frame, problems = validate_table(df, TABLES["usage_weekly"], optional={"logins"})
    assert problems == [] and "logins" not in frame.columns
    frames, problems = load_export(write_csv(tmp_path, usage_weekly=df), ["usage_weekly"],
                                   optional={"usage_weekly": {"logins"}})
    assert problems == [] and list(frames) == ["usage_weekly"]


def test_missing_required_table_names_the_folder(tmp_path):
    write_csv(tmp_path, usage_weekly=usage())
    report = read_export(tmp_path, ["accounts", "usage_weekly", "leads"], required_tables=["leads"])
    assert report.missing == ["accounts", "leads"]
    assert [(p.table, p.column) for p in report.violations] == [("leads", None)]  # no FK check: no accounts
    assert f"leads.parquet or leads.csv in {tmp_path}" in str(report.violations[0])
    assert list(report.frames) == ["usage_weekly"]
    _, problems = load_export(tmp_path, ["usage_weekly", "leads"])  # every table asked for is required
    assert [p.table for p in problems] == ["leads"]


def test_unparseable_key_timestamps_are_not_duplicates():
    df = usage(account_id=["a1", "a1", "a2"], week_start=["2024-13-45", "2024-13-46", "2024-01-01"])
    _, problems = validate_table(df, TABLES["usage_weekly"])
    assert [(p.column, p.rows, p.expected) for p in problems] == [
        ("week_start", [1, 2], "type datetime64[us, UTC]")]


def by_where(problems) -> dict:
    return {(p.table, p.column, tuple(p.rows)): str(p) for p in problems}


def test_duplicated_csv_column_is_named(tmp_path):
    write_csv(tmp_path, usage_weekly=usage())
    path = tmp_path / "usage_weekly.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0] + ",logins"] + [line + ",6" for line in lines[1:]]) + "\n")
    report = read_export(tmp_path, ["usage_weekly"])
    assert [(p.table, p.column, p.rows) for p in report.violations] == [("usage_weekly", "logins", [])]
    assert "'logins' 2 times in usage_weekly.csv" in str(report.violations[0])
    assert report.frames == {}


def test_duplicated_parquet_column_is_named(tmp_path):
    import pyarrow as pa_arrow
    import pyarrow.parquet as pq

    df = usage()
    arrays = [pa_arrow.array(df[c]) for c in df.columns] + [pa_arrow.array(["x", "y", "z"])]
    pq.write_table(pa_arrow.Table.from_arrays(arrays, names=[*df.columns, "account_id"]),
                   tmp_path / "usage_weekly.parquet")
    report = read_export(tmp_path, ["usage_weekly"])
    assert [(p.table, p.column, p.rows) for p in report.violations] == [("usage_weekly", "account_id", [])]
    assert "'account_id' 2 times in usage_weekly.parquet" in str(report.violations[0])


def test_two_files_for_one_table_are_a_violation(tmp_path):
    write_csv(tmp_path, usage_weekly=usage())
    usage().to_parquet(tmp_path / "usage_weekly.parquet", index=False)
    report = read_export(tmp_path, ["usage_weekly"])
    assert [(p.table, p.column, p.rows) for p in report.violations] == [("usage_weekly", None, [])]
    assert "usage_weekly.parquet and usage_weekly.csv" in str(report.violations[0])
    assert report.frames == {} and report.missing == []


def test_week_start_must_be_monday_midnight_utc():
    frame = usage(week_start=["2024-01-01T00:00:00Z", "2024-01-09T00:00:00Z", "2024-01-01T06:00:00Z"])
    _, problems = validate_table(frame, TABLES["usage_weekly"])
    assert [(p.table, p.column, p.rows) for p in problems] == [("usage_weekly", "week_start", [2, 3])]
    assert "expected a Monday 00:00 UTC" in str(problems[0])


@pytest.mark.parametrize("as_parquet", [False, True], ids=["csv", "parquet"])
def test_timestamps_before_the_minimum_or_centuries_ahead_are_rejected(tmp_path, as_parquet):
    events = pd.DataFrame({
        "event_id": ["e1", "e2", "e3", "e4"], "lead_id": ["l1"] * 4,
        "occurred_at": ["2024-02-01T00:00:00Z", "1989-12-31T23:59:59Z", "1000-01-01T00:00:00Z",
                        "2999-01-01T00:00:00Z"],
        "event_type": ["page_view"] * 4,
    })
    if as_parquet:  # microsecond timestamps reach year 1000 and 2999, nanosecond ones do not
        events["occurred_at"] = pd.Series([pd.Timestamp(v).as_unit("us") for v in events["occurred_at"]],
                                          dtype="datetime64[us, UTC]")
        events.to_parquet(tmp_path / "lead_events.parquet", index=False)
        leads().to_parquet(tmp_path / "leads.parquet", index=False)
    else:
        write_csv(tmp_path, leads=leads(), lead_events=events)
    found = by_where(load_export(tmp_path, ["leads", "lead_events"])[1])
    assert set(found) == {("lead_events", "occurred_at", (2, 3)), ("lead_events", "occurred_at", (4,))}
    assert "not before 1990-01-01 00:00 UTC" in found["lead_events", "occurred_at", (2, 3)]
    assert "not in the future" in found["lead_events", "occurred_at", (4,)]


def test_scheduled_dates_may_lie_ahead_but_not_centuries_ahead():
    contracts = pd.DataFrame({
        "contract_id": ["c1", "c2", "c3"], "account_id": ["a1"] * 3, "tier": ["pro"] * 3,
        "annual_value": ["100"] * 3, "start_date": ["2024-01-01"] * 3,
        "end_date": ["2030-01-01", "2999-01-01", "1980-01-01"], "sla_target": ["0.99"] * 3,
        "snapshot_at": ["2024-06-01"] * 3,
    })
    _, problems = validate_table(contracts, TABLES["contracts"], now=pd.Timestamp("2025-01-01", tz="UTC"))
    found = by_where(problems)
    assert set(found) == {("contracts", "end_date", (2,)), ("contracts", "end_date", (3,))}
    assert "at most 10 years in the future" in found["contracts", "end_date", (2,)]
    assert "not before 1990-01-01" in found["contracts", "end_date", (3,)]


def test_every_timestamp_column_rejects_year_2999_and_year_0():
    for table in TABLES.values():
        every = {c.name for c in table.columns}  # optional: a frame of the timestamp columns alone
        for text, expected in [("2999-01-01T00:00:00Z", "future"), ("0000-01-01T00:00:00Z", "type")]:
            frame = pd.DataFrame({name: [text] for name in table.timestamp_columns})
            _, problems = validate_table(frame, table, now=pd.Timestamp("2025-01-01", tz="UTC"), optional=every)
            found = {(p.table, p.column, tuple(p.rows)) for p in problems if expected in p.expected}
            assert found == {(table.name, name, (1,)) for name in table.timestamp_columns}, problems
