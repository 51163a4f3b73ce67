"""What a reviewer finds in MLflow after training and promotion: experiments typed as model training,
runs and versions described, every alias move in the history. Trains ``intent`` twice on the shared
small store, into a tracking store of its own (so the aliases here depend on no other test)."""

from __future__ import annotations

import pytest

from features.training_sets import build_training_set
from training import pipeline, registry, tracking

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.mlflow]


@pytest.fixture(scope="module")
def promoted(store_settings, export_dir, store, tmp_path_factory):
    """Version 1 trained (champion), version 2 trained (challenger), then promoted."""
    import mlflow

    home = tmp_path_factory.mktemp("records")
    settings = store_settings.model_copy(update={"mlflow_tracking_uri": f"sqlite:///{home}/mlflow.db"})
    ts = build_training_set(settings, "intent", raw_dir=export_dir, store=store)
    try:
        first = pipeline.run(settings, "intent", seed=3, raw_dir=export_dir, log=lambda _: None, training_set=ts)
        second = pipeline.run(settings, "intent", seed=3, raw_dir=export_dir, log=lambda _: None, training_set=ts)
        # Same seed and data: the same model, so no gain; a gain of -1 is required, i.e. promotion forced.
        decision = registry.promote(settings, "intent", raw_dir=export_dir, min_gain=-1.0)
        yield settings, first, second, decision
    finally:  # the process-wide tracking URI back on the shared store, as other tests expect
        mlflow.set_tracking_uri(store_settings.tracking_uri)
        mlflow.set_registry_uri(store_settings.tracking_uri)


def test_experiments_are_typed_as_model_training(promoted):
    settings, first, *_ = promoted
    client = tracking.client(settings)
    for name in ("salesml-intent", "salesml-promotions"):
        exp = client.get_experiment_by_name(name)
        assert exp.tags[tracking.EXPERIMENT_KIND_TAG] == tracking.MODEL_TRAINING_KIND, name
    assert client.get_run(first["run_id"]).info.experiment_id == client.get_experiment_by_name(
        "salesml-intent").experiment_id


def test_runs_and_versions_carry_descriptions(promoted):
    settings, first, second, decision = promoted
    assert decision.promote and first["alias"] == "champion" and second["alias"] == "challenger"
    client = tracking.client(settings)
    note = client.get_run(first["run_id"]).data.tags["mlflow.note.content"]
    assert f"test ROC-AUC {first['test_roc_auc']:.4f}" in note
    assert f"baseline logistic {first['baseline_logistic_test_roc_auc']:.4f}" in note
    assert "truth" in note and "Split " in note and "Data window " in note
    assert "champion: the first registered intent model" in note
    v1 = client.get_model_version("intent", first["version"]).description
    v2 = client.get_model_version("intent", second["version"]).description
    assert v1.startswith(note) and f"replaced as champion by version {second['version']}" in v1
    assert "challenger: champion version" in v2 and f"promoted version {second['version']} to champion" in v2
    assert "promoted version" in client.get_run(second["run_id"]).data.tags["mlflow.note.content"]


def test_alias_history_shows_the_earlier_champion_ended(promoted):
    settings, first, second, _ = promoted
    hist = registry.alias_history(settings, "intent")
    rows = {(r["alias"], r["version"]): r for r in hist.to_dict("records")}
    old = rows[("champion", str(first["version"]))]
    new = rows[("champion", str(second["version"]))]
    assert old["to"] is not None and old["to"] == new["from"]  # one move: one moment
    assert old["run_id"] == first["run_id"] and "promoted" in old["end_reason"]
    assert new["to"] is None and new["reason"].startswith("promoted")
    promotion = tracking.client(settings).get_run(new["run_id"])
    assert promotion.info.run_name == "promote-intent"
    challenger = rows[("challenger", str(second["version"]))]
    assert challenger["to"] is not None and challenger["run_id"] == second["run_id"]
    assert set(hist.loc[hist["to"].isna(), "alias"]) == {"champion"}



def test_models_history_command_prints_the_spells(promoted, monkeypatch):
    """`salesml models history intent` after the promotion: both champions, the old one ended."""
    from typer.testing import CliRunner

    from salesml.cli import app

    settings, first, second, _ = promoted
    monkeypatch.setenv("SALESML_MLFLOW_TRACKING_URI", settings.tracking_uri)
    monkeypatch.setenv("COLUMNS", "250")
    result = CliRunner().invoke(app, ["models", "history", "intent"])
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.output.splitlines() if ln.startswith("| champion")]
    assert len(lines) == 2
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    assert cells[0][1] == str(second["version"]) and cells[0][3] == "now"  # newest first, current
    assert cells[1][1] == str(first["version"]) and cells[1][3] != "now"
    assert "promoted" in lines[1]
    unknown = CliRunner().invoke(app, ["models", "history", "nope"])
    assert unknown.exit_code != 0 and "nope" in unknown.output
