"""Feature types by meaning, from one source (features.transforms.FEATURE_TYPES), everywhere:
the Feast schema, the feature files, the online store; and what ``materialize`` loads."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feast.types import Bool, Float64, Int64, String

from features import definitions, transforms
from features.custom import custom_features
from salesml.project import ProjectConfig

ARROW = {Int64: pa.int64(), Bool: pa.bool_(), Float64: pa.float64(), String: pa.string()}
CUSTOM = {"custom_columns": {
    "accounts": {"plan": {"type": "categorical"}, "seats": {"type": "numeric", "min": 0},
                 "sso": {"type": "boolean"}},
    "lead_events": {"coupon": {"type": "boolean", "aggregations": [{"fn": "count", "days": 30}]}},
    "usage_weekly": {"orders": {"type": "numeric", "min": 0, "aggregations": [{"fn": "mean", "days": 28}]}},
}}


def _custom():
    return custom_features(ProjectConfig.model_validate(CUSTOM))


def _schema(view) -> dict[str, object]:
    return {f.name: f.dtype for f in view.features}


def test_every_feast_field_has_the_type_of_its_single_source():
    custom = _custom()
    r = definitions.repo(custom, set(definitions.VIEWS))
    for name, view in r.views.items():
        want = {n: definitions.FEAST_TYPES[t] for n, t in transforms.feature_types(name, custom).items()}
        assert _schema(view) == want, name
    fit = next(o for o in r.objects if o.name == "lead_rep_fit")
    assert {f.name: f.dtype for f in fit.features} == {n: Bool for n in definitions.FIT_FEATURES}


def test_types_follow_meaning():
    """Spot checks that the source says what the names mean (and is not all Float64 again)."""
    fields = {n: t for v in definitions.repo(_custom()).views.values() for n, t in _schema(v).items()}
    builtin = {n for v in definitions.BUILTIN.values() for n, _ in v}
    counts = [n for n in builtin if n.endswith(("_7d", "_30d", "_90d", "_180d", "_26w", "_52w", "_total"))
              and not n.startswith(("pricing_dwell", "webinar_completion", "communication_quality", "nps_avg",
                                    "win_rate"))]
    assert counts and all(fields[n] == Int64 for n in counts), {n: fields[n] for n in counts}
    for n in ("tier_rank", "seniority_rank", "days_to_renewal", "weeks_since_active", "logins", "company_size",
              "below_baseline_streak", "open_leads", "capacity"):
        assert fields[n] == Int64, n
    for n in ("early_warning", "sla_breached", "sso"):
        assert fields[n] == Bool, n
    for n in ("annual_value", "load_ratio", "win_rate_90d", "usage_trend_4v12", "events_per_week", "seats",
              "orders", "orders_sum_26w", "orders_mean_28d"):
        assert fields[n] == Float64, n
    for n in ("lead_industry", "rep_region", "plan"):
        assert fields[n] == String, n
    assert fields["coupon_count_30d"] == Int64


def test_transforms_return_the_declared_types_with_gaps_kept():
    usage = pd.DataFrame({"account_id": ["a1"] * 2,
                          "week_start": pd.to_datetime(["2024-01-01", "2024-01-08"], utc=True),
                          "logins": [3, 4], "active_users": [1, 1], "key_feature_uses": [5, 0],
                          "api_calls": [10, 0], "config_changes": [0, 1]})
    out = transforms.behaviour_features(usage)
    for name, kind in transforms.FEATURE_TYPES["behaviour"].items():
        assert str(out[name].dtype) == transforms.PANDAS_TYPES[kind], name
    assert out["early_warning"].isna().all()  # no baseline yet: unknown, not False
    assert out["logins"].tolist() == [3, 4]


def test_a_count_that_is_not_whole_raises():
    with pytest.raises((TypeError, ValueError)):
        transforms._typed_frame(pd.DataFrame({"logins": [1.5]}), "behaviour")


def test_feature_files_carry_the_feast_types(store_settings):
    r = definitions.repo(None, {p.stem for p in store_settings.feature_data_dir.glob("*.parquet")})
    assert r.views
    for name, view in r.views.items():
        schema = pq.read_schema(store_settings.feature_data_dir / f"{name}.parquet")
        for field, dtype in _schema(view).items():
            got = schema.field(field).type
            assert got == ARROW[dtype] or (dtype == String and got == pa.large_string()), (name, field, got)


def test_online_store_keeps_counts_whole_and_flags_true_false(store_settings, store, raw):
    from features.store import online_features

    accounts = raw["usage_weekly"]["account_id"].drop_duplicates().head(20).tolist()
    online = online_features(store_settings, "chs", [{"account_id": a} for a in accounts], store)
    assert {type(v) for v in online["early_warning"].dropna()} <= {bool}
    logins = online["logins"].dropna()
    assert len(logins) and (logins == logins.round()).all()


def test_materialize_list_is_the_views_built_from_feature_files():
    r = definitions.repo(None, set(definitions.VIEWS) | set(definitions.SCORE_VIEWS))
    assert set(r.materialized) == set(definitions.VIEWS) - {"account_profile"}  # no schema without custom columns
    assert not set(r.materialized) & set(definitions.SCORE_VIEWS)  # written online by the scoring job
    assert "lead_rep_fit" not in r.materialized  # computed at request time
    assert set(definitions.PUSHED) <= set(r.materialized)  # a push carries new events only
    assert set(r.materialized) <= set(r.views)


def test_adding_a_view_adds_it_to_materialize(monkeypatch):
    monkeypatch.setitem(definitions.VIEWS, "pipeline", ("account", timedelta(days=28)))
    monkeypatch.setitem(definitions.BUILTIN, "pipeline", [("open_deals", Int64)])
    r = definitions.repo()
    assert "pipeline" in r.materialized
    assert "pipeline" not in definitions.repo(None, set(definitions.VIEWS) - {"pipeline"}).materialized


def test_materialize_loads_exactly_the_derived_views(store_settings, monkeypatch):
    from features import store as feature_store
    from features.store import materialize, project_repo

    loaded = []

    class Recorder:
        def materialize(self, start_date, end_date, feature_views):
            loaded.extend(feature_views)

    monkeypatch.setattr(feature_store, "open_store", lambda settings: Recorder())
    counts = materialize(store_settings)
    assert loaded == project_repo(store_settings).materialized
    assert set(counts) == set(loaded)
