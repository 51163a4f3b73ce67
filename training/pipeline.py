"""Training pipelines: a pure core with thin edges.

``fit_and_evaluate`` (split, fit the candidates and baselines, choose on validation) and ``train`` (that,
plus the model's own step from ``training.model_steps``, the truth's metrics, plots and the drift
reference, into a ``TrainingResult``) take frames and return results: no Feast, no MLflow. ``run``
composes the edges around them: the Feast training set, ``recording.record`` (the MLflow run),
``recording.register`` (version and alias), ``recording.describe``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pandas as pd

from salesml.modelspec import ModelSpec
from training.data import IN_SAMPLE, LABEL, NOT_FEATURES, FeatureSpec, Split, infer_spec, split_frame
from training.metrics import classification_metrics
from training.models import (
    INTENT_RULES,
    LinearScoringModel,
    ScoringModel,
    fit_linear_model,
    fit_logistic,
    fit_rule_baseline,
    fit_xgboost,
)

if TYPE_CHECKING:
    from salesml.settings import Settings
    from training.model_steps import TrainingInputs

REFERENCE_ROWS = 50_000  # the drift reference keeps at most this many training rows (seeded sample)


def reference_frame(model, split: Split, seed: int, max_rows: int = REFERENCE_ROWS) -> pd.DataFrame:
    """The reference drift compares served traffic with: model inputs, the model's prediction, label, time.

    One row per entity (a seeded random one of its observations over the whole training window, train,
    validation and test alike): drift's p-value tests assume independent rows, a served window holds each
    entity once, and the window's whole span lets the drift yardstick measure its own seasons.
    ``in_sample`` marks the rows the model was fitted on (the train part): a boosted model's in-sample scores
    are sharper than its scores on any new row, and comparing served predictions with them made every
    served window look like prediction drift (and its ROC-AUC a drop); drift compares predictions and
    quality on the held-out rows only (``drift.monitor.assess``).
    """
    frame = pd.concat([split.train.assign(**{IN_SAMPLE: True}), split.valid.assign(**{IN_SAMPLE: False}),
                       split.test.assign(**{IN_SAMPLE: False})], ignore_index=True)
    key = next((k for k in ("account_id", "lead_id") if k in frame.columns), None)
    rows = frame.groupby(key, sort=False, observed=True).sample(1, random_state=seed) if key else frame
    rows = rows.sample(max_rows, random_state=seed) if len(rows) > max_rows else rows
    cols = [c for c in model.spec.columns if c in rows.columns]
    out = rows[["event_timestamp", *cols, LABEL, IN_SAMPLE]].copy()
    out["prediction"] = model.predict_proba(rows)
    return out.reset_index(drop=True)


@dataclass
class TrainResult:
    model: ScoringModel | LinearScoringModel
    split: Split
    metrics: dict[str, float]
    test_scores: dict[str, np.ndarray]
    selection: Selection
    spec: ModelSpec
    baselines: dict[str, Any] = field(default_factory=dict)


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
        worst = max(beaten, key=lambda b: beaten[b])
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
    fitted: dict[str, ScoringModel | LinearScoringModel] = {}
    for cand in spec.candidates:
        if cand == "xgboost":
            fitted[cand] = fit_xgboost(split.train, split.valid, features, seed, params, spec.constraints,
                                       spec.name, callbacks)
        elif cand == "xgboost_unconstrained":
            fitted[cand] = fit_xgboost(split.train, split.valid, features, seed, params, {}, spec.name, callbacks)
    baselines: dict[str, Any] = {}
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
    return TrainResult(model, split, metrics, scores, selection, spec, baselines)


@dataclass
class TrainingResult:
    """Everything one training produced, before anything is recorded: ``train``'s output, the input of
    ``recording.record``. Metrics are the run's (the chosen model's, the other candidates' and baselines',
    the truth's where known, the model's own extras); figures are ``plots/<name>.png``."""

    spec: ModelSpec
    seed: int
    fit: TrainResult  # the split, the chosen model, the selection, the baselines, test scores
    model: object  # what is logged and registered: the chosen model, or the model's step built on it (chs)
    metrics: dict[str, float]
    params: dict[str, object]
    scores: dict[str, np.ndarray]  # test-window scores per model (and "truth" where known)
    figures: dict[str, object]
    documents: dict[str, dict]  # artifact file -> JSON content
    reference: pd.DataFrame  # the drift reference (``reference_frame``)
    example: pd.DataFrame  # the logged model's input example
    empty_features: list[str]  # feature columns empty in every training row, left out
    frame: pd.DataFrame  # the training set (the run's dataset input)
    feature_service: str
    data_window: str
    details: dict[str, object] = field(default_factory=dict)  # the model's own facts (lead_match: "assignment")

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def split(self) -> Split:
        return self.fit.split

    @property
    def selection(self) -> Selection:
        return self.fit.selection

    @property
    def registrable(self) -> bool:
        return self.fit.selection.registrable

    def selection_rows(self) -> list[dict]:
        """One row per model fitted: role, validation and test ROC-AUC, whether chosen."""
        fit, sel, m = self.fit, self.fit.selection, self.metrics
        return [{"model": n, "role": "baseline" if n in fit.baselines and n not in self.spec.candidates
                 else "candidate", "valid_roc_auc": auc,
                 "test_roc_auc": m.get("test_roc_auc") if n == sel.chosen else
                 m.get(f"candidate_{n}_test_roc_auc", m.get(f"baseline_{n}_test_roc_auc")),
                 "chosen": n == sel.chosen} for n, auc in sel.valid_auc.items()]


def _xgb_params(model) -> dict:
    booster = getattr(model, "booster", None)  # a logistic regression has none
    held = booster.get_params() if booster is not None else {}
    return {f"xgb_{k}": held[k] for k in held if k in ("n_estimators", "learning_rate", "max_depth",
                                                        "min_child_weight", "subsample", "colsample_bytree",
                                                        "reg_lambda", "reg_alpha")}


def train(spec: ModelSpec, frame: pd.DataFrame, feature_columns: list[str], seed: int = 42,
          params: dict | None = None, inputs: TrainingInputs | None = None, *, feature_service: str | None = None,
          data_window: str | None = None) -> TrainingResult:
    """The training step, from frames in to a ``TrainingResult`` out: fit and select
    (``fit_and_evaluate``), the model's own step (``model_steps``), the truth's metrics, the plots, the
    drift reference. No MLflow; what it reads besides ``frame`` comes in ``inputs``
    (``model_steps.TrainingInputs``, gathered at the edge by ``model_steps.read_inputs``)."""
    from training import model_steps, plots

    inputs = inputs or model_steps.TrainingInputs()
    fit = fit_and_evaluate(spec, frame, feature_columns, seed, params)
    split, chosen = fit.split, fit.selection.chosen
    extras = model_steps.steps_for(spec.name).extend(fit, inputs.model, seed, params)
    model = extras.model if extras.model is not None else fit.model

    metrics = {**fit.metrics, **extras.metrics}
    scores = dict(fit.test_scores)
    y_test = split.test[LABEL].to_numpy()
    oracle = inputs.truth(split.test) if inputs.truth is not None else None
    if oracle is not None:
        from sklearn.metrics import roc_auc_score

        metrics["oracle_test_roc_auc"] = float(roc_auc_score(y_test, oracle))
        metrics["test_auc_vs_oracle"] = metrics["test_roc_auc"] / metrics["oracle_test_roc_auc"]
        scores["truth"] = oracle

    dropped = [c for c in feature_columns if c not in fit.model.spec.columns and c not in NOT_FEATURES]
    run_params = {"candidates": ",".join(spec.candidates),
                  **({"empty_features": ",".join(dropped)[:500]} if dropped else {}),
                  **extras.params,
                  "seed": seed, "feature_service": feature_service or spec.feature_service,
                  "n_features": len(model.spec.columns), "rows": len(frame), "horizon_days": spec.horizon_days,
                  "label_kind": spec.label.kind, **split.windows(), **_xgb_params(fit.model)}
    figures = {"roc_pr": plots.roc_pr_curves(y_test, scores), "calibration": plots.calibration(y_test, scores),
               "score_distribution": plots.score_distribution(y_test, scores[chosen]), **extras.figures,
               "shap_summary": plots.contribution_summary(model.contributions(split.test), split.test)}
    documents = {**extras.documents, "feature_spec.json": model.spec.to_dict(),
                 "model_spec.json": spec.model_dump(mode="json")}
    example = split.test[model.spec.columns + [c for c in feature_columns if c not in model.spec.columns]]
    if data_window is None:
        data_window = f"{frame['event_timestamp'].min():%Y-%m-%d}..{frame['event_timestamp'].max():%Y-%m-%d}"
    return TrainingResult(spec, seed, fit, model, metrics, run_params, scores, figures, documents,
                          reference_frame(model, split, seed), example, dropped, frame,
                          feature_service or spec.feature_service, data_window, extras.details)


def _report(result: TrainingResult, log: Callable[[str], None]) -> None:
    """What the training step found, for the console: the split, the models compared, the columns left out."""
    name, split = result.name, result.split
    log(f"{name}: split {split.method} ({split.note}): {len(split.train):,} / {len(split.valid):,} / "
        f"{len(split.test):,} rows train / valid / test")
    for r in result.selection_rows():
        log(f"{name}:   {r['role']:<9} {r['model']:<22} valid ROC-AUC {r['valid_roc_auc']:.4f}"
            + ("  <- chosen" if r["chosen"] else ""))
    for note in result.selection.notes:
        log(f"{name}: note: {note}")
    if result.empty_features:
        log(f"{name}: left out, empty in every training row: {', '.join(result.empty_features)}")


def run(settings: Settings, name: str, seed: int = 42, params: dict | None = None, raw_dir: Path | None = None,
        register: bool = True, log: Callable[[str], None] = print, training_set=None,
        force_alias: str | None = None, spec: ModelSpec | None = None) -> dict:
    """Build the training set through Feast, train (``train``), record the run in MLflow
    (``recording.record``), register and alias the model (``recording.register``), describe them.

    The MLflow run opens before the training step, so a step that fails leaves a FAILED run.
    """
    from features.training_sets import build_training_set
    from training import engine, model_steps, recording, tracking

    mlflow = tracking.configure(settings)
    raw_dir = Path(raw_dir or settings.export_dir)
    spec = spec or settings.spec(name, raw_dir)
    log(f"{name}: building the point-in-time training set through Feast (export {raw_dir})")
    ts = training_set or build_training_set(settings, name, raw_dir=raw_dir, spec=spec)
    if ts.export_end is not None:
        log(f"{name}: {len(ts.frame):,} observations; outcome windows of {spec.horizon_days} days complete by "
            f"the export end {ts.export_end.describe()}")
    tracking.use_experiment(settings, spec.experiment)
    # A dask session the caller already opened (a benchmark, a test) is reused, not started again.
    opened = engine.current()
    session = (contextlib.nullcontext(opened) if opened.name == settings.train_engine == "dask"
               else engine.session(settings))
    with mlflow.start_run(run_name=f"{name}-train"), session as eng:
        recording.start(name, seed, eng)
        log(f"{name}: training engine {eng.name} ({eng.cluster})")
        inputs = model_steps.read_inputs(settings, spec, raw_dir)
        log(f"{name}: fitting {', '.join(spec.candidates)} and baselines on {len(ts.frame):,} rows")
        result = train(spec, ts.frame, ts.feature_columns, seed, params, inputs, feature_service=ts.feature_service,
                       data_window=f"{ts.start:%Y-%m-%d}..{ts.end:%Y-%m-%d}")
        _report(result, log)
        if register and not result.registrable:
            log(f"[red]{name}: NOT registered: {result.selection.reason}[/red]")
        recorded = recording.record(result, settings.reports_dir / "training" / name)
        registration = recording.register(settings, result, recorded, register, force_alias)
        summary = recording.summary(result, recorded, registration)
        recording.describe(settings, result, summary, registration, register)
    metrics = result.metrics
    log(f"{name}: test ROC-AUC {metrics['test_roc_auc']:.3f} ({result.selection.chosen})"
        + (f" (truth {metrics['oracle_test_roc_auc']:.3f})" if "oracle_test_roc_auc" in metrics else "")
        + (f"; registered version {summary['version']} as {summary['alias']}" if summary["registered"]
           else "; not registered"))
    return summary
