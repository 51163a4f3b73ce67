"""Alias moves go through one place and leave a history in the registry; descriptions are built from
the values training computed. A bare SQLite store and model versions without a model (no training)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from salesml.settings import Settings
from training import registry, tracking
from training.data import Split

pytestmark = pytest.mark.mlflow


@pytest.fixture
def settings(tmp_path):
    s = Settings(home=tmp_path)
    s.ensure_dirs()
    return s


def _versions(settings, name: str, n: int) -> list[str]:
    client = tracking.client(settings)
    exp = tracking.experiment_id(settings, f"salesml-{name}")
    client.create_registered_model(name)
    out = []
    for _ in range(n):
        run = client.create_run(exp)
        mv = client.create_model_version(name, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
        out.append(str(mv.version))
    return out


def test_alias_history_keeps_every_spell_with_its_end(settings):
    v1, v2, v3 = _versions(settings, "chs", 3)
    assert registry.alias_new_version(settings, "chs", v1, "run-1")[0] == "champion"
    alias, why = registry.alias_new_version(settings, "chs", v2, "run-2")
    assert alias == "challenger" and f"champion version {v1}" in why
    registry.set_alias(settings, "chs", "champion", v2, "promoted: ROC-AUC 0.70 -> 0.75", run_id="promo-1", by="cmd")
    registry.remove_alias(settings, "chs", "challenger", "promoted to champion", run_id="promo-1")
    registry.set_alias(settings, "chs", "champion", v2, "again: no change")  # same version: not a move
    registry.alias_new_version(settings, "chs", v3, "run-3", alias="challenger")

    hist = registry.alias_history(settings, "chs")
    assert list(hist.columns) == registry.HISTORY_COLUMNS
    assert len(hist) == 4
    assert hist["from"].is_monotonic_decreasing  # newest first
    by = {(r["alias"], r["version"]): r for r in hist.to_dict("records")}
    old = by[("champion", v1)]
    assert old["to"] is not None and old["to"] >= old["from"]  # the earlier champion's spell ended...
    assert old["end_reason"].startswith(f"moved to version {v2}: promoted")  # ...and says why
    assert old["run_id"] == "run-1" and old["reason"].startswith("champion: the first")
    new = by[("champion", v2)]
    assert new["to"] is None and new["run_id"] == "promo-1" and new["by"] == "cmd"
    gone = by[("challenger", v2)]
    assert gone["to"] is not None and "promoted to champion" in gone["end_reason"] and "promo-1" in gone["end_reason"]
    assert by[("challenger", v3)]["to"] is None
    aliases = tracking.client(settings).get_registered_model("chs").aliases
    assert {k: str(v) for k, v in aliases.items()} == {"champion": v2, "challenger": v3}


def test_alias_set_before_the_history_was_kept_is_closed_with_an_unknown_start(settings):
    v1, v2 = _versions(settings, "intent", 2)
    tracking.client(settings).set_registered_model_alias("intent", "champion", v1)  # as older code did
    registry.set_alias(settings, "intent", "champion", v2, "manual rollback test")
    hist = registry.alias_history(settings, "intent")
    old = hist[hist["version"] == v1].iloc[0]
    assert pd.isna(old["from"]) and old["to"] is not None and "before the alias history" in old["reason"]
    assert hist.iloc[0]["version"] == v2  # the dated spell sorts first


def test_alias_history_of_an_unknown_model_is_a_clear_error(settings):
    with pytest.raises(ValueError, match="no registered model 'nope'"):
        registry.alias_history(settings, "nope")


def _split() -> Split:
    t = pd.date_range("2024-01-01", periods=6, freq="7D", tz="UTC")
    part = lambda i: pd.DataFrame({"event_timestamp": t[i:i + 2]})  # noqa: E731
    return Split(part(0), part(2), part(4), t[2], t[4], "time", "")


SUMMARY = {"run_id": "r1", "model": "chs", "version": "3", "alias": "challenger", "dataset_digest": "abc123",
           "split": "time", "chosen": "xgboost", "registered": True,
           "selection": "xgboost: validation ROC-AUC 0.8000", "test_roc_auc": 0.81, "test_ece": 0.02,
           "baseline_logistic_test_roc_auc": 0.77, "oracle_test_roc_auc": 0.9}


def test_training_note_says_baseline_truth_split_window_and_why():
    note = registry.training_note(SUMMARY, _split().windows(), "2024-01-01..2024-02-05", "",
                                  "challenger: champion version 2 stays until `salesml promote chs` ...")
    assert "test ROC-AUC 0.8100" in note and "baseline logistic 0.7700 (+0.0400)" in note
    assert "truth" in note and "0.9000 (90% of the attainable)" in note
    assert "Split time: train 2024-01-01..2024-01-08, valid 2024-01-15..2024-01-22" in note
    assert "Data window 2024-01-01..2024-02-05" in note and "abc123" in note
    assert "Registered as version 3: challenger: champion version 2 stays" in note


@pytest.mark.parametrize("register, expected", [(True, "a baseline beats"), (False, "not requested")])
def test_training_note_of_an_unregistered_run_says_why(register, expected):
    s = {**SUMMARY, "registered": False, "version": None, "oracle_test_roc_auc": np.nan}
    note = registry.training_note(s, _split().windows(), "w", register=register)
    assert f"Not registered: {expected}" in note.replace("registration was not requested", "not requested")
    assert "truth unknown" in note


def test_long_notes_keep_head_and_latest_lines():
    text = "head\n" + "x" * 10_000 + "\nlatest decision"
    out = registry._bounded(text)
    assert len(out) <= registry._NOTE_LIMIT and out.startswith("head") and out.endswith("latest decision")


@pytest.mark.integration
def test_history_and_experiment_tags_through_a_tracking_server_on_postgresql(tmp_path, postgres_database):
    """The team profile's store: an MLflow server over PostgreSQL, where registered-model tags are
    VARCHAR(5000) but version tags are TEXT, so a long history still fits."""
    from experiments.ui import start_mlflow_ui, stop

    proc, url = start_mlflow_ui(postgres_database, tmp_path / "artifacts")
    try:
        settings = Settings(home=tmp_path, mlflow_tracking_uri=url)
        exp = tracking.client(settings).get_experiment(tracking.experiment_id(settings, "salesml-chs"))
        assert exp.tags[tracking.EXPERIMENT_KIND_TAG] == tracking.MODEL_TRAINING_KIND
        v1, v2 = _versions(settings, "chs", 2)
        registry.alias_new_version(settings, "chs", v1, "run-1")
        for i in range(12):  # champion back and forth: each version collects a dozen spells
            registry.set_alias(settings, "chs", "champion", v2 if i % 2 == 0 else v1, f"flip {i} " + "x" * 800)
        hist = registry.alias_history(settings, "chs")
        tag = tracking.client(settings).get_model_version("chs", v1).tags[registry.HISTORY_TAG]
    finally:
        stop(proc)
    assert len(tag) > 5000
    assert len(hist) == 13 and hist["to"].isna().sum() == 1
    assert hist.iloc[0]["reason"].startswith("flip 11") and hist.iloc[0]["version"] == v1
