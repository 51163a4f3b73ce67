"""Training pipelines: ``fit_and_evaluate`` is pure; ``run`` adds Feast in and MLflow out."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from salesml.modelspec import ModelSpec
from training.data import LABEL, NOT_FEATURES, FeatureSpec, Split, infer_spec, split_frame
from training.metrics import classification_metrics
from training.models import INTENT_RULES, ScoringModel, fit_linear_model, fit_logistic, fit_rule_baseline, fit_xgboost

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
    selection: Selection | None = None
    spec: ModelSpec | None = None


@dataclass
class Selection:
    """Which candidate was chosen on validation, against what, and whether it may be registered."""

    chosen: str
    valid_auc: dict[str, float]  # candidates and baselines
    registrable: bool
    reason: str
    notes: list[str] = field(default_factory=list)


def select(spec: ModelSpec, valid_auc: dict[str, float], baselines: list[str]) -> Selection:
    """Pure: the first candidate (in the spec's order of preference) within the margin of the best
    one on validation; not registrable if a baseline beats it by more than the margin."""
    margin = spec.selection_margin
    cands = {c: valid_auc[c] for c in spec.candidates if np.isfinite(valid_auc.get(c, np.nan))}
    if not cands:
        raise ValueError(f"{spec.name}: no candidate produced a validation ROC-AUC")
    best = max(cands.values())
    chosen = next(c for c in spec.candidates if c in cands and cands[c] >= best - margin)
    notes = []
    if "xgboost" in cands and chosen != "xgboost":
        notes.append(f"the constrained xgboost trails {chosen} by {cands[chosen] - cands['xgboost']:.4f} validation "
                     f"ROC-AUC, more than the margin {margin:.4f}: {chosen} chosen, so the spec's monotone "
                     "directions do not bind the registered model")
    reason = f"{chosen}: validation ROC-AUC {cands[chosen]:.4f} (best candidate {best:.4f}, margin {margin:.4f})"
    beaten = {b: valid_auc[b] for b in baselines if valid_auc.get(b, -np.inf) > cands[chosen] + margin}
    if beaten:
        worst = max(beaten, key=beaten.get)
        return Selection(chosen, valid_auc, False, f"baseline {worst} beats {chosen} on validation "
                         f"({beaten[worst]:.4f} vs {cands[chosen]:.4f}, margin {margin:.4f}): not registered", notes)
    return Selection(chosen, valid_auc, True, reason, notes)


def _auc(y, p) -> float:
    return classification_metrics(y, p)["roc_auc"]


def fit_and_evaluate(spec: ModelSpec | str, frame: pd.DataFrame, feature_columns: list[str], seed: int,
                     params: dict | None = None, features: FeatureSpec | None = None,
                     callbacks: list | None = None, candidates: list[str] | None = None) -> TrainResult:
    """Split, fit the spec's candidates and baselines, choose on validation, score validation and test.

    ``spec``: the model spec (a name loads the shipped one). ``candidates`` narrows the spec's
    list (tuning fits only ``xgboost``). Metrics without a prefix are the chosen model's.
    """
    from salesml.modelspec import load_spec

    spec = load_spec(spec) if isinstance(spec, str) else spec
    if candidates:
        spec = spec.model_copy(update={"candidates": [c for c in spec.candidates if c in candidates] or candidates})
    split = split_frame(frame, list(spec.keys), seed)
    empty = [c for c in feature_columns if c in split.train and split.train[c].isna().all()]
    features = features or infer_spec(split.train, [c for c in feature_columns if c not in set(empty)])
    fitted: dict[str, object] = {}
    for cand in spec.candidates:
        if cand == "xgboost":
            fitted[cand] = fit_xgboost(split.train, split.valid, features, seed, params, spec.constraints,
                                       spec.name, callbacks)
        elif cand == "xgboost_unconstrained":
            fitted[cand] = fit_xgboost(split.train, split.valid, features, seed, params, {}, spec.name, callbacks)
    baselines: dict[str, object] = {}
    if "logistic" in spec.baselines or "logistic" in spec.candidates:
        baselines["logistic"] = fit_logistic(split.train, features, seed)
    if "rules" in spec.baselines and any(c in features.columns for c in INTENT_RULES):
        baselines["rules"] = fit_rule_baseline(split.train)  # a scoring sheet over web signals, where there are any
    if "logistic" in spec.candidates:
        fitted["logistic"] = fit_linear_model(split.train, features, seed, spec.name, baselines["logistic"])
    y_valid = split.valid[LABEL].to_numpy()
    valid_auc = {n: _auc(y_valid, m.predict_proba(split.valid)) for n, m in {**fitted, **baselines}.items()}
    selection = select(spec, valid_auc, [b for b in baselines if b not in spec.candidates])
    model = fitted[selection.chosen]

    metrics: dict[str, float] = {}
    booster = getattr(model, "booster", None)
    if booster is not None:
        metrics["best_iteration"] = float(booster.best_iteration)
    scores: dict[str, np.ndarray] = {}
    for window, part in (("valid", split.valid), ("test", split.test)):
        y = part[LABEL].to_numpy()
        p = model.predict_proba(part)
        metrics.update({f"{window}_{k}": v for k, v in classification_metrics(y, p).items()})
        if window == "test":
            scores["xgboost" if selection.chosen == "xgboost" else selection.chosen] = p
            others = {**{c: m for c, m in fitted.items() if c != selection.chosen}, **baselines}
            for oname, other in others.items():
                po = other.predict_proba(part)
                scores.setdefault(oname, po)
                prefix = "baseline" if oname in baselines else "candidate"
                metrics.update({f"{prefix}_{oname}_test_{k}": v for k, v in classification_metrics(y, po).items()
                                if k in ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "lift_top10")})
    for name, auc in valid_auc.items():
        metrics[f"{'baseline' if name in baselines else 'candidate'}_{name}_valid_roc_auc"] = auc
    return TrainResult(model, split, metrics, scores, baselines, selection, spec)


def _fit_chs(result: TrainResult, seed: int, params: dict | None, thresholds: dict[str, float], custom=None):
    """Layer models + fitted weights on top of the full churn model; logs CHS metrics."""
    import mlflow

    from training.chs import fit_health_model, warning_metrics

    health = fit_health_model(result.split.train, result.split.valid, result.model, seed, params,
                              monotone=result.spec.constraints, custom=custom)
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


def _log_selection(result: TrainResult, log: Callable[[str], None]) -> None:
    import mlflow

    sel = result.selection
    rows = [{"model": n, "role": "baseline" if n in result.baselines and n not in result.spec.candidates
             else "candidate", "valid_roc_auc": auc,
             "test_roc_auc": result.metrics.get("test_roc_auc") if n == sel.chosen else
             result.metrics.get(f"candidate_{n}_test_roc_auc", result.metrics.get(f"baseline_{n}_test_roc_auc")),
             "chosen": n == sel.chosen} for n, auc in sel.valid_auc.items()]
    mlflow.log_table(pd.DataFrame(rows), "model_selection.json")
    mlflow.set_tags({"chosen_model": sel.chosen, "selection": sel.reason[:500],
                     "registrable": str(sel.registrable).lower()})
    mlflow.log_param("candidates", ",".join(result.spec.candidates))
    name = result.spec.name
    for r in rows:
        log(f"{name}:   {r['role']:<9} {r['model']:<22} valid ROC-AUC {r['valid_roc_auc']:.4f}"
            + ("  <- chosen" if r["chosen"] else ""))
    for note in sel.notes:
        log(f"{name}: note: {note}")


def run(settings, name: str, seed: int = 42, params: dict | None = None, raw_dir: Path | None = None,
        register: bool = True, log: Callable[[str], None] = print, training_set=None,
        force_alias: str | None = None, spec: ModelSpec | None = None) -> dict:
    """Build the training set through Feast, fit, log the run to MLflow, register the model."""
    from features.custom import custom_features
    from features.training_sets import build_training_set
    from training import engine, plots, tracking
    from training.truth import oracle_probabilities

    mlflow = tracking.configure(settings)
    raw_dir = Path(raw_dir or settings.export_dir)
    spec = spec or settings.spec(name, raw_dir)
    log(f"{name}: building the point-in-time training set through Feast (export {raw_dir})")
    ts = training_set or build_training_set(settings, name, raw_dir=raw_dir, spec=spec)
    if ts.export_end is not None:
        log(f"{name}: {len(ts.frame):,} observations; outcome windows of {spec.horizon_days} days complete "
            f"before the export end {ts.export_end.describe()}")
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
        log(f"{name}: fitting {', '.join(spec.candidates)} and baselines on {len(ts.frame):,} rows")
        result = fit_and_evaluate(spec, ts.frame, ts.feature_columns, seed, params)
        split = result.split
        mlflow.set_tag("split", split.method)
        log(f"{name}: split {split.method} ({split.note}): {len(split.train):,} / {len(split.valid):,} / "
            f"{len(split.test):,} rows train / valid / test")
        _log_selection(result, log)
        dropped = [c for c in ts.feature_columns if c not in result.model.spec.columns
                   and c not in NOT_FEATURES]
        if dropped:
            log(f"{name}: left out, empty in every training row: {', '.join(dropped)}")
            mlflow.log_param("empty_features", ",".join(dropped)[:500])
        model = result.model
        booster = getattr(result.model, "booster", None)  # a logistic regression has none
        xgb_params = booster.get_params() if booster is not None else {}
        if name == "chs":
            model = _fit_chs(result, seed, params, settings.chs_levels, custom_features(settings.project(raw_dir)))
        mlflow.log_params({"seed": seed, "feature_service": ts.feature_service,
                           "n_features": len(model.spec.columns), "rows": len(ts.frame),
                           "horizon_days": spec.horizon_days, "label_kind": spec.label.kind,
                           **split.windows(),
                           **{f"xgb_{k}": v for k, v in xgb_params.items()
                              if k in ("n_estimators", "learning_rate", "max_depth", "min_child_weight",
                                       "subsample", "colsample_bytree", "reg_lambda", "reg_alpha")}})
        metrics = dict(result.metrics)
        y_test = split.test[LABEL].to_numpy()
        oracle = oracle_probabilities(name, split.test, raw_dir, list(spec.keys), spec.horizon_days)
        if oracle is not None:
            from sklearn.metrics import roc_auc_score

            metrics["oracle_test_roc_auc"] = float(roc_auc_score(y_test, oracle))
            metrics["test_auc_vs_oracle"] = metrics["test_roc_auc"] / metrics["oracle_test_roc_auc"]
            result.test_scores["truth"] = oracle
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})

        scores = result.test_scores
        chosen = result.selection.chosen
        tracking.save_figure(plots.roc_pr_curves(y_test, scores), "roc_pr", reports)
        tracking.save_figure(plots.calibration(y_test, scores), "calibration", reports)
        tracking.save_figure(plots.score_distribution(y_test, scores[chosen]), "score_distribution", reports)
        if name == "lead_match":
            metrics.update(_compare_assignment_policies(settings, model, split.test, raw_dir, reports))
            mlflow.log_metrics({k: v for k, v in metrics.items() if k.startswith("assign_") and np.isfinite(v)})
        contrib = model.contributions(split.test)
        tracking.save_figure(plots.contribution_summary(contrib, split.test), "shap_summary", reports)
        mlflow.log_dict(model.spec.to_dict(), "feature_spec.json")
        mlflow.log_dict(spec.model_dump(mode="json"), "model_spec.json")
        tracking.log_reference(reference_frame(model, split.train, seed))

        example = split.test[model.spec.columns + [c for c in ts.feature_columns
                                                   if c not in model.spec.columns]]
        registrable = result.selection.registrable
        if register and not registrable:
            log(f"[red]{name}: NOT registered: {result.selection.reason}[/red]")
        info = tracking.log_model(model, example, registered_name=name if register and registrable else None)
        alias = None
        if register and registrable and force_alias:  # e.g. a drift-triggered retrain: never champion directly
            tracking.client(settings).set_registered_model_alias(name, force_alias,
                                                                 str(info.registered_model_version))
            alias = force_alias
        elif register and registrable:
            alias = tracking.set_alias_if_first(name, info.registered_model_version)
        summary = {"run_id": active.info.run_id, "model": name, "version": info.registered_model_version,
                   "alias": alias, "dataset_digest": digest, "split": split.method, "chosen": chosen,
                   "registered": bool(register and registrable), "selection": result.selection.reason,
                   "selection_notes": list(result.selection.notes), **metrics}
    log(f"{name}: test ROC-AUC {metrics['test_roc_auc']:.3f} ({chosen})"
        + (f" (truth {metrics['oracle_test_roc_auc']:.3f})" if "oracle_test_roc_auc" in metrics else "")
        + (f"; registered version {summary['version']} as {alias}" if summary["registered"] else "; not registered"))
    return summary
