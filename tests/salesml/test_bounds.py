"""Bounded values on every write path (issue 22 items 2, 4, 9, 10): the contract's float32 and
plausibility bounds, no guessed types, ids the API can query and rules across a row's columns.

Frames built like a ``POST /events`` body (``pd.DataFrame(rows)`` of JSON values) go through the same
``validate_table`` as an export's files, so one test of the function covers both paths; the CLI tests
show the export commands refuse what it refuses."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

from salesml.cli import app
from salesml.contract import FLOAT32_MAX, TABLES
from salesml.project import ProjectConfig
from salesml.validation import load_export, validate_table

NOW = pd.Timestamp("2025-06-01", tz="UTC")


def event(**changes) -> dict:
    return {"event_id": "E-1", "lead_id": "L1", "occurred_at": "2025-05-01T10:00:00Z", "event_type": "page_view",
            "page": "pricing", "doc_type": None, "dwell_seconds": 30.0, "webinar_completion": None, **changes}


def usage(**changes) -> dict:
    return {"account_id": "A1", "week_start": "2025-04-28", "logins": 5.0, "active_users": 2.0,
            "key_feature_uses": 3.0, "api_calls": 100.0, "config_changes": 1.0, **changes}


def problems(table: str, rows: list[dict], **kw) -> list[tuple[str | None, list[int], str]]:
    _, found = validate_table(pd.DataFrame(rows), TABLES[table], NOW, **kw)
    return [(p.column, p.rows, str(p)) for p in found]


def test_valid_json_rows_pass():
    assert problems("lead_events", [event(), event(event_id="E-2", dwell_seconds=86_400.0)]) == []
    assert problems("usage_weekly", [usage(), usage(week_start="2025-05-05", logins=100_000_000.0)]) == []


@pytest.mark.parametrize("value", [1e308, 1e39, 3.5e38, -3.5e38, float("inf"), "inf", "1e39"])
def test_a_float_beyond_float32_is_refused_naming_the_bound(value):
    found = problems("lead_events", [event(), event(event_id="E-2", dwell_seconds=value)])
    assert [(c, r) for c, r, _ in found] == [("dwell_seconds", [2])]
    assert "lead_events.dwell_seconds: rows 2" in found[0][2] and "float32" in found[0][2]


def test_the_plausibility_bound_refuses_what_float32_allows():
    found = problems("lead_events", [event(dwell_seconds=FLOAT32_MAX), event(event_id="E-2", dwell_seconds=86_401.0)])
    assert [(c, r) for c, r, _ in found] == [("dwell_seconds", [1, 2])]
    assert "a value from 0 to 86,400" in found[0][2]


def test_a_week_of_1e18_logins_is_refused():  # issue 22 item 6: it raised a warning that paged an owner
    found = problems("usage_weekly", [usage(logins=1e18)])
    assert found == [("logins", [1], "usage_weekly.logins: rows 1: expected a value from 0 to 100,000,000 "
                                     "(found 1000000000000000000)")]


def test_nan_where_a_value_is_required_is_refused():
    contracts = pd.DataFrame({"contract_id": ["c1"], "account_id": ["a1"], "tier": ["pro"],
                              "annual_value": [float("nan")], "start_date": [pd.Timestamp("2024-01-01", tz="UTC")],
                              "end_date": [pd.Timestamp("2026-01-01", tz="UTC")], "sla_target": [0.99],
                              "snapshot_at": [pd.Timestamp("2025-01-01", tz="UTC")]})
    _, found = validate_table(contracts, TABLES["contracts"], NOW)
    assert [(p.column, p.rows, p.expected) for p in found] == [
        ("annual_value", [1], "a value (column is not nullable)")]


@pytest.mark.parametrize("table, row, column", [
    ("lead_events", event(dwell_seconds=True), "dwell_seconds"),
    ("lead_events", event(webinar_completion=False), "webinar_completion"),
    ("usage_weekly", usage(logins=True), "logins"),
    ("lead_events", event(occurred_at=True), "occurred_at"),  # item 4: a TypeError (500) before
    ("usage_weekly", usage(week_start=False), "week_start"),
    ("lead_events", event(page=True), "page"),
])
def test_a_boolean_is_never_a_number_a_time_or_text(table, row, column):
    base = event(event_id="E-0") if table == "lead_events" else usage(week_start="2025-04-21")
    for rows in ([row], [base, row]):  # a column of flags, and a flag among other values
        found = problems(table, rows)
        assert {c for c, _, _ in found} == {column}, found
        assert all(r == [len(rows)] for c, r, _ in found)


@pytest.mark.parametrize("value", [0.0, 17.0, 1.5])
def test_a_number_as_an_event_id_is_refused_not_stored_as_text(value):
    for rows in ([event(event_id=value)], [event(event_id="E-0"), event(event_id=value)]):
        found = problems("lead_events", rows)
        assert [(c, r) for c, r, _ in found] == [("event_id", [len(rows)])]
        assert "type string" in found[0][2]


def test_an_integer_id_column_in_a_parquet_export_is_read_as_its_digits():
    typed, found = validate_table(pd.DataFrame([event(lead_id=None)]).assign(lead_id=[123]), TABLES["lead_events"], NOW)
    assert found == [] and typed["lead_id"].tolist() == ["123"]


@pytest.mark.parametrize("value", ["A\U0001f600", "", " ", "a b", "x" * 65, "a@b.com"])
def test_an_id_the_api_cannot_query_is_refused(value):
    found = problems("usage_weekly", [usage(), usage(account_id=value)])
    assert [(c, r) for c, r, _ in found] == [("account_id", [2])]
    assert "^[A-Za-z0-9_.:\\-]+$" in found[0][2] and repr(value)[:20] in found[0][2]


def contract(**changes) -> dict:
    return {"contract_id": "c1", "account_id": "a1", "tier": "pro", "annual_value": "100",
            "start_date": "2024-01-01", "end_date": "2025-01-01", "sla_target": "0.99",
            "snapshot_at": "2024-06-01", **changes}


def test_a_contract_that_ends_before_it_starts_is_refused():
    found = problems("contracts", [contract(), contract(contract_id="c2", end_date="2023-12-31")])
    assert found == [("end_date", [2], "contracts.end_date: rows 2: expected an end_date not before start_date (found "
                                       "start_date=2024-01-01T00:00:00+00:00, end_date=2023-12-31T00:00:00+00:00)")]
    assert problems("contracts", [contract(end_date="2024-01-01")]) == []  # a one-day contract is fine
    # a start that is itself refused is not judged again by the row rule
    assert [c for c, _, _ in problems("contracts", [contract(start_date="someday")])] == ["start_date"]


def assignment(i: int, converted: str, converted_at: str | None) -> dict:
    return {"assignment_id": f"s{i}", "lead_id": "l1", "rep_id": "r1", "assigned_at": "2024-01-01",
            "converted": converted, "converted_at": converted_at}


def test_converted_and_converted_at_go_together():
    rows = [assignment(1, "true", "2024-02-01"), assignment(2, "false", None),
            assignment(3, "true", None), assignment(4, "false", "2024-02-01")]
    found = problems("lead_assignments", rows)
    assert [(c, r, t.split(": expected ")[1].split(" (found")[0]) for c, r, t in found] == [
        ("converted_at", [3], "a converted_at where converted is true"),
        ("converted_at", [4], "no converted_at where converted is false")]
    no_column = pd.DataFrame(rows).drop(columns="converted_at")  # an export without the column: nothing to compare
    assert validate_table(no_column, TABLES["lead_assignments"], NOW)[1] == []


def test_a_custom_columns_min_and_max_apply_like_the_contracts_own():
    project = ProjectConfig.model_validate({"custom_columns": {"usage_weekly": {
        "seats": {"type": "numeric", "min": 1, "max": 500}, "score": {"type": "numeric", "nullable": True}}}})
    extra = project.extra_columns()["usage_weekly"]
    rows = [usage(seats=10.0, score=None), usage(week_start="2025-05-05", seats=501.0, score=1e39),
            usage(week_start="2025-05-12", seats=0.0, score=2.5)]
    found = problems("usage_weekly", rows, extra=extra)
    assert sorted((c, r, t.split(": expected ")[1].split(" (")[0]) for c, r, t in found) == [
        ("score", [2], "type Float64"), ("seats", [2], "a value <= 500"), ("seats", [3], "a value >= 1")]


@pytest.fixture
def poisoned_export(export_dir, tmp_path):
    target = tmp_path / "export"
    shutil.copytree(export_dir, target)
    path = target / "lead_events.parquet"
    df = pd.read_parquet(path)
    df.loc[4, "dwell_seconds"] = 1e39
    df.to_parquet(path, index=False)
    return target


def test_data_validate_and_features_build_refuse_an_export_beyond_the_bounds(poisoned_export, tmp_path, monkeypatch):
    _, found = load_export(poisoned_export, ["leads", "lead_events"])
    assert [(p.table, p.column, p.rows) for p in found] == [("lead_events", "dwell_seconds", [5])]
    result = CliRunner().invoke(app, ["data", "validate", str(poisoned_export)])
    assert result.exit_code == 1 and "lead_events.dwell_seconds" in result.output and "float32" in result.output
    monkeypatch.setenv("SALESML_HOME", str(tmp_path / "home"))
    built = CliRunner().invoke(app, ["features", "build", "--raw", str(poisoned_export)])
    assert built.exit_code != 0 and "lead_events.dwell_seconds" in built.output, built.output
    assert not list((tmp_path / "home").rglob("*.parquet"))  # nothing written


def test_data_validate_refuses_an_emoji_account_id(export_dir, tmp_path):
    target = tmp_path / "export"
    shutil.copytree(export_dir, target)
    path = target / "accounts.parquet"
    df = pd.read_parquet(path)
    df.loc[2, "account_id"] = "\U0001f600"
    df.to_parquet(path, index=False)
    result = CliRunner().invoke(app, ["data", "validate", str(target)])
    assert result.exit_code == 1 and "accounts.account_id" in result.output and "rows 3" in result.output
