"""The MLflow page a reviewer lands on (issue 22 item 12), in a real browser (headless Chromium): the
runs in a saved review view with the metric columns, best test ROC-AUC first as `salesml experiment
screenshot` opens it by default, and no MLflow Assistant panel over the runs table."""

from __future__ import annotations

import pytest

from experiments.ui import REVIEW_HOST, browser_url, dump_dom, experiment_url, start_mlflow_ui, stop

# What the Assistant panel shows when it is open (MLflow 3.17).
ASSISTANT = ("Ask questions about your experiments", "Compare the selected runs.")


def test_the_browser_opens_a_local_ui_by_a_name_that_is_not_loopback():
    assert browser_url("http://127.0.0.1:5123/#/experiments/1/runs?x=1") == (
        f"http://{REVIEW_HOST}:5123/#/experiments/1/runs?x=1")
    assert browser_url("http://localhost:5123/") == f"http://{REVIEW_HOST}:5123/"
    assert browser_url("http://mlflow.example.com:5000/") == "http://mlflow.example.com:5000/"


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.mlflow
def test_the_landing_views_show_the_metric_columns_and_no_assistant(tmp_path, chromium):
    from salesml.settings import Settings
    from training import tracking

    settings = Settings(home=tmp_path)
    settings.ensure_dirs()
    client = tracking.client(settings)
    exp_id = tracking.experiment_id(settings, "salesml-chs")
    for name, auc in (("chs-train-a", 0.7412), ("chs-train-b", 0.7655)):
        run = client.create_run(exp_id, run_name=name)
        client.log_metric(run.info.run_id, "test_roc_auc", auc)
        client.log_metric(run.info.run_id, "test_ece", 0.0311)
        client.set_terminated(run.info.run_id)
    proc, base = start_mlflow_ui(settings.tracking_uri, tmp_path / "mlartifacts")
    try:
        # the screenshot command's default (best test ROC-AUC first), then the newest-first view
        pages = {view: dump_dom(experiment_url(base, exp_id, metric), wait_ms=15000)
                 for view, metric in (("best", "test_roc_auc"), ("newest", None))}
    finally:
        stop(proc)
    for view, dom in pages.items():
        assert "<title>Runs - " in dom, view
        for text in ("chs-train-a", "chs-train-b", "0.7412", "0.7655", "0.0311", "test_ece"):
            assert text in dom, f"{text!r} not in the {view} view"
        assert not [t for t in ASSISTANT if t in dom], f"the Assistant panel is open in the {view} view"
    assert "Best test ROC-AUC first (salesml)" in pages["best"]
    assert "Training runs (salesml)" in pages["newest"]
    best = pages["best"]
    assert best.index("chs-train-b") < best.index("chs-train-a"), "not best test ROC-AUC first"
