"""The MLflow UI, seen in a real browser (headless Chromium): a reviewer lands on an experiment's
training runs, with their metrics."""

from __future__ import annotations

import pytest

from experiments.ui import dump_dom, experiment_url, screenshot, start_mlflow_ui, stop

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.mlflow]


@pytest.fixture
def tracking_store(tmp_path):
    """A fresh SQLite store with the project's ``salesml-chs`` experiment (made the way the project
    makes it: ``training.tracking``) and two training runs; (uri, experiment id)."""
    from salesml.settings import Settings
    from training import tracking

    settings = Settings(home=tmp_path)
    settings.ensure_dirs()
    client = tracking.client(settings)
    exp_id = tracking.experiment_id(settings, "salesml-chs")
    for name, auc in (("chs-train-a", 0.7412), ("chs-train-b", 0.7655)):
        run = client.create_run(exp_id, run_name=name)
        client.log_metric(run.info.run_id, "test_roc_auc", auc)
        client.log_metric(run.info.run_id, "baseline_logistic_test_roc_auc", 0.7011)
        client.set_tag(run.info.run_id, "mlflow.note.content", f"{name} beats the logistic baseline")
        client.set_terminated(run.info.run_id)
    return settings.tracking_uri, exp_id


def test_a_reviewer_lands_on_the_training_runs_with_their_metrics(tmp_path, chromium, tracking_store):
    import matplotlib.image as mpimg
    import numpy as np

    uri, exp_id = tracking_store
    proc, base = start_mlflow_ui(uri, tmp_path / "mlartifacts")
    try:
        url = experiment_url(base, exp_id)
        dom = dump_dom(url, wait_ms=15000)
        png = screenshot(url, tmp_path / "reports" / "mlflow_ui.png")
    finally:
        stop(proc)
    # The training-runs page (not the GenAI overview MLflow 3 opens by default), in the review view.
    assert "<title>Runs - " in dom and "<title>Overview - " not in dom, f"not the runs page: {url}"
    assert "salesml-chs" in dom and "Training runs (salesml)" in dom
    for text in ("chs-train-a", "chs-train-b", "test_roc_auc", "0.7412", "0.7655", "baseline_logistic_test_roc_auc",
                 "chs-train-b beats the logistic baseline"):
        assert text in dom, f"{text!r} not on the page a reviewer lands on ({url})"
    assert png == (tmp_path / "reports" / "mlflow_ui.png").resolve()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 20_000
    pixels = mpimg.imread(png)
    assert pixels.shape[:2] == (1000, 1600)
    assert float(np.ptp(pixels[..., :3])) > 0.2, "the screenshot is one flat colour"
    assert len(np.unique(pixels[..., :3].reshape(-1, 3), axis=0)) > 50
