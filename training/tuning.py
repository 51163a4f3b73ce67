"""Optuna tuning: TPE over XGBoost parameters, pruning on the validation window.

The objective calls the same ``fit_and_evaluate`` as ``salesml train``; each trial is a nested
MLflow run under one parent; the best parameters are retrained and registered as challenger.
The study lives in persistent storage (SQLite under SALESML_HOME by default,
``SALESML_OPTUNA_STORAGE`` for a database URL) so several workers can share it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np


def suggest(trial) -> dict:
    return {
        "max_depth": trial.suggest_int("max_depth", 2, 7),
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
        "min_child_weight": trial.suggest_float("min_child_weight", 1.0, 50.0, log=True),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.4, 1.0),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
    }


def pruning_callback(trial, every: int = 10):
    """Report validation log loss to Optuna as boosting goes; stop hopeless trials early."""
    import optuna
    import xgboost as xgb

    class Prune(xgb.callback.TrainingCallback):
        def after_iteration(self, model, epoch, evals_log):
            if epoch % every == 0:
                loss = next(iter(evals_log.values()))["logloss"][-1]
                trial.report(-loss, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at iteration {epoch}")
            return False

    return Prune()


def storage_url(settings) -> str:
    return settings.optuna_storage_url


def run(settings, name: str, trials: int, seed: int = 42, raw_dir: Path | None = None,
        study_name: str | None = None, log: Callable[[str], None] = print, register: bool = True) -> dict:
    import mlflow
    import optuna

    from features.training_sets import build_training_set
    from training import pipeline, tracking

    tracking.configure(settings)
    raw_dir = raw_dir or settings.raw_dir
    ts = build_training_set(settings, name, raw_dir=raw_dir)
    study = optuna.create_study(
        study_name=study_name or f"salesml-{name}", storage=storage_url(settings), load_if_exists=True,
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=20),
    )
    tracking.use_experiment(settings, f"salesml-{name}")
    with mlflow.start_run(run_name=f"{name}-tune") as parent:
        mlflow.set_tags({"model": name, "study": study.study_name, "git_commit": tracking.git_commit()})

        def objective(trial) -> float:
            params = suggest(trial)
            with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True):
                mlflow.log_params(params)
                result = pipeline.fit_and_evaluate(name, ts.frame, ts.feature_columns, seed, params,
                                                   callbacks=[pruning_callback(trial)])
                metrics = {k: v for k, v in result.metrics.items() if k.startswith("valid_") and np.isfinite(v)}
                mlflow.log_metrics(metrics)
                return result.metrics["valid_roc_auc"]

        def progress(study, trial):
            complete = trial.state == optuna.trial.TrialState.COMPLETE
            value = f", valid ROC-AUC {trial.value:.4f}" if complete else ""
            done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
            best = f" (best {study.best_value:.4f})" if done else ""
            log(f"trial {trial.number}: {trial.state.name.lower()}{value}{best}")

        study.optimize(objective, n_trials=trials, callbacks=[progress], catch=())
        mlflow.log_params({f"best_{k}": v for k, v in study.best_params.items()})
        mlflow.log_metric("best_valid_roc_auc", study.best_value)
        parent_id = parent.info.run_id
    summary = {"study": study.study_name, "best_params": study.best_params, "best_value": study.best_value,
               "parent_run_id": parent_id}
    if register:
        summary["retrained"] = pipeline.run(settings, name, seed=seed, params=study.best_params,
                                            raw_dir=raw_dir, log=log, training_set=ts)
    return summary
