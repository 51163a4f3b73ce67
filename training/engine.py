"""Where XGBoost trains: in this process, or with ``xgboost.dask`` on a Dask cluster.

Configuration alone decides (``SALESML_TRAIN_ENGINE=local|dask``, ``SALESML_DASK_SCHEDULER``,
``SALESML_DASK_WORKERS``; the team profile selects dask). ``session(settings)`` opens the engine
for one training run: with dask it connects a ``Client`` to the configured scheduler or starts a
``LocalCluster`` (worker processes, one thread each) and closes it afterwards. Inside the
session ``training.models.fit_xgboost`` trains every booster (the full model and the CHS layer
models) on the cluster and hands back the same ``XGBClassifier`` the local path makes, so
scoring, SHAP contributions, the registry and serving do not know the difference.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from salesml.settings import Settings


@dataclass
class Engine:
    name: str  # "local" | "dask"
    cluster: str = "in-process"  # "LocalCluster(2 workers)" or the scheduler address
    client: Any = None  # a dask.distributed Client, imported where a Dask engine starts
    workers: int = 1

    def describe(self) -> dict[str, str]:
        return {"engine": self.name, "dask_cluster": self.cluster}


_current: contextvars.ContextVar[Engine | None] = contextvars.ContextVar("salesml_engine", default=None)


def current() -> Engine:
    return _current.get() or Engine("local")


@contextlib.contextmanager
def session(settings: Settings):
    """The configured engine for the duration of one training run."""
    if settings.train_engine != "dask":
        token = _current.set(Engine("local"))
        try:
            yield _current.get()
        finally:
            _current.reset(token)
        return
    import logging

    from distributed import Client, LocalCluster

    with contextlib.ExitStack() as stack:
        if settings.dask_scheduler:
            client = stack.enter_context(Client(settings.dask_scheduler, timeout="30s"))
            eng = Engine("dask", settings.dask_scheduler, client, len(client.scheduler_info()["workers"]))
        else:
            cluster = stack.enter_context(LocalCluster(
                n_workers=settings.dask_workers, threads_per_worker=1, processes=True,
                dashboard_address=None, silence_logs=logging.ERROR))
            client = stack.enter_context(Client(cluster))
            eng = Engine("dask", f"LocalCluster({settings.dask_workers} workers)", client, settings.dask_workers)
        token = _current.set(eng)
        try:
            yield eng
        finally:
            _current.reset(token)


def fit_dask(eng: Engine, params: dict, x_train: pd.DataFrame, y_train: np.ndarray, x_valid: pd.DataFrame,
             y_valid: np.ndarray):
    """``DaskXGBClassifier`` on the cluster, returned as a plain ``XGBClassifier`` (same booster)."""
    import os
    import tempfile

    import dask.dataframe as dd
    import xgboost as xgb
    import xgboost.dask  # noqa: F401  (a submodule: not imported by ``import xgboost``)

    parts = max(1, eng.workers)

    def frame(x):
        return dd.from_pandas(x.reset_index(drop=True), npartitions=parts)

    def labels(y):
        return dd.from_pandas(pd.Series(y, name="label"), npartitions=parts)

    model = xgb.dask.DaskXGBClassifier(**params)
    model.client = eng.client
    model.fit(frame(x_train), labels(y_train), eval_set=[(frame(x_valid), labels(y_valid))], verbose=False)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.ubj")
        model.save_model(path)
        local = xgb.XGBClassifier(**{k: v for k, v in params.items() if k != "callbacks"})
        local.load_model(path)
    return local
