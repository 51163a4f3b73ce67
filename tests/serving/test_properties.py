"""Property-based tests (hypothesis): the request models and the scoring core over extreme values.

Whatever a client sends, the answer is a validation error naming the field, or a score that is a
finite number in its range and serialises as strict JSON; never an exception of another kind."""

from __future__ import annotations

import json
import math
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from salesml.contract import ID_MAX_LENGTH, ID_PATTERN
from serving.auth import Caller
from serving.service import Ids, Outcome, Rows

CSM = Caller("t-prop", "csm")
IDS, ROWS, OUTCOMES = TypeAdapter(Ids), TypeAdapter(Rows), TypeAdapter(list[Outcome])

scalars = (st.none() | st.booleans() | st.integers(-(2**80), 2**80) | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=12))
json_like = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                         | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)
# Values a numeric feature may be sent: huge, tiny, signed zero, flags, non-finite, text, null.
extreme = (st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**130), 2**130) | st.booleans()
           | st.none() | st.sampled_from([3.4028235e38, 3.5e38, -3.5e38, 1e-320, -0.0, "1", ""]))


@settings(max_examples=300, deadline=None)
@given(json_like)
def test_request_models_accept_only_what_the_contract_allows(value):
    try:
        ids = IDS.validate_python(value)
    except ValidationError:
        pass
    else:
        assert all(re.fullmatch(ID_PATTERN, i) and len(i) <= ID_MAX_LENGTH for i in ids)
    try:
        rows = ROWS.validate_python(value)
    except ValidationError:
        pass
    else:
        numbers = [v for r in rows for v in r.values() if isinstance(v, float)]
        assert all(math.isfinite(v) for v in numbers)
    try:
        outcomes = OUTCOMES.validate_python(value)
    except ValidationError:
        pass
    else:
        assert all(o.occurred_at.tzinfo is not None for o in outcomes)


@pytest.fixture(scope="module")
def base_row(core, served_settings):
    import pandas as pd

    account = pd.read_parquet(served_settings.raw_dir / "accounts.parquet")["account_id"].iloc[0]
    frame = core.online(core.specs["chs"].feature_service, "account_id", [account]).drop(columns="_known")
    return {k: (None if pd.isna(v) else (v.item() if hasattr(v, "item") else v)) for k, v in frame.iloc[0].items()}


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.mlflow
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_scoring_core_scores_or_refuses_any_numeric_value(core, base_row, data):
    from serving.core import RequestError

    spec = core.models["chs"]["champion"].model.spec
    changes = data.draw(st.dictionaries(st.sampled_from(list(spec.numeric)), extreme, min_size=1, max_size=3))
    row = {**base_row, **changes}
    try:
        out = core.health(CSM, rows=[row])
    except RequestError as exc:
        assert exc.field == "rows" and any(k in str(exc) for k in changes)
        return
    result = out["results"][0]
    assert 0 <= result["score"] <= 100 and 0 <= result["churn_probability"] <= 1
    assert result["level"] in ("green", "yellow", "orange", "red")
    json.dumps(out, allow_nan=False)  # what BentoML sends must be strict JSON


# --- /events rows over the HTTP service (issue 22 item 3 of "what to build") ---------------------------
# salesml/validation.py bounds pushed values (float32, plausibility), refuses true/false outside bool
# columns and numbers in text columns (issue 22 items 2, 4 and 9): nothing stored breaks scoring.
# What a hostile or broken client may put in any column of a pushed row: extreme and non-finite floats
# (JSON has no inf: sent as the text 1e400, -1e400, NaN, Infinity, which parsers read as inf or nan),
# subnormals, signed zero, booleans, strings (numeric text too), huge integers, and nesting (lists and
# objects, shallow or up to 1,500 levels deep).
class Raw(str):
    """A JSON token written as it is (``1e400``, ``NaN``, a deeply nested array)."""


def deep(levels: int) -> Raw:
    return Raw("[" * levels + "1" + "]" * levels)


wild = (st.sampled_from([1e308, -1e308, 3.5e38, -3.5e38, 3.4028235e38, 1e39, 1e18, 5e-324, 2.2e-308, -0.0, 0.0])
        | st.sampled_from([Raw("1e400"), Raw("-1e400"), Raw("NaN"), Raw("Infinity"), Raw("-Infinity")])
        | st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**70), 2**70) | st.booleans()
        | st.none() | st.sampled_from(["", "1", "1e308", "inf", "true", "2026-09-07T00:00:00Z", "\u0000", "x" * 600])
        | st.builds(deep, st.sampled_from([2, 50, 1500]))
        | st.recursive(st.integers() | st.text(max_size=3), lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=5))


def as_json(value) -> str:
    """``value`` as JSON text, with each ``Raw`` token in place."""
    raws: list[str] = []

    def mark(v):
        if isinstance(v, Raw):
            raws.append(v)
            return f"@@raw{len(raws) - 1}@@"
        if isinstance(v, list):
            return [mark(x) for x in v]
        if isinstance(v, dict):
            return {k: mark(x) for k, x in v.items()}
        return v

    text = json.dumps(mark(value))
    for i, raw in enumerate(raws):
        text = text.replace(f'"@@raw{i}@@"', raw)
    return text


@pytest.fixture(scope="module")
def push_targets(served_settings):
    """``target(table, k)``: the entity key, the k-th lead or account from the middle of the export (no
    other test reads those; each case has its own, since a stored row stays) and a valid row of the table
    for it: a generated row is that row with some columns replaced."""
    import pandas as pd

    raw = served_settings.raw_dir
    leads = pd.read_parquet(raw / "leads.parquet")["lead_id"].tolist()
    accounts = pd.read_parquet(raw / "accounts.parquet")["account_id"].tolist()
    week = str(pd.Timestamp(pd.read_parquet(raw / "usage_weekly.parquet", columns=["week_start"])["week_start"].max())
               .date())
    recent = (pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")  # in every window

    def target(table: str, k: int) -> tuple[str, str, dict]:
        if table == "lead_events":
            lead = leads[len(leads) // 2 + k]
            return "lead_id", lead, {"event_id": "", "lead_id": lead, "occurred_at": recent, "event_type": "page_view",
                                     "page": "pricing", "doc_type": None, "dwell_seconds": 30.0,
                                     "webinar_completion": None}
        account = accounts[len(accounts) // 2 + k]
        return "account_id", account, {"account_id": account, "week_start": week, "logins": 5, "active_users": 2,
                                       "key_feature_uses": 3, "api_calls": 100, "config_changes": 1, "scans_run": 2,
                                       "custom_rules": 1}

    return target


def _check_push(client, keys, target: tuple[str, str, dict], table: str, changes: dict,
                refused: bool | None = None) -> None:
    """Push one row with ``changes``: never a 5xx; a 200 leaves the entity scorable (a finite score, no
    per-item error); a 4xx names what is wrong (the changed column, for a 400). ``refused``: whether the
    push must be refused (None: either)."""
    import uuid

    _, entity, base = target
    row = {**base, **changes}
    if table == "lead_events" and "event_id" not in changes:
        row["event_id"] = f"E-prop-{uuid.uuid4().hex[:12]}"  # a new event, never an exported one
    r = client.post("/events", content=as_json({"table": table, "rows": [row]}),
                    headers={"X-API-Key": keys["ingest"], "Content-Type": "application/json"})
    assert r.status_code < 500, (changes, r.status_code, r.text[:500])
    assert refused is None or refused == (r.status_code != 200), (changes, r.status_code, r.text[:300])
    if r.status_code != 200:
        assert r.status_code in (400, 413, 422) and r.json().get("error"), (changes, r.status_code, r.text[:300])
        if r.status_code == 400 and refused:  # the contract names table.column; the request model, the field
            body = r.json()
            assert any(f"{table}.{c}" in body["error"] or c in str(body.get("field")) for c in changes), (
                changes, r.text[:300])
        return
    path, ids = ("/intent", "lead_ids") if table == "lead_events" else ("/health", "account_ids")
    scored = client.post(path, json={ids: [entity]}, headers={"X-API-Key": keys["csm"]})
    assert scored.status_code == 200, ("stored", changes, scored.status_code, scored.text[:500])
    result = scored.json()["results"][0]
    value = result.get("probability" if table == "lead_events" else "score")
    assert "error" not in result and isinstance(value, float) and math.isfinite(value), ("stored", changes, result)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.mlflow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(data=st.data())
def test_events_rows_never_5xx_and_never_store_what_breaks_scoring(client, keys, push_targets, data):
    from salesml.contract import TABLES

    table = data.draw(st.sampled_from(["lead_events", "usage_weekly"]), label="table")
    target = push_targets(table, 0)
    columns = [c.name for c in TABLES[table].columns if c.name != target[0]]
    changes = data.draw(st.dictionaries(st.sampled_from(columns), wild, min_size=1, max_size=3), label="changes")
    _check_push(client, keys, target, table, changes)


# The probe's sharpest /events cases, each on its own (they are in the strategy above too), and whether
# each must be refused: beyond float32 or the plausible range, true/false outside a bool column, a number
# as an event id. None: either answer is fine, as long as what is stored stays scorable.
SHARP = [
    ("lead_events", {"dwell_seconds": 1e308}, True), ("lead_events", {"dwell_seconds": 1e39}, True),
    ("lead_events", {"dwell_seconds": 3.5e38}, True), ("lead_events", {"dwell_seconds": Raw("1e400")}, True),
    ("lead_events", {"dwell_seconds": 86_401.0}, True), ("lead_events", {"dwell_seconds": True}, True),
    ("lead_events", {"webinar_completion": 5e-324}, None), ("lead_events", {"occurred_at": True}, True),
    ("lead_events", {"event_id": 0.0}, True), ("lead_events", {"page": deep(1500)}, None),
    ("usage_weekly", {"week_start": False}, True), ("usage_weekly", {"logins": 10**18}, True),
    ("usage_weekly", {"logins": True}, True), ("usage_weekly", {"api_calls": 1e308}, True),
    ("usage_weekly", {"scans_run": -0.0}, False), ("usage_weekly", {"custom_rules": "3"}, None),
    ("usage_weekly", {"logins": 100_000_000}, False),
]


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.mlflow
@pytest.mark.parametrize("k, table, changes, refused", [
    pytest.param(k, t, c, refused, id=f"{t}-{next(iter(c))}-{next(iter(c.values()))!s:.12}")
    for k, (t, c, refused) in enumerate(SHARP, start=1)])
def test_events_sharp_cases(client, keys, push_targets, k, table, changes, refused):
    _check_push(client, keys, push_targets(table, k), table, changes, refused)
