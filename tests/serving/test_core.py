"""The scoring core called directly: real Feast online store, real registered models."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from serving.auth import Caller
from serving.core import bucket

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.mlflow]

ADMIN, CSM, SALES = Caller("t-admin", "admin"), Caller("t-csm", "csm"), Caller("t-sales", "sales")


def _ids(settings, table, col, n, tail=False):
    ids = pd.read_parquet(settings.raw_dir / f"{table}.parquet", columns=[col])[col]
    return (ids.tail(n) if tail else ids.head(n)).tolist()


def test_health_scores_known_accounts_and_reports_unknown_ones(core, served_settings):
    accounts = _ids(served_settings, "accounts", "account_id", 3)
    out = core.health(CSM, accounts + ["A9999999"])
    known, unknown = out["results"][:3], out["results"][3]
    assert unknown == {"account_id": "A9999999", "error": "unknown account_id: no features online"}
    for r, acc in zip(known, accounts):
        assert r["account_id"] == acc and 0 <= r["score"] <= 100
        assert r["level"] in ("green", "yellow", "orange", "red")
        assert set(r["layers"]) == {"contract", "behaviour", "relationship"}
        assert 0 < r["churn_probability"] < 1 and r["model"]["variant"] == "champion"
        assert "notes" not in r  # csm does not see relationship notes
    # the same model called on the same online features gives the same score
    frame = core.online("chs", "account_id", accounts)
    direct = core.models["chs"]["champion"].model.health(frame)
    assert [round(d["score"], 2) for d in direct] == [r["score"] for r in known]


def test_roles_narrow_the_view(core, served_settings):
    acc = _ids(served_settings, "accounts", "account_id", 1)
    sales = core.health(SALES, acc)["results"][0]
    csm = core.health(CSM, acc)["results"][0]
    admin = core.health(ADMIN, acc)["results"][0]
    assert {"score", "level", "churn_probability"} <= set(sales)
    assert not {"drivers", "layers", "features", "notes"} & set(sales)
    assert {"drivers", "layers", "features"} <= set(csm) and "notes" not in csm
    assert "notes" in admin and isinstance(admin["notes"], list)
    assert sales["score"] == csm["score"] == admin["score"]


def test_change_since_a_date_is_attributed_by_layer(core, served_settings):
    acc = _ids(served_settings, "accounts", "account_id", 2)
    since = datetime(2025, 9, 1, tzinfo=timezone.utc)
    for r in core.health(CSM, acc, since=since)["results"]:
        ch = r["change"]
        assert ch["points"] == pytest.approx(sum(v["points"] for v in ch["layers"].values()), abs=0.03)
        assert ch["points"] == pytest.approx(r["score"] - ch["previous_score"], abs=0.03)
        assert ch["text"].startswith("CHS ")
    sales = core.health(SALES, acc, since=since)["results"][0]["change"]
    assert set(sales) == {"since", "previous_score", "points"}


def test_rows_passed_directly_score_like_online_features(core, served_settings):
    acc = _ids(served_settings, "accounts", "account_id", 1)
    frame = core.online("chs", "account_id", acc)
    row = {k: (None if pd.isna(v) else v) for k, v in frame.drop(columns=["_known"]).iloc[0].items()}
    by_id = core.health(CSM, acc)["results"][0]
    by_row = core.health(CSM, rows=[row])["results"][0]
    assert by_row["score"] == by_id["score"] and by_row["model"]["variant"] in ("champion", "challenger")
    with pytest.raises(ValueError, match="unknown feature"):
        core.health(CSM, rows=[{"account_id": "x", "not_a_feature": 1.0}])


def test_intent_and_its_drivers(core, served_settings):
    leads = _ids(served_settings, "leads", "lead_id", 5, tail=True)
    out = core.intent(CSM, leads)["results"]
    assert all(0 < r["probability"] < 1 and r["band"] in "ABCD" for r in out)
    assert all(isinstance(r["drivers"], list) for r in out)


def test_match_ranks_reps_and_proposes_within_capacity(core, served_settings):
    leads = _ids(served_settings, "leads", "lead_id", 20, tail=True)
    out = core.match(SALES, leads, assign=True, top=3)
    for r in out["results"]:
        probs = [x["expected_conversion"] for x in r["ranked_reps"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True)
    reps = core.online_reps(core.active_reps).set_index("rep_id")
    slots = (reps["capacity"].fillna(20) - reps["open_leads"].fillna(0)).clip(lower=0)
    taken = pd.Series([p["rep_id"] for p in out["assignment"]["proposals"] if p["rep_id"]]).value_counts()
    assert (taken <= slots.reindex(taken.index)).all()
    assert out["assignment"]["status"] == "proposal"


def test_match_reasons_are_the_top_contributions_of_each_shown_pair(core, served_settings):
    """The reasons come from TreeSHAP on the shown pairs only; the oracle explains every pair."""
    from features.transforms import lead_rep_fit

    leads = _ids(served_settings, "leads", "lead_id", 6, tail=True)
    out = core.match(SALES, leads, top=3)
    model = core.models["lead_match"]["champion"].model
    lead_f = core.online(core.specs["intent"].feature_service, "lead_id", leads).drop(columns="_known")
    reps = core.online_reps(core.active_reps)
    reps = reps[reps["_known"]].drop(columns="_known").reset_index(drop=True)
    pairs = lead_f.merge(reps, how="cross")
    pairs = pd.concat([pairs, lead_rep_fit(pairs)], axis=1)
    contrib = model.contributions(pairs).drop(columns="bias")
    rep_pos = {r: j for j, r in enumerate(reps["rep_id"])}
    for k, result in enumerate(out["results"]):
        assert [x["rep_id"] for x in result["ranked_reps"]]  # three reps shown
        for shown in result["ranked_reps"]:
            row = contrib.iloc[k * len(reps) + rep_pos[shown["rep_id"]]]
            assert shown["reasons"] == [f for f, v in row.sort_values(ascending=False).head(3).items() if v > 0]


def test_every_prediction_is_logged_with_model_version_and_variant(core, served_settings):
    acc = _ids(served_settings, "accounts", "account_id", 4)
    rid = core.health(CSM, acc, request_id="req-log-test")["request_id"]
    logged = core.log.predictions(model="chs")
    mine = logged[logged["request_id"] == rid]
    assert sorted(mine["entity_id"]) == sorted(acc)
    assert set(mine["version"]) == {core.models["chs"]["champion"].version}
    assert mine["features"].map(lambda f: "api_calls" in f).all()
    assert mine["outputs"].map(lambda o: 0 <= o["score"] <= 100).all()


def test_ab_split_is_deterministic_and_near_the_share(core):
    ids = [f"A{i:07d}" for i in range(4000)]
    share = np.mean([bucket("salt-1", "chs", i) < 0.2 for i in ids])
    assert 0.17 < share < 0.23
    assert [bucket("salt-1", "chs", i) for i in ids[:50]] == [bucket("salt-1", "chs", i) for i in ids[:50]]
    assert [bucket("salt-2", "chs", i) for i in ids[:50]] != [bucket("salt-1", "chs", i) for i in ids[:50]]


def test_pushed_event_changes_the_next_score(core, served_settings):
    lead = _ids(served_settings, "leads", "lead_id", 1, tail=True)[0]
    before = core.intent(CSM, [lead])["results"][0]
    events = pd.read_parquet(served_settings.raw_dir / "lead_events.parquet")
    at = events.loc[events["lead_id"] == lead, "occurred_at"].max() + pd.Timedelta(minutes=1)
    rows = [{"event_id": f"E-live-{i}", "lead_id": lead, "occurred_at": (at + pd.Timedelta(seconds=i)).isoformat(),
             "event_type": "page_view", "page": "pricing", "dwell_seconds": 120.0} for i in range(6)]
    out = core.events(CSM, "lead_events", rows)
    assert out["entities_updated"] == [lead]
    after = core.intent(CSM, [lead])["results"][0]
    assert after["features"]["pricing_page_views_7d"] >= 6
    assert after["features"]["events_total"] == before["features"]["events_total"] + 6
    assert after["probability"] >= before["probability"]  # more buying signals, same moment: never lower


@pytest.fixture
def chs_challenger(served_settings):
    """A chs challenger in the shared served registry for one test; the aliases are put back afterwards,
    so no other test (whatever the order) sees it."""
    from training import pipeline, tracking

    client = tracking.client(served_settings)
    before = dict(client.get_registered_model("chs").aliases)
    try:
        pipeline.run(served_settings, "chs", seed=4, raw_dir=served_settings.raw_dir, log=lambda _: None)
        yield
    finally:
        for alias in client.get_registered_model("chs").aliases:
            if alias not in before:
                client.delete_registered_model_alias("chs", alias)
        for alias, version in before.items():
            client.set_registered_model_alias("chs", alias, version)


def test_challenger_share_routes_deterministically_and_logs_the_variant(served_settings, chs_challenger):
    from serving.core import ScoringCore

    settings = served_settings.model_copy(update={"challenger_share": {"chs": 0.5}, "experiment_salt": "t-1"})
    ab = ScoringCore.load(settings)
    assert set(ab.models["chs"]) == {"champion", "challenger"}
    accounts = _ids(served_settings, "accounts", "account_id", 60)
    first = ab.health(CSM, accounts)["results"]
    again = ab.health(CSM, accounts)["results"]
    variants = [r["model"]["variant"] for r in first]
    assert variants == [r["model"]["variant"] for r in again]  # the same account, the same arm
    assert 15 < variants.count("challenger") < 45
    for r in first:
        expected = "challenger" if bucket("t-1", "chs", r["account_id"]) < 0.5 else "champion"
        assert r["model"]["variant"] == expected
        assert r["model"]["version"] == ab.models["chs"][expected].version
    logged = ab.log.predictions(model="chs", variant="challenger")
    assert set(logged["version"]) >= {ab.models["chs"]["challenger"].version}
