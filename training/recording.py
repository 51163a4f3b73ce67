"""The edges of ``pipeline.run`` after the training step: write a ``TrainingResult`` to the active MLflow run
(``record``), register and alias the logged model (``register``), describe the run and the version
(``describe``). The process-wide tracking URI is the one ``tracking.configure(settings)`` set for the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from mlflow.models.model import ModelInfo

    from salesml.settings import Settings
    from training.pipeline import TrainingResult


@dataclass
class Recorded:
    """What ``record`` wrote: the run, the logged model (``ModelInfo``) and the training set's digest."""

    run_id: str
    model_info: ModelInfo
    dataset_digest: str


@dataclass
class Registration:
    """The outcome of ``register``: the new version and its alias (with why), or not registered."""

    registered: bool = False
    version: str | int | None = None
    alias: str | None = None
    reason: str | None = None


XGB_PARAMS = ("n_estimators", "learning_rate", "max_depth", "min_child_weight", "subsample", "colsample_bytree",
              "reg_lambda", "reg_alpha")


def start(name: str, seed: int, engine) -> None:
    """The tags a training run carries from its start (a failed run has them too)."""
    import mlflow

    from training import tracking

    mlflow.set_tags({"model": name, "seed": str(seed), "git_commit": tracking.git_commit(),
                     "tree_method": "hist", **engine.describe()})
    mlflow.log_param("dask_cluster", engine.cluster)


def record(result: TrainingResult, reports: Path | None = None) -> Recorded:
    """Write the result to the active run: dataset input, selection, params, metrics, plots (also saved
    under ``reports``), the feature and model specs, the drift reference and the model (not registered)."""
    import mlflow

    from training import tracking

    name = result.name
    digest = tracking.log_training_set(result.frame, f"{name}-training-set", result.feature_service,
                                       result.data_window)
    mlflow.set_tag("split", result.split.method)
    sel = result.selection
    mlflow.log_table(pd.DataFrame(result.selection_rows()), "model_selection.json")
    mlflow.set_tags({"chosen_model": sel.chosen, "selection": sel.reason[:500],
                     "registrable": str(sel.registrable).lower()})
    mlflow.log_params(result.params)
    mlflow.log_metrics({k: v for k, v in result.metrics.items() if np.isfinite(v)})
    for fig_name, fig in result.figures.items():
        tracking.save_figure(fig, fig_name, reports)
    for file, content in result.documents.items():
        mlflow.log_dict(content, file)
    tracking.log_reference(result.reference)
    info = tracking.log_model(result.model, result.example)
    return Recorded(info.run_id, info, digest)


def register(settings: Settings, result: TrainingResult, recorded: Recorded, register: bool = True,
             alias: str | None = None) -> Registration:
    """Register the recorded model as a new version of ``result.name`` when asked and the selection allows
    it, and alias it (``registry.alias_new_version``: ``alias`` when given, else champion or challenger)."""
    from training import registry, tracking

    if not (register and result.registrable):
        return Registration()
    version = tracking.register_model(settings, f"models:/{recorded.model_info.model_id}", result.name)
    alias, why = registry.alias_new_version(settings, result.name, version, recorded.run_id, alias)
    return Registration(True, version, alias, why)


def summary(result: TrainingResult, recorded: Recorded, registration: Registration) -> dict:
    """``pipeline.run``'s return value: the run, the version and alias, the selection, every metric."""
    sel = result.selection
    return {"run_id": recorded.run_id, "model": result.name, "version": registration.version,
            "alias": registration.alias, "dataset_digest": recorded.dataset_digest, "split": result.split.method,
            "chosen": sel.chosen, "registered": registration.registered, "selection": sel.reason,
            "selection_notes": list(sel.notes), **result.metrics}


def describe(settings: Settings, result: TrainingResult, run_summary: dict, registration: Registration,
             register: bool = True) -> str:
    """The run's description (and the version's, when registered): ``registry.describe_training``."""
    from training import registry

    return registry.describe_training(settings, run_summary, result.split, result.data_window,
                                      registration.reason, register)
