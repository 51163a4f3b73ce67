"""Training pipelines: ``fit_and_evaluate`` is pure; ``run`` adds Feast in and MLflow out."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from training.data import LABEL, FeatureSpec, Split, infer_spec, time_split
from training.metrics import classification_metrics
from training.models import ScoringModel, fit_logistic, fit_rule_baseline, fit_xgboost

# Monotone constraints on P(outcome): more buying signals never lower intent; more usage,
# better SLA or relationship never raise churn.  They make the behavioural guarantees hold
# by construction rather than by luck of the sample.
INTENT_UP = ["page_views_7d", "pricing_page_views_7d", "pricing_dwell_seconds_7d",
             "case_study_views_30d", "doc_downloads_30d", "pricing_sheet_downloads_30d",
             "webinar_completion_max_30d", "budget_signals_90d", "tender_signals_90d", "events_per_week"]
CHURN_DOWN = ["logins", "active_users", "key_feature_uses", "api_calls", "config_changes",
              "scans_run", "custom_rules", "logins_4w_avg", "key_feature_uses_4w_avg",
              "api_calls_wow", "key_feature_uses_wow", "api_calls_mom", "usage_trend_4v12", "sla_gap",
              "communication_quality_90d", "communication_quality_365d", "nps_avg_365d", "touchpoints_90d",
              "joint_project_touchpoints_180d", "nps_last"]
CHURN_UP = ["below_baseline_measures", "below_baseline_streak", "early_warning", "sla_breached"]

MODELS: dict[str, dict] = {
    "intent": {"baselines": ("logistic", "rules"), "monotone": {c: 1 for c in INTENT_UP}},
    "lead_match": {"baselines": ("logistic",),
                   "monotone": {**{c: 1 for c in INTENT_UP}, "industry_match": 1,
                                "product_match": 1, "region_match": 1, "win_rate_90d": 1,
                                "load_ratio": -1}},
    "chs": {"baselines": ("logistic",),
            "monotone": {**{c: -1 for c in CHURN_DOWN}, **{c: 1 for c in CHURN_UP}}},
}


REFERENCE_ROWS = 50_000  # the drift reference keeps at most this many training rows (seeded sample)


def reference_frame(model, train: pd.DataFrame, seed: int, max_rows: int = REFERENCE_ROWS) -> pd.DataFrame:
    """The training window as drift will see it: model inputs, the model's prediction, label, time.

    One row per entity (a seeded random one of its observations): drift's p-value tests assume
    independent rows, and a served window holds each entity once.
    """
    key = next((k for k in ("account_id", "lead_id") if k in train.columns), None)
    rows = train.groupby(key, sort=False, observed=True).sample(1, random_state=seed) if key else train
    rows = rows.sample(max_rows, random_state=seed) if len(rows) > max_rows else rows
    cols = [c for c in model.spec.columns if c in rows.columns]
    out = rows[["event_timestamp", *cols, LABEL]].copy()
    out["prediction"] = model.predict_proba(rows)
    return out.reset_index(drop=True)


@dataclass
class TrainResult:
    model: ScoringModel
    split: Split
    metrics: dict[str, float]
    test_scores: dict[str, np.ndarray]
    baselines: dict[str, object] = field(default_factory=dict)


def fit_and_evaluate(name: str, frame: pd.DataFrame, feature_columns: list[str], seed: int,
                     params: dict | None = None, spec: FeatureSpec | None = None,
                     callbacks: list | None = None) -> TrainResult:
    """Time split, XGBoost + baselines, metrics on validation and test windows."""
    if name not in MODELS:
        raise ValueError(f"unknown model '{name}': expected one of {', '.join(MODELS)}")
    cfg = MODELS[name]
    split = time_split(frame)
    spec = spec or infer_spec(split.train, feature_columns)
    model = fit_xgboost(split.train, split.valid, spec, seed, params, cfg["monotone"], name, callbacks)
    baselines: dict[str, object] = {}
    if "logistic" in cfg["baselines"]:
        baselines["logistic"] = fit_logistic(split.train, spec, seed)
    if "rules" in cfg["baselines"]:
        baselines["rules"] = fit_rule_baseline(split.train)

    metrics: dict[str, float] = {"best_iteration": float(model.booster.best_iteration)}
    scores: dict[str, np.ndarray] = {}
    for window, part in (("valid", split.valid), ("test", split.test)):
        y = part[LABEL].to_numpy()
        p = model.predict_proba(part)
        metrics.update({f"{window}_{k}": v for k, v in classification_metrics(y, p).items()})
        if window == "test":
            scores["xgboost"] = p
            for bname, b in baselines.items():
                pb = b.predict_proba(part)
                scores[bname] = pb
                metrics.update({f"baseline_{bname}_test_{k}": v for k, v in classification_metrics(y, pb).items()
                                if k in ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "lift_top10")})
    return TrainResult(model, split, metrics, scores, baselines)


def _fit_chs(result: TrainResult, seed: int, params: dict | None, thresholds: dict[str, float]):
    """Layer models + fitted weights on top of the full churn model; logs CHS metrics."""
    import mlflow

    from training.chs import fit_health_model, warning_metrics

    health = fit_health_model(result.split.train, result.split.valid, result.model, seed, params)
    health.thresholds = dict(thresholds)
    mlflow.log_params({f"chs_weight_{k}": v for k, v in health.weights.items()})
    mlflow.log_params({f"chs_level_{k}": v for k, v in health.thresholds.items()})
    scores = health.score(result.split.test)
    m = warning_metrics(scores, result.split.test[LABEL].to_numpy(), health.thresholds)
    result.metrics.update({f"test_{k}": v for k, v in m.items()})
    mlflow.log_dict({"version": health.weights_version, "weights": health.weights,
                     "thresholds": health.thresholds}, "chs_weights.json")
    return health


def _compare_assignment_policies(settings, model, test: pd.DataFrame, raw_dir: Path, reports: Path) -> dict:
    """Optimal proposals vs round-robin vs least-loaded on the held-out weekly batches."""
    from features.store import open_store
    from salesml.validation import load_valid_export
    from training import lead_match, plots, tracking

    reps = load_valid_export(raw_dir, ["reps"])["reps"]
    active = reps["active"].fillna(True).astype(bool) if "active" in reps else True
    totals = lead_match.evaluate_on_test(model, open_store(settings), test, reps.loc[active, "rep_id"].tolist())
    tracking.save_figure(plots.policy_comparison(totals), "assignment_policies", reports)
    return {f"assign_{policy}_{k}": float(v) for policy, m in totals.items() for k, v in m.items()}


def run(settings, name: str, seed: int = 42, params: dict | None = None, raw_dir: Path | None = None,
        register: bool = True, log: Callable[[str], None] = print, training_set=None,
        force_alias: str | None = None) -> dict:
    """Build the training set through Feast, fit, log the run to MLflow, register the model."""
    from features.training_sets import build_training_set
    from training import engine, plots, tracking
    from training.truth import oracle_probabilities

    mlflow = tracking.configure(settings)
    raw_dir = raw_dir or settings.raw_dir
    log(f"{name}: building the point-in-time training set through Feast")
    ts = training_set or build_training_set(settings, name, raw_dir=raw_dir)
    tracking.use_experiment(settings, f"salesml-{name}")
    reports = settings.reports_dir / "training" / name
    # A dask session the caller already opened (a benchmark, a test) is reused, not started again.
    opened = engine.current()
    session = (contextlib.nullcontext(opened) if opened.name == settings.train_engine == "dask"
               else engine.session(settings))
    with mlflow.start_run(run_name=f"{name}-train") as active, session as eng:
        mlflow.set_tags({"model": name, "seed": str(seed), "git_commit": tracking.git_commit(),
                         "tree_method": "hist", **eng.describe()})
        mlflow.log_param("dask_cluster", eng.cluster)
        log(f"{name}: training engine {eng.name} ({eng.cluster})")
        window = f"{ts.start:%Y-%m-%d}..{ts.end:%Y-%m-%d}"
        digest = tracking.log_training_set(ts.frame, f"{name}-training-set", ts.feature_service, window)
        log(f"{name}: fitting XGBoost and baselines on {len(ts.frame):,} rows")
        result = fit_and_evaluate(name, ts.frame, ts.feature_columns, seed, params)
        model = result.model
        if name == "chs":
            model = _fit_chs(result, seed, params, settings.chs_levels)
        mlflow.log_params({"seed": seed, "feature_service": ts.feature_service,
                           "n_features": len(model.spec.columns), "rows": len(ts.frame),
                           **result.split.windows(),
                           **{f"xgb_{k}": v for k, v in result.model.booster.get_params().items()
                              if k in ("n_estimators", "learning_rate", "max_depth", "min_child_weight",
                                       "subsample", "colsample_bytree", "reg_lambda", "reg_alpha")}})
        metrics = dict(result.metrics)
        y_test = result.split.test[LABEL].to_numpy()
        oracle = oracle_probabilities(name, result.split.test, raw_dir)
        if oracle is not None:
            from sklearn.metrics import roc_auc_score

            metrics["oracle_test_roc_auc"] = float(roc_auc_score(y_test, oracle))
            metrics["test_auc_vs_oracle"] = metrics["test_roc_auc"] / metrics["oracle_test_roc_auc"]
            result.test_scores["simulator truth"] = oracle
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})

        scores = result.test_scores
        tracking.save_figure(plots.roc_pr_curves(y_test, scores), "roc_pr", reports)
        tracking.save_figure(plots.calibration(y_test, scores), "calibration", reports)
        tracking.save_figure(plots.score_distribution(y_test, scores["xgboost"]), "score_distribution", reports)
        if name == "lead_match":
            metrics.update(_compare_assignment_policies(settings, model, result.split.test, raw_dir, reports))
            mlflow.log_metrics({k: v for k, v in metrics.items() if k.startswith("assign_") and np.isfinite(v)})
        contrib = model.contributions(result.split.test)
        tracking.save_figure(plots.contribution_summary(contrib, result.split.test), "shap_summary", reports)
        mlflow.log_dict(model.spec.to_dict(), "feature_spec.json")
        tracking.log_reference(reference_frame(model, result.split.train, seed))

        example = result.split.test[model.spec.columns + [c for c in ts.feature_columns
                                                          if c not in model.spec.columns]]
        info = tracking.log_model(model, example, registered_name=name if register else None)
        alias = None
        if register and force_alias:  # e.g. a drift-triggered retrain: never champion directly
            from mlflow import MlflowClient

            MlflowClient().set_registered_model_alias(name, force_alias, str(info.registered_model_version))
            alias = force_alias
        elif register:
            alias = tracking.set_alias_if_first(name, info.registered_model_version)
        summary = {"run_id": active.info.run_id, "model": name, "version": info.registered_model_version,
                   "alias": alias, "dataset_digest": digest, **metrics}
    log(f"{name}: test ROC-AUC {metrics['test_roc_auc']:.3f}"
        + (f" (simulator truth {metrics['oracle_test_roc_auc']:.3f})" if "oracle_test_roc_auc" in metrics else "")
        + f"; registered version {summary['version']} as {alias}")
    return summary
