"""The MLflow UI, seen in a real browser (headless Chromium): an experiment's runs table lists its runs."""

from __future__ import annotations

import os

import pytest

from experiments.ui import chromium_path, dump_dom, experiment_url, screenshot, start_mlflow_ui, stop

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def chromium() -> str:
    try:
        return chromium_path()
    except RuntimeError as exc:
        if os.environ.get("SALESML_REQUIRE_SERVICES"):
            pytest.fail(f"{exc}; SALESML_REQUIRE_SERVICES is set, so this is an error")
        pytest.skip(str(exc))


@pytest.fixture
def tracking_store(tmp_path):
    """A fresh SQLite store with a parent run and two nested child runs; (uri, experiment id)."""
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        exp_id = mlflow.create_experiment("salesml-ui-check", artifact_location=(tmp_path / "mlartifacts").as_uri())
        with mlflow.start_run(experiment_id=exp_id, run_name="ui-parent"):
            for name, auc in (("variant-a", 0.71), ("variant-b", 0.74)):
                with mlflow.start_run(experiment_id=exp_id, run_name=name, nested=True):
                    mlflow.log_metric("test_roc_auc", auc)
    finally:
        mlflow.set_tracking_uri(previous)
    return uri, exp_id


def test_mlflow_ui_shows_the_runs_of_an_experiment(tmp_path, chromium, tracking_store):
    import matplotlib.image as mpimg
    import numpy as np

    uri, exp_id = tracking_store
    proc, base = start_mlflow_ui(uri, tmp_path / "mlartifacts")
    try:
        url = experiment_url(base, exp_id, order_by_metric="test_roc_auc")
        dom = dump_dom(url, wait_ms=15000)
        for name in ("ui-parent", "variant-a", "variant-b"):
            assert name in dom, f"{name!r} not in the rendered runs table of {url}"
        png = screenshot(url, tmp_path / "reports" / "mlflow_ui.png")
    finally:
        stop(proc)
    assert png == (tmp_path / "reports" / "mlflow_ui.png").resolve()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 20_000
    pixels = mpimg.imread(png)
    assert pixels.shape[:2] == (1000, 1600)
    assert float(np.ptp(pixels[..., :3])) > 0.2, "the screenshot is one flat colour"
    assert len(np.unique(pixels[..., :3].reshape(-1, 3), axis=0)) > 50
