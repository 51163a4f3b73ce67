"""The A/B sandbox end to end on simulated data: Feast training sets, MLflow parent/child runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from experiments.spec import ExperimentSpec, SpecError, load_spec

SPECS = Path(__file__).resolve().parents[2] / "experiments" / "specs"


def test_shipped_specs_are_valid():
    names = {load_spec(p).name for p in SPECS.glob("*.yaml")}
    assert {"chs-layers", "intent-web-signals", "lead-match-vs-round-robin"} <= names


@pytest.mark.parametrize("change, field", [
    ({"model": "churnz"}, "model"),
    ({"variants": [{"name": "a"}]}, "variants"),
    ({"variants": [{"name": "a"}, {"name": "a"}]}, "variants"),
    ({"variants": [{"name": "a", "modle_class": "xgboost"}, {"name": "b"}]}, "variants.0.modle_class"),
    ({"bootstrap": {"resamples": 3}}, "bootstrap.resamples"),
])
def test_bad_spec_names_the_field(tmp_path, change, field):
    spec = {"name": "x", "model": "chs", "variants": [{"name": "a"}, {"name": "b"}], **change}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(SpecError, match=field.replace(".", r"\.")):
        load_spec(path)


@pytest.fixture(scope="module")
def sandbox_settings(tmp_path_factory):
    """An export large enough for the relationship layer's value to show (600 accounts)."""
    from features.store import apply, build_feature_files
    from salesml.settings import Settings
    from salesml.simulator import generate

    settings = Settings(home=tmp_path_factory.mktemp("sandbox"))
    settings.ensure_dirs()
    # truth_samples=0: the sandbox compares variants, never the simulator's churn truth (9.4 s -> 0.1 s)
    generate(settings.raw_dir, accounts=600, leads=300, reps=12, weeks=104, seed=7, truth_samples=0)
    build_feature_files(settings, settings.raw_dir, progress=lambda _: None)
    apply(settings, progress=lambda _: None)
    return settings


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.mlflow
def test_chs_layers_experiment_is_recorded_for_reviewers(sandbox_settings):
    from mlflow import MlflowClient

    from experiments.sandbox import EXPERIMENT, run_experiment

    spec = load_spec(SPECS / "chs_layers.yaml").model_copy(update={"bootstrap": {"resamples": 300, "seed": 0,
                                                                                 "alpha": 0.05}})
    spec = ExperimentSpec.model_validate(spec.model_dump())
    result = run_experiment(sandbox_settings, spec, log=lambda _: None)

    # three layers beat behaviour alone, with a CI that excludes zero
    d = result["decisions"]["behaviour-only"]
    assert d["winner"] == "all-layers" and d["ci_high"] < 0 and d["p_adjusted"] < 0.05

    client = MlflowClient()
    exp = client.get_experiment_by_name(EXPERIMENT)
    parent = client.get_run(result["run_id"])
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(r.info.run_name for r in children) == ["all-layers", "behaviour-only", "no-relationship"]
    for child in children:
        wanted = {"test_roc_auc", "test_roc_auc_ci_low", "test_brier", "test_warning_precision"}
        assert wanted <= set(child.data.metrics)
        assert child.data.params["feature_service"] in ("chs", "chs_contract_behaviour", "chs_behaviour_only")
    assert "diff_roc_auc__behaviour-only" in parent.data.metrics
    arts = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.md", "report/report.html", "report/differences.png", "report/roc_pr.png"} <= arts
    assert (sandbox_settings.reports_dir / "experiments" / "chs-layers" / "report.html").exists()


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.mlflow
def test_same_model_different_seeds_shows_no_difference(sandbox_settings):
    """The sandbox must not invent winners: identical variants but for the seed, several times."""
    from experiments.sandbox import run_experiment

    declared = 0
    for k in range(4):
        spec = ExperimentSpec.model_validate({
            "name": f"seeds-{k}", "model": "chs", "metrics": ["roc_auc"],
            "variants": [{"name": "seed-a", "seed": 100 + k}, {"name": "seed-b", "seed": 200 + k}],
            "bootstrap": {"resamples": 300, "seed": k}})
        result = run_experiment(sandbox_settings, spec, log=lambda _: None)
        declared += result["decisions"]["seed-b"]["winner"] is not None
    assert declared <= 1
