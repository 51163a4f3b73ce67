"""Classification metrics shared by every model, the sandbox and drift (pure functions)."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

EPS = 1e-6


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Mean |observed rate - mean prediction| over equal-width bins, weighted by bin size."""
    y, p = np.asarray(y, float), np.asarray(p, float)
    idx = np.clip((p * bins).astype(int), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            total += mask.sum() * abs(y[mask].mean() - p[mask].mean())
    return float(total / len(y))


def top_fraction(y: np.ndarray, p: np.ndarray, fraction: float = 0.1) -> tuple[float, float]:
    """Precision among the top ``fraction`` scores, and its lift over the base rate."""
    y, p = np.asarray(y, float), np.asarray(p, float)
    k = max(1, int(round(len(p) * fraction)))
    top = np.argsort(-p, kind="stable")[:k]
    precision = float(y[top].mean())
    base = float(y.mean())
    return precision, (precision / base if base > 0 else float("nan"))


def classification_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    y = np.asarray(y, int)
    p = np.clip(np.asarray(p, float), EPS, 1 - EPS)
    both = len(np.unique(y)) == 2
    precision, lift = top_fraction(y, p)
    return {
        "roc_auc": float(skm.roc_auc_score(y, p)) if both else float("nan"),
        "pr_auc": float(skm.average_precision_score(y, p)) if both else float("nan"),
        "log_loss": float(skm.log_loss(y, p, labels=[0, 1])),
        "brier": float(skm.brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p),
        "precision_top10": precision,
        "lift_top10": lift,
        "positive_rate": float(y.mean()),
        "rows": float(len(y)),
    }
