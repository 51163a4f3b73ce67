"""The MLflow layer's client binds the tracking store and the registry of one Settings."""

from __future__ import annotations

import mlflow
import pytest
from mlflow.exceptions import MlflowException

from salesml.settings import Settings
from training import tracking


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
