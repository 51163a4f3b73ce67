"""The scheduled scoring job for real: Feast offline and online stores, registered models, MLflow.

Runs on a copy of the served environment (tests/serving/conftest.py): score files, the
``salesml-scoring`` experiment, the ``chs_scores`` view and its online rows stay in the copy.
"""

from __future__ import annotations

import shutil
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from salesml.settings import Settings
from serving import scores
from serving.scoring_book import end_of_day
from serving.scoring_job import RANK, TRANSITIONS, score_book

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.mlflow]


@pytest.fixture(scope="module")
def home(served_settings, tmp_path_factory) -> Settings:
    # mlartifacts stay behind: the registry records the served home's artifact paths and reads them there
    dst = tmp_path_factory.mktemp("scoring") / "home"
    shutil.copytree(served_settings.root, dst,
                    ignore=shutil.ignore_patterns("mlartifacts", "predictions.db*", "scores", "actions"))
    return Settings(home=dst)


@pytest.fixture(scope="module")
def chs_runs(home, core) -> dict:
    """Three weekly-spaced runs, four weeks apart, ending at the export's end, scored in date order."""
    from serving.scoring_book import resolve_as_of

    spec = home.spec("chs")
    end, _ = resolve_as_of(home, spec, core.store.get_feature_service(spec.feature_service), None)
    stages = []
    out = {}
    for d in (end - timedelta(days=56), end - timedelta(days=28), end):
        out[d] = score_book(home, "chs", d, progress=lambda *a: stages.append(a), core=core)
    out["stages"] = stages
    return out


def _dates(runs: dict) -> list:
    return sorted(k for k in runs if k != "stages")


def test_runs_store_history_with_their_mlflow_records(home, chs_runs):
    from training import tracking

    dates = _dates(chs_runs)
    assert scores.runs(home, "chs") == dates
    client = tracking.client(home)
    first = chs_runs[dates[0]]
    assert first.transitions.empty and "no previous run" in first.summary["note"]
    for d in dates:
        r = chs_runs[d]
        stored = scores.read(home, "chs", d)
        assert r.path == scores.path_for(home, "chs", d) and len(stored) == len(r.frame) > 100
        assert stored["account_id"].is_unique and (stored["as_of"] == d).all()
        assert (stored["run_id"] == r.run_id).all() and stored["scored_at"].notna().all()
        assert set(stored["level"]) <= set(RANK) and stored["score"].between(0, 100).all()
        run = client.get_run(r.run_id)
        assert run.info.status == "FINISHED"
        assert client.get_experiment(run.info.experiment_id).name == "salesml-scoring"
        assert run.data.params["as_of"] == f"{d}" and run.data.params["model_version"] == r.summary["model_version"]
        assert run.data.metrics["accounts_scored"] == len(stored)
        assert run.data.metrics["left_out"] == len(r.left_out) == sum(r.summary["left_out"].values())
        assert sum(run.data.metrics[f"level_{lv}"] for lv in RANK) == len(stored)
        assert "plots/levels_by_run.png" in {a.path for a in client.list_artifacts(r.run_id, "plots")}
    last = client.get_run(chs_runs[dates[-1]].run_id)
    moves = {k: v for k, v in last.data.metrics.items() if k.startswith("moves_")}
    assert sum(moves.values()) == sum(chs_runs[dates[-1]].summary["moves"].values()) > 0
    assert ("scoring", len(first.frame), len(first.frame)) in chs_runs["stages"]


def test_every_account_of_the_book_is_scored_or_left_out_with_a_reason(home, chs_runs, served_settings):
    churn = pd.read_parquet(served_settings.raw_dir / "churn_events.parquet")
    accounts = pd.read_parquet(served_settings.raw_dir / "accounts.parquet")
    for d in _dates(chs_runs):
        r = chs_runs[d]
        scored, left = set(r.frame["account_id"]), set(r.left_out["account_id"])
        assert not scored & left and len(scored) + len(left) == r.summary["book"]
        assert scored | left == set(accounts.loc[accounts["created_at"] <= end_of_day(d), "account_id"])
        gone = set(churn.loc[(churn["kind"] == "churn") & (churn["occurred_at"] <= end_of_day(d)), "account_id"])
        assert set(r.left_out.loc[r.left_out["reason"] == "churned", "account_id"]) == gone & (scored | left)
        assert not gone & scored


def test_scores_are_what_the_served_model_gives_for_the_same_features(home, chs_runs, core):
    d = _dates(chs_runs)[-1]
    stored = scores.read(home, "chs", d).set_index("account_id")
    ids = stored.index[:8].tolist()
    spec = home.spec("chs")
    entity = pd.DataFrame({"account_id": ids, "event_timestamp": end_of_day(d)})
    rows = core.store.get_historical_features(entity_df=entity,
                                              features=core.store.get_feature_service(spec.feature_service)).to_df()
    for acc, h in zip(ids, core.models["chs"]["champion"].model.health(rows)):
        assert stored.loc[acc, "score"] == h["score"] and stored.loc[acc, "level"] == h["level"]
        assert stored.loc[acc, "churn_probability"] == h["churn_probability"]
        assert stored.loc[acc, "layer_behaviour"] == h["layers"]["behaviour"]
        assert stored.loc[acc, "driver_1"] == (h["drivers"][0]["feature"] if h["drivers"] else None)


def _on(flag) -> bool:
    return not pd.isna(flag) and bool(flag)


def test_transitions_are_exactly_the_accounts_that_worsened_or_got_an_early_warning(home, chs_runs):
    dates = _dates(chs_runs)
    for prev_d, d in zip(dates, dates[1:]):
        old = scores.read(home, "chs", prev_d).set_index("account_id")
        new = scores.read(home, "chs", d).set_index("account_id")
        both = new.index.intersection(old.index)
        worse = [a for a in both if RANK[new.loc[a, "level"]] > RANK[old.loc[a, "level"]]]
        warned = [a for a in both if _on(new.loc[a, "early_warning"]) and not _on(old.loc[a, "early_warning"])]
        t = chs_runs[d].transitions
        assert list(t.columns) == TRANSITIONS
        assert set(t["account_id"]) == set(worse) | set(warned) and t["account_id"].is_unique
        assert worse, "the test needs an account whose level worsened"
        t = t.set_index("account_id")
        for a in t.index:
            assert t.loc[a, "old_level"] == old.loc[a, "level"] and t.loc[a, "new_level"] == new.loc[a, "level"]
            assert t.loc[a, "previous_score"] == old.loc[a, "score"] and t.loc[a, "score"] == new.loc[a, "score"]
            assert t.loc[a, "change_text"] == new.loc[a, "change_text"] and t.loc[a, "as_of"] == d
        assert chs_runs[d].summary["worsened"] == len(worse)


def test_attribution_adds_up_to_the_score_change(home, chs_runs, core):
    dates = _dates(chs_runs)
    f = scores.read(home, "chs", dates[-1])
    assert (f["previous_as_of"] == dates[-2]).all() and not f["restated"].any()  # same model, same data
    layers = f[["change_contract", "change_behaviour", "change_relationship"]].sum(axis=1)
    np.testing.assert_allclose(f["change_points"], layers, atol=0.03)
    np.testing.assert_allclose(f["change_points"], f["score"] - f["previous_score"], atol=0.011)
    assert (f["change_points"].abs() >= 0.05).sum() > 10
    assert f["change_text"].str.startswith("CHS ").all()
    # row by row, the per-account attribution of the model gives the same text
    model = core.models["chs"]["champion"].model
    service = core.store.get_feature_service(home.spec("chs").feature_service)
    ids = f.loc[f["change_points"].abs() >= 0.05, "account_id"].head(5).tolist()
    at = {d: core.store.get_historical_features(entity_df=pd.DataFrame({"account_id": ids,
                                                                         "event_timestamp": end_of_day(d)}),
                                                features=service).to_df() for d in dates[-2:]}
    texts = f.set_index("account_id")["change_text"]
    for i, acc in enumerate(ids):
        assert model.attribute_change(at[dates[-2]].iloc[i], at[dates[-1]].iloc[i])["text"] == texts[acc]


def test_rerunning_a_date_replaces_it_without_duplicates_or_touching_the_latest(home, chs_runs, core):
    dates = _dates(chs_runs)
    middle = dates[1]
    old = scores.read(home, "chs", middle)
    online_before = pd.read_parquet(scores.latest_path(home))
    again = score_book(home, "chs", middle, core=core)
    assert scores.runs(home, "chs") == dates
    new = scores.read(home, "chs", middle)
    assert len(new) == len(old) and new["account_id"].is_unique and (new["run_id"] == again.run_id).all()
    assert (new["scored_at"] > old["scored_at"]).all()
    same = ["account_id", "score", "level", "change_points", "change_text", "previous_score"]
    pd.testing.assert_frame_equal(new[same], old[same])
    assert again.summary["published_online"] == 0  # an older date does not replace the latest scores
    pd.testing.assert_frame_equal(pd.read_parquet(scores.latest_path(home)), online_before)


def test_latest_scores_are_served_by_the_chs_scores_view(home, chs_runs):
    from features.store import open_store, present_views

    d = _dates(chs_runs)[-1]
    run = chs_runs[d]
    assert scores.latest_path(home) == home.scores_dir / "chs" / "latest.parquet"
    assert "chs_scores" in present_views(home)
    store = open_store(home)
    scored = run.frame["account_id"].head(5).tolist()
    churned = run.left_out.loc[run.left_out["reason"] == "churned", "account_id"].head(2).tolist()
    names = ["score", "level", "churn_probability", "layer_contract", "early_warning", "as_of", "status"]
    online = store.get_online_features(features=[f"chs_scores:{n}" for n in names],
                                       entity_rows=[{"account_id": a} for a in scored + churned]).to_df()
    online = online.set_index("account_id")
    expected = run.frame.set_index("account_id")
    for a in scored:
        assert online.loc[a, "score"] == expected.loc[a, "score"] and online.loc[a, "level"] == expected.loc[a, "level"]
        assert online.loc[a, "layer_contract"] == expected.loc[a, "layer_contract"]
        assert online.loc[a, "as_of"] == f"{d}" and online.loc[a, "status"] == "scored"
    assert churned, "the simulated book has churned accounts"
    for a in churned:  # a churned account does not keep serving its last score
        assert online.loc[a, "status"] == "churned" and pd.isna(online.loc[a, "score"])


def test_history_of_one_account_has_its_runs_changes_and_events(home, chs_runs):
    dates = _dates(chs_runs)
    last = scores.read(home, "chs", dates[-1])
    acc = last.loc[last["change_points"].abs() >= 0.05, "account_id"].iloc[0]
    h = scores.history(home, acc)
    assert h.timeline["as_of"].tolist() == dates
    assert h.timeline["change_text"].iloc[-1] == last.set_index("account_id").loc[acc, "change_text"]
    assert pd.isna(h.timeline["change_points"].iloc[0])  # the first run has nothing to compare with
    assert {"contracts", "interactions", "churn_events", "live usage"} <= set(h.sources)
    inside = h.events.dropna(subset=["as_of"])
    for _, e in inside.iterrows():
        i = dates.index(e["as_of"])
        assert e["at"] <= end_of_day(dates[i]) and (i == 0 or e["at"] > end_of_day(dates[i - 1]))
    assert scores.plot_timeline(h).axes


def test_intent_scores_every_open_lead(home, core, served_settings):
    from serving.core import band

    r = score_book(home, "intent", core=core)
    f = r.frame
    assert len(f) + len(r.left_out) == r.summary["book"] and f["lead_id"].is_unique
    assert f["probability"].between(0, 1).all() and f["driver_1"].notna().any()
    assert f["band"].tolist() == [band(p) for p in f["probability"]]
    assert set(r.left_out["reason"]) <= {"converted", "lost", "no features at as_of"}
    won = pd.read_parquet(served_settings.raw_dir / "lead_assignments.parquet")
    won = won[won["converted"] & (won["converted_at"] <= end_of_day(r.as_of))]
    assert set(won["lead_id"]) <= set(r.left_out.loc[r.left_out["reason"] == "converted", "lead_id"])
    assert scores.runs(home, "intent") == [r.as_of] and r.summary["published_online"] == 0


def test_progress_goes_to_a_callable_or_a_rich_progress():
    from rich.progress import Progress

    from serving.scoring_job import _Progress

    seen = []
    _Progress(lambda *a: seen.append(a))("scoring", 5, 10)
    assert seen == [("scoring", 5, 10)]
    with Progress(disable=True) as bar:
        step = _Progress(bar)
        step("reading the book", 0, 1)
        step("scoring", 40, 100)
        (task,) = bar.tasks
        assert (task.description, task.completed, task.total) == ("scoring", 40, 100)
    _Progress(None)("scoring", 1, 2)  # no progress wanted: nothing happens
