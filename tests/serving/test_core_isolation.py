"""A stored value the booster refuses makes only its own entity unscorable, never its batch (issue 22 item 2).

The contract now refuses such values on every write path; these tests plant one in the online store
directly (as a row stored before the bounds would be) and score a batch around it."""

from __future__ import annotations

import contextlib

import pandas as pd
import pytest

from serving.auth import Caller

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.mlflow]

CSM = Caller("t-isolation", "csm")


@contextlib.contextmanager
def planted(core, service: str, key: str, entity: str, value: float):
    """The entity's first float feature of the model's service set to ``value`` online, then restored."""
    from feast.types import Float64

    svc = core.store.get_feature_service(service)
    proj, feat = next((p, f) for p in svc.feature_view_projections for f in p.features
                      if f.dtype == Float64 and f.name in core.models[
                          "intent" if key == "lead_id" else "chs"]["champion"].model.spec.numeric)
    names = [f"{proj.name}:{f.name}" for f in proj.features]
    before = core.store.get_online_features(features=names, entity_rows=[{key: entity}]).to_df()

    def write(frame: pd.DataFrame, at: pd.Timestamp) -> None:
        core.store.write_to_online_store(proj.name, frame.assign(event_timestamp=at), allow_registry_cache=True)

    poisoned = before.copy()
    poisoned[feat.name] = poisoned[feat.name].astype("float64")
    poisoned.loc[0, feat.name] = value
    now = pd.Timestamp.now(tz="UTC")
    write(poisoned, now)
    try:
        yield feat.name
    finally:
        write(before, now + pd.Timedelta(seconds=1))


def _ids(settings, table: str, col: str) -> list[str]:
    ids = pd.read_parquet(settings.raw_dir / f"{table}.parquet", columns=[col])[col].tolist()
    third = len(ids) // 3  # away from the heads, tails and middles other served tests read
    return ids[third:third + 3]


@pytest.mark.parametrize("value", [1e39, float("inf")])
def test_a_poisoned_lead_gets_its_own_error_in_intent_and_match_batches(core, served_settings, value):
    bad, *good = _ids(served_settings, "leads", "lead_id")
    with planted(core, core.specs["intent"].feature_service, "lead_id", bad, value) as feature:
        assert core.online(core.specs["intent"].feature_service, "lead_id", [bad])[feature].iloc[0] != 0
        intent = core.intent(CSM, [good[0], bad, good[1]])["results"]
        assert [r["lead_id"] for r in intent] == [good[0], bad, good[1]]
        assert set(intent[1]) == {"lead_id", "error"} and feature in intent[1]["error"]
        assert "float32" in intent[1]["error"]
        assert all(0 < r["probability"] < 1 and "error" not in r for r in (intent[0], intent[2]))
        match = core.match(CSM, [bad, *good], assign=True)
        assert set(match["results"][0]) == {"lead_id", "error"} and feature in match["results"][0]["error"]
        assert all(r["ranked_reps"] for r in match["results"][1:])
        assert [p["lead_id"] for p in match["assignment"]["proposals"]] == good  # the poisoned lead is not proposed
    after = core.intent(CSM, [bad])["results"][0]  # restored: scored again
    assert "error" not in after and 0 < after["probability"] < 1


def test_a_poisoned_account_gets_its_own_error_in_a_health_batch(core, served_settings):
    bad, *good = _ids(served_settings, "accounts", "account_id")
    with planted(core, core.specs["chs"].feature_service, "account_id", bad, 3.5e38) as feature:
        out = core.health(CSM, [bad, *good])["results"]
        assert set(out[0]) == {"account_id", "error"} and feature in out[0]["error"]
        assert all(0 <= r["score"] <= 100 and "error" not in r for r in out[1:])
