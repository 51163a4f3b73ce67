"""The team profile by configuration alone: Redis online store, SQL registry on PostgreSQL."""

from __future__ import annotations

import pandas as pd
import pytest

from features.store import apply, build_feature_files, materialize, online_features, open_store
from salesml.settings import FEATURE_REPO, Settings

pytestmark = pytest.mark.integration


def test_team_profile_serves_online_features_from_redis(export_dir, raw, tmp_path, postgres_database,
                                                       redis_prefix):
    import redis
    import sqlalchemy

    settings = Settings(home=tmp_path, feast_yaml=FEATURE_REPO / "feature_store.team.yaml",
                        feast_project=redis_prefix, feast_registry_url=postgres_database)
    build_feature_files(settings, export_dir, progress=lambda _: None)
    apply(settings, progress=lambda _: None)
    materialize(settings)
    store = open_store(settings)
    assert type(store._get_provider().online_store).__name__ == "RedisOnlineStore"

    usage = raw["usage_weekly"]
    end = usage["week_start"].max()
    last = usage[usage["week_start"] == end].set_index("account_id")
    accounts = last.index[:3].tolist()
    online = online_features(settings, "chs", [{"account_id": a} for a in accounts], store)
    assert online.set_index("account_id")["api_calls"].to_dict() == {
        a: float(last.loc[a, "api_calls"]) for a in accounts}

    client = redis.Redis(host="127.0.0.1", port=6379)
    assert any(redis_prefix.encode() in k for k in client.scan_iter(count=1000))
    engine = sqlalchemy.create_engine(postgres_database)
    with engine.connect() as con:
        views = pd.read_sql("SELECT feature_view_name FROM feature_views", con)
    engine.dispose()
    assert {"behaviour", "contract", "relationship"} <= set(views["feature_view_name"])
    store.teardown()
