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
