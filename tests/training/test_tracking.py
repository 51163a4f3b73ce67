"""The MLflow layer's client binds the tracking store and the registry of one Settings."""

from __future__ import annotations

import mlflow
import pytest
from mlflow.exceptions import MlflowException

from salesml.settings import Settings
from training import tracking

pytestmark = pytest.mark.mlflow


def test_client_reads_its_own_registry_not_the_process_wide_one(tmp_path):
    ours, other = Settings(home=tmp_path / "ours"), Settings(home=tmp_path / "other")
    tracking.configure(ours)
    mlflow.MlflowClient().create_registered_model("only_in_ours")
    tracking.configure(other)  # the process now points elsewhere, as after another command or test
    try:
        # What a plain MlflowClient(tracking_uri=...) does: registry taken from the process.
        with pytest.raises(MlflowException):
            mlflow.MlflowClient(tracking_uri=ours.tracking_uri).get_registered_model("only_in_ours")
        assert tracking.client(ours).get_registered_model("only_in_ours").name == "only_in_ours"
        with pytest.raises(MlflowException):
            tracking.client(other).get_registered_model("only_in_ours")
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


def test_every_experiment_opens_as_model_training_with_the_review_view(tmp_path):
    """The tag the MLflow UI reads for an experiment's type, and the saved runs-table view that
    ``review_path`` opens (metrics first), on new experiments and on ones created before."""
    import json

    settings = Settings(home=tmp_path)
    settings.ensure_dirs()
    c = tracking.client(settings)
    older = c.create_experiment("salesml-old", tags={"team": "x"})  # created before the tags existed
    theirs = json.dumps({"name": "mine", "createdAt": 1, "state": "{}"})  # a view a user saved over ours
    kept = c.create_experiment("salesml-kept", tags={f"mlflow.sharedViewState.{tracking.REVIEW_VIEW}": theirs})
    for name in ("salesml-new", "salesml-old", "salesml-kept"):
        exp_id = tracking.experiment_id(settings, name)
        tags = c.get_experiment(exp_id).tags
        assert tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development", name
        view = json.loads(tags[f"mlflow.sharedViewState.{tracking.REVIEW_VIEW}"])
        if exp_id == kept:
            assert view["name"] == "mine"
            continue
        state = json.loads(view["state"])
        assert state["selectedColumns"][0] == "metrics.`test_roc_auc`"
        assert "attributes.`Description`" in state["selectedColumns"]
    assert c.get_experiment(older).tags["team"] == "x"
    assert tracking.experiment_id(settings, "salesml-old") == older  # get, not create again
    path = tracking.review_path(older)
    assert path.startswith(f"#/experiments/{older}/runs?") and "workflowType=machine_learning" in path
    assert f"viewStateShareKey={tracking.REVIEW_VIEW}" in path


def test_load_reference_reads_the_settings_store_whatever_the_process_points_at(tmp_path):
    """The drift reference of a version comes from the store its settings name (``client(settings)``),
    not from the process-wide tracking URI: another command or test may have moved that."""
    import pandas as pd

    ours, other = Settings(home=tmp_path / "ours"), Settings(home=tmp_path / "other")
    frame = pd.DataFrame({"x": [1.0, 2.0], "prediction": [0.1, 0.9]})
    tracking.configure(ours)
    try:
        mlflow.set_experiment("load-reference")  # not the process's active experiment, another store's (order)
        with mlflow.start_run() as run:
            tracking.log_reference(frame)
        c = tracking.client(ours)
        c.create_registered_model("ref_model")
        c.create_model_version("ref_model", f"runs:/{run.info.run_id}/reference", run_id=run.info.run_id)
        tracking.configure(other)
        pd.testing.assert_frame_equal(tracking.load_reference("ref_model", "1", ours), frame)
        with pytest.raises(MlflowException):
            tracking.load_reference("ref_model", "1", other)
        with pytest.raises(TypeError):  # no fallback to a client of whatever the process points at
            tracking.load_reference("ref_model", "1")  # type: ignore[call-arg]
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


def test_only_tracking_client_builds_an_mlflow_client():
    """One place builds MLflow clients (``tracking.client``, bound to one Settings' tracking store and
    registry): a bare ``MlflowClient()`` elsewhere reads whatever store the process last pointed at."""
    import ast
    from pathlib import Path

    root = Path(tracking.__file__).resolve().parents[1]
    found = []
    for package in ("salesml", "features", "training", "serving", "experiments", "drift", "benchmarks"):
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text())
            for fn in ast.walk(tree):
                if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                for call in ast.walk(fn):
                    if (isinstance(call, ast.Call) and getattr(call.func, "id", getattr(call.func, "attr", None))
                            == "MlflowClient" and not (path.name == "tracking.py" and fn.name == "client")):
                        found.append(f"{path.relative_to(root)}:{call.lineno} in {fn.name}")
    assert found == [], found
