"""Training with xgboost.dask on a LocalCluster of 2 workers, chosen by configuration alone."""

from __future__ import annotations

import numpy as np
import pytest

from features.training_sets import build_training_set
from salesml.settings import Settings
from training import engine, pipeline
from training.pipeline import fit_and_evaluate

pytestmark = [pytest.mark.integration, pytest.mark.slow]


# Row and column subsampling draw differently on each worker: with them off, what is left to
# differ is the engine itself (its distributed quantile sketch), and the result is reproducible.
NO_SUBSAMPLING = {"subsample": 1.0, "colsample_bytree": 1.0}


@pytest.fixture(scope="module")
def chs_set(tmp_path_factory):
    """~10k CHS rows: the shared 150-account export's test window is too small to compare AUCs."""
    from features.store import apply, build_feature_files, open_store
    from salesml.simulator import generate

    settings = Settings(home=tmp_path_factory.mktemp("dask-home"))
    raw = settings.root / "raw"
    generate(raw, accounts=800, leads=100, reps=10, weeks=80, seed=11, truth_samples=0)
    build_feature_files(settings, raw, progress=lambda _: None)
    apply(settings, progress=lambda _: None)
    return settings, raw, build_training_set(settings, "chs", raw_dir=raw, store=open_store(settings))


def _spawned() -> set[int]:
    """Multiprocessing spawn children (as Dask's worker processes are) alive under this process."""
    import psutil

    out = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if "spawn_main" in " ".join(p.cmdline()):
                out.add(p.pid)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.mark.mlflow  # pipeline.run logs the dask-trained model
def test_dask_engine_matches_the_single_process_model(chs_set):
    from mlflow import MlflowClient

    base, raw, ts = chs_set
    # the engine trains XGBoost: compare the xgboost candidate, whichever model selection would pick
    local = fit_and_evaluate("chs", ts.frame, ts.feature_columns, seed=3, params=NO_SUBSAMPLING,
                             candidates=["xgboost"])
    before = _spawned()  # e.g. the workers of an MLflow server another fixture started
    settings = Settings(home=base.home, train_engine="dask", dask_scheduler=None, dask_workers=2)
    with engine.session(settings) as eng:
        assert eng.name == "dask" and eng.cluster == "LocalCluster(2 workers)"
        assert len(eng.client.scheduler_info()["workers"]) == 2
        dist = fit_and_evaluate("chs", ts.frame, ts.feature_columns, seed=3, params=NO_SUBSAMPLING,
                                candidates=["xgboost"])
        # What `salesml train chs` does under SALESML_TRAIN_ENGINE=dask (on the session's cluster).
        xgb_only = settings.spec("chs", raw).model_copy(update={"candidates": ["xgboost"]})
        summary = pipeline.run(settings, "chs", seed=3, params=NO_SUBSAMPLING, raw_dir=raw, register=False,
                               log=lambda _: None, training_set=ts, spec=xgb_only)
    assert engine.current().name == "local"  # the session is closed again
    assert _spawned() <= before  # and no worker process outlives it
    assert abs(dist.metrics["test_roc_auc"] - local.metrics["test_roc_auc"]) <= 0.005
    assert abs(summary["test_roc_auc"] - local.metrics["test_roc_auc"]) <= 0.005

    run = MlflowClient().get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["engine"] == "dask" and run.data.tags["dask_cluster"] == "LocalCluster(2 workers)"
    assert run.data.params["dask_cluster"] == "LocalCluster(2 workers)"

    # The same kind of model comes back: serving and SHAP work on it unchanged.
    assert type(dist.model.booster) is type(local.model.booster)
    test = dist.split.test
    p = dist.model.predict_proba(test)
    assert p.shape == (len(test),) and np.all((p > 0) & (p < 1))
    contrib = dist.model.contributions(test.head(20))
    np.testing.assert_allclose(1 / (1 + np.exp(-contrib.sum(axis=1))), p[:20], rtol=1e-4)
    assert dist.model.booster.best_iteration > 0


def test_engine_comes_from_configuration_alone(monkeypatch):
    monkeypatch.delenv("SALESML_TRAIN_ENGINE", raising=False)
    eng = engine.current()
    assert eng.name == "local" and eng.describe() == {"engine": "local", "dask_cluster": "in-process"}
    assert Settings(profile="team").train_engine == "dask"
    assert Settings(profile="team", train_engine="local").train_engine == "local"
    monkeypatch.setenv("SALESML_TRAIN_ENGINE", "dask")
    monkeypatch.setenv("SALESML_DASK_SCHEDULER", "tcp://scheduler:8786")
    s = Settings()
    assert (s.train_engine, s.dask_scheduler) == ("dask", "tcp://scheduler:8786")
