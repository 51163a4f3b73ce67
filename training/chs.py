"""Customer Health Score: layer sub-scores, weights, warning levels, attribution.

- Each layer (contract, behaviour, relationship) has its own monotone XGBoost churn model on
  that layer's features only; its sub-score is ``100 * sigmoid(-(logit p_layer - logit base))``:
  50 means the average account's risk, higher is healthier.
- CHS = sum of weights x sub-scores, weights non-negative and summing to 1 (recalibrated each
  quarter, see training/recalibration.py).
- The churn probability comes from the full model on all layers.
- A change between two dates is split exactly by layer (w_l x change of sub-score l) and,
  within a layer, across features in proportion to their TreeSHAP contribution changes.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import pandas as pd

from training.chs_text import MATERIAL, Attribution, change_texts, round_like_python
from training.chs_text import layer_drivers as _layer_drivers
from training.data import FeatureSpec, prepare_features
from training.drivers import driver_columns, driver_effects, driver_effects_of
from training.models import LinearScoringModel, ScoringModel, fit_xgboost

LAYERS = ("contract", "behaviour", "relationship")
_LAST = threading.local()  # HealthModel._inputs: per thread, the last frame's prepared inputs
DEFAULT_LEVELS = {"green": 65.0, "yellow": 50.0, "orange": 35.0}  # score >= threshold -> level


def layer_features(columns: list[str], custom=None) -> dict[str, list[str]]:
    """CHS layer -> the model's feature columns it reads (custom columns by their table's view)."""
    from features.definitions import layer_of

    return layer_of(columns, custom)


def _logit(p):
    p = np.clip(np.asarray(p, float), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def level_of(score: float, thresholds: dict[str, float] = DEFAULT_LEVELS) -> str:
    for name in ("green", "yellow", "orange"):
        if score >= thresholds[name]:
            return name
    return "red"


@dataclass
class HealthModel:
    layers: dict[str, ScoringModel]
    full: ScoringModel | LinearScoringModel
    base_logit: float
    weights: dict[str, float]
    thresholds: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_LEVELS))
    weights_version: str = "initial"

    # The registered "chs" model scores churn like any other model; health() adds the CHS.
    @property
    def spec(self) -> FeatureSpec:
        return self.full.spec

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return self.full.predict_proba(frame)

    def contributions(self, frame: pd.DataFrame) -> pd.DataFrame:
        return self.full.contributions(frame)

    def layer_scores(self, frame: pd.DataFrame, prepared: bool = False) -> pd.DataFrame:
        out = pd.DataFrame(index=frame.index)
        numeric_only = prepared and not any(m.spec.categorical for m in self.layers.values())
        if numeric_only:  # one float matrix, each layer scores its own columns of it
            matrix, pos = frame.to_numpy(np.float64), {c: i for i, c in enumerate(frame.columns)}
        for name, model in self.layers.items():
            if numeric_only:
                p = model.predict_matrix(matrix[:, [pos[c] for c in model.spec.columns]])
            else:
                p = model.predict_proba(frame, prepared)
            z = _logit(p)
            out[name] = 100.0 / (1.0 + np.exp(z - self.base_logit))
        return out

    def score(self, frame: pd.DataFrame, weights: dict[str, float] | None = None) -> np.ndarray:
        w = weights or self.weights
        subs = self.layer_scores(frame)
        return sum(w[name] * subs[name].to_numpy() for name in self.layers)

    def health(self, frame: pd.DataFrame, top: int = 3) -> list[dict]:
        """What serving calls: score, level, layers, churn probability, drivers, early warning."""
        x = prepare_features(frame, self.full.spec)  # once; every layer reads a subset of it
        subs = self.layer_scores(x, prepared=True)
        scores = sum(self.weights[n] * subs[n].to_numpy() for n in self.layers)
        churn = self.full.predict_proba(x, prepared=True)
        drivers = driver_effects(self.full.contributions(x, prepared=True).drop(columns="bias"), top)
        ew = frame["early_warning"].to_numpy() if "early_warning" in frame else [None] * len(frame)
        return self._answers(scores, subs[list(self.layers)].to_numpy(), churn, drivers, ew)

    # --- numpy input (``training.data.feature_matrix`` in ``spec.columns`` order): serving's request path --
    @property
    def matrix_ready(self) -> bool:
        return self.full.matrix_ready and all(m.matrix_ready for m in self.layers.values())

    def health_codes(self, x: np.ndarray, early_warning=None, top: int = 3) -> list[dict]:
        """``health`` of a feature matrix: the same answers, without a frame. ``early_warning``: the
        rows' flags (None where unknown)."""
        pos = {c: i for i, c in enumerate(self.full.spec.columns)}
        subs = np.column_stack([
            100.0 / (1.0 + np.exp(_logit(m.predict_codes(x[:, [pos[c] for c in m.spec.columns]])) - self.base_logit))
            for m in self.layers.values()])
        scores = sum(self.weights[n] * subs[:, k] for k, n in enumerate(self.layers))
        churn = self.full.predict_codes(x)
        drivers = driver_effects_of(self.full.contributions_codes(x), self.full.spec.columns, top)
        ew = early_warning if early_warning is not None else [None] * len(x)
        return self._answers(scores, subs, churn, drivers, ew)

    def _answers(self, scores, layer_arr: np.ndarray, churn, drivers: list, ew) -> list[dict]:
        out = []
        for i in range(len(layer_arr)):
            level = level_of(scores[i], self.thresholds)
            out.append({
                "score": round(float(scores[i]), 2), "level": level,
                "layers": {n: round(float(layer_arr[i, k]), 2) for k, n in enumerate(self.layers)},
                "churn_probability": float(churn[i]),
                "early_warning": bool(ew[i] == 1) if ew[i] is not None and pd.notna(ew[i]) else None,
                "drivers": drivers[i],
                "weights_version": self.weights_version,
            })
        return out

    def attribute_change(self, before: pd.Series, after: pd.Series, top: int = 2) -> dict:
        """Split CHS(after) - CHS(before) by layer, and each layer's part across its features."""
        return self.attribute_change_rows(pd.DataFrame([before]), pd.DataFrame([after]), top)[0][0]

    def attribute_change_rows(self, before: pd.DataFrame, after: pd.DataFrame, top: int = 2
                              ) -> tuple[list[dict], np.ndarray]:
        """``attribute_change`` of every row pair at once (row i of ``before`` with row i of ``after``),
        and the CHS of each ``before`` row rounded as ``health`` rounds it: one pass over the models
        for a request's accounts, not one per account."""
        one = self._attribution(before, after, top, every_layer=True)
        out = []
        for i in range(len(after)):
            layers = {}
            for k, name in enumerate(one.layers):
                drivers = [{"feature": d.feature, "points": d.points, "before": d.before, "after": d.after,
                            "change_pct": d.change_pct} for d in one.drivers(k, i)]
                layers[name] = {"points": float(one.points[i, k]), "drivers": drivers}
            total = float(one.total[i])
            out.append({"change": total, "layers": layers, "text": explain(total, layers)})
        return out, cast(np.ndarray, one.before)

    def attribute_changes(self, before: pd.DataFrame, after: pd.DataFrame, top: int = 2) -> pd.DataFrame:
        """``attribute_change`` for many rows at once (row i of ``before`` pairs with row i of
        ``after``): ``change_points``, ``change_<layer>`` per layer, ``change_text`` and
        ``before_score`` (the CHS of ``before``, rounded as ``health`` rounds it), indexed like
        ``after``. The same numbers and text as the per-row call, without a Python loop over rows:
        the drivers are worked out only where the text shows them (layers moved >= 0.05 points)."""
        parts = self._attribution(before, after, top, every_layer=False)
        out = pd.DataFrame({"change_points": parts.total}, index=after.index)
        for k, name in enumerate(parts.layers):
            out[f"change_{name}"] = parts.points[:, k]
        out["change_text"] = change_texts(parts)
        out["before_score"] = parts.before
        return out

    def _attribution(self, before: pd.DataFrame, after: pd.DataFrame, top: int, every_layer: bool) -> Attribution:
        if len(before) != len(after):
            raise ValueError(f"attribute_changes: before has {len(before)} rows and after {len(after)}; "
                             "rows pair by position")
        xb, sub_b = self._inputs(before)
        xa, sub_a = self._inputs(after)
        names = list(self.layers)
        # the same additions in the same order as score(): the totals match it to the bit
        score_b = sum(self.weights[n] * sub_b[:, k] for k, n in enumerate(names))
        total = sum(self.weights[n] * sub_a[:, k] for k, n in enumerate(names)) - score_b
        delta = np.column_stack([self.weights[n] * (sub_a[:, k] - sub_b[:, k]) for k, n in enumerate(names)])
        points = round_like_python(delta, 2)
        found = []
        for k, model in enumerate(self.layers.values()):
            rows = np.arange(len(after)) if every_layer else np.flatnonzero(np.abs(points[:, k]) >= MATERIAL)
            found.append(_layer_drivers(model, xb, xa, rows, delta[:, k], top))
        return Attribution(names, round_like_python(total, 2), points, found, round_like_python(score_b, 2))

    def _inputs(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        """(prepared features, layer sub-scores as a rows x layers array) of ``frame``. The last one of
        each thread is kept by weak reference: a scoring run asks for the change and then the health
        of one frame."""
        last = getattr(_LAST, "inputs", None)
        if last is not None and last[0]() is self and last[1]() is frame:
            return last[2], last[3]
        x = prepare_features(frame, self.full.spec)
        subs = self.layer_scores(x, prepared=True)[list(self.layers)].to_numpy()
        _LAST.inputs = (weakref.ref(self), weakref.ref(frame), x, subs)
        return x, subs

    def health_frame(self, frame: pd.DataFrame, top: int = 3) -> pd.DataFrame:
        """``health`` for many rows as one frame indexed like ``frame``: score, level,
        churn_probability, layer_<name> for every CHS layer (NaN where the model has no such layer),
        early_warning, driver_<k> / driver_<k>_effect (k = 1..top; empty where fewer features raise
        the risk) and weights_version. The same numbers as ``health`` to the last digit shown."""
        from training import treeshap

        x, subs = self._inputs(frame)
        score = sum(self.weights[n] * subs[:, k] for k, n in enumerate(self.layers))
        t = self.thresholds
        out = pd.DataFrame({
            "score": round_like_python(score, 2),
            "level": np.select([score >= t["green"], score >= t["yellow"], score >= t["orange"]],
                               ["green", "yellow", "orange"], "red").astype(object),
            "churn_probability": np.asarray(self.full.predict_proba(x, prepared=True), dtype=np.float64),
        }, index=frame.index)
        for name in LAYERS:
            k = list(self.layers).index(name) if name in self.layers else None
            out[f"layer_{name}"] = round_like_python(subs[:, k], 2) if k is not None else np.nan
        ew = (pd.to_numeric(frame["early_warning"], errors="coerce").to_numpy(np.float64)
              if "early_warning" in frame else np.full(len(frame), np.nan))
        out["early_warning"] = pd.array(np.where(np.isnan(ew), None, ew == 1), dtype="boolean")
        for name, column in driver_columns(treeshap.contributions(self.full, x), self.full.spec.columns, top).items():
            out[name] = column
        out["weights_version"] = self.weights_version
        _LAST.inputs = None  # the frame is scored: keep no chunk of features alive after the run
        return out


def explain(total: float, layers: dict) -> str:
    """'CHS -2.1: behaviour -1.7 (api_calls -40%), relationship -0.4'."""
    parts = []
    for name, info in sorted(layers.items(), key=lambda kv: -abs(kv[1]["points"])):
        if abs(info["points"]) < 0.05:
            continue
        why = ", ".join(f"{d['feature']} {d['change_pct']:+.0f}%" if d["change_pct"] is not None
                        else d["feature"] for d in info["drivers"])
        parts.append(f"{name} {info['points']:+.1f}" + (f" ({why})" if why else ""))
    return f"CHS {total:+.1f}: " + (", ".join(parts) if parts else "no material change")


def fit_weights(subs: pd.DataFrame, y: np.ndarray) -> dict[str, float]:
    """Non-negative weights summing to 1 that make CHS most predictive of the outcome.

    Maximum likelihood of P(y) = sigmoid(a - b * CHS) with the weights on the simplex
    (softmax parametrisation), b >= 0 so a higher score always means lower risk.
    """
    from scipy.optimize import minimize

    names = [n for n in LAYERS if n in subs.columns]
    k = len(names)
    x = subs[names].to_numpy() / 100.0
    y = np.asarray(y, float)

    def loss(theta):
        w = np.exp(theta[:k] - theta[:k].max())
        w /= w.sum()
        z = theta[k] - np.exp(theta[k + 1]) * (x @ w)
        return float(np.mean(np.logaddexp(0, z) - y * z))

    best = minimize(loss, np.array([0.0] * k + [0, 1.0]), method="L-BFGS-B")
    w = np.exp(best.x[:k] - best.x[:k].max())
    w /= w.sum()
    return {name: float(round(v, 4)) for name, v in zip(names, w)}


def fit_health_model(train: pd.DataFrame, valid: pd.DataFrame, full: ScoringModel | LinearScoringModel, seed: int,
                     params: dict | None = None, monotone: dict[str, int] | None = None,
                     custom=None) -> HealthModel:
    """One monotone model per layer the export has (a layer without features is left out and the
    weights are fitted over the others), weights fitted on the validation window.

    Layer models keep the spec's monotone constraints whatever the full model is, so the score's
    guarantees (more usage or better SLA never lowers it) hold for every chosen full model.
    """
    feats = layer_features(full.spec.columns, custom)
    layers = {}
    for name in LAYERS:
        numeric = [c for c in feats[name] if c in full.spec.numeric]
        cats = {c: v for c, v in full.spec.categorical.items() if c in feats[name]}
        if not numeric and not cats:
            continue
        layers[name] = fit_xgboost(train, valid, FeatureSpec(numeric, cats), seed, params, monotone or {},
                                   f"chs_{name}")
    if not layers:
        raise ValueError("no CHS layer has a feature: the export feeds none of contract, behaviour, relationship")
    base = float(_logit(train["label"].mean()))
    model = HealthModel(layers, full, base, {n: 1 / len(layers) for n in layers})
    model.weights = fit_weights(model.layer_scores(valid), valid["label"].to_numpy())
    return model


def warning_metrics(scores: np.ndarray, y: np.ndarray, thresholds: dict[str, float] = DEFAULT_LEVELS) -> dict:
    """How well the levels warn: precision/recall of orange+red, and outcome rate per level."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y, int)
    levels = np.array([level_of(s, thresholds) for s in scores])
    warn = np.isin(levels, ["orange", "red"])
    out = {"chs_roc_auc": float(roc_auc_score(y, -scores)) if len(np.unique(y)) == 2 else float("nan"),
           "warning_precision": float(y[warn].mean()) if warn.any() else float("nan"),
           "warning_recall": float(warn[y == 1].mean()) if (y == 1).any() else float("nan"),
           "warning_share": float(warn.mean())}
    for name in ("green", "yellow", "orange", "red"):
        m = levels == name
        out[f"share_{name}"] = float(m.mean())
        out[f"outcome_rate_{name}"] = float(y[m].mean()) if m.any() else float("nan")
    return out
