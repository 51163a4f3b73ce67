"""The contract rejects broken exports with errors that name table, column and rows."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

from salesml.cli import app
from salesml.contract import TABLES
from salesml.validation import ContractError, load_export, validate_table


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
        (usage(api_calls=["1", "-5", "2"]), "api_calls", [2], "greater_than_or_equal_to(0)"),
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
