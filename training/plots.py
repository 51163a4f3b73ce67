"""Evaluation figures (matplotlib, headless).  Each function returns a Figure to log or save."""

from __future__ import annotations

import numpy as np
import pandas as pd


def pyplot():
    """matplotlib.pyplot on the headless Agg backend, imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def roc_pr_curves(y: np.ndarray, scores: dict[str, np.ndarray]):
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, p in scores.items():
        fpr, tpr, _ = roc_curve(y, p)
        ax1.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, p):.3f})")
        prec, rec, _ = precision_recall_curve(y, p)
        ax2.plot(rec, prec, label=f"{name} (AP {average_precision_score(y, p):.3f})")
    ax1.plot([0, 1], [0, 1], ls=":", c="grey")
    ax1.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test window)")
    ax2.axhline(np.mean(y), ls=":", c="grey")
    ax2.set(xlabel="recall", ylabel="precision", title="Precision-recall (test window)")
    for ax in (ax1, ax2):
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def calibration(y: np.ndarray, scores: dict[str, np.ndarray], bins: int = 10):
    from sklearn.calibration import calibration_curve

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, p in scores.items():
        frac, mean = calibration_curve(y, p, n_bins=bins, strategy="quantile")
        ax.plot(mean, frac, marker="o", label=name)
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.set(xlabel="mean predicted probability", ylabel="observed rate", title="Calibration (test window)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def score_distribution(y: np.ndarray, p: np.ndarray):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0, 1, 41)
    ax.hist(p[y == 0], bins=bins, alpha=0.6, label="negative", density=True)
    ax.hist(p[y == 1], bins=bins, alpha=0.6, label="positive", density=True)
    ax.set(xlabel="predicted probability", ylabel="density", title="Score distribution by outcome")
    ax.legend()
    fig.tight_layout()
    return fig


def contribution_summary(contrib: pd.DataFrame, x: pd.DataFrame, top: int = 20):
    """SHAP-style summary from TreeSHAP contributions: mean |contribution| and a beeswarm."""
    plt = pyplot()
    contrib = contrib.drop(columns=["bias"], errors="ignore")
    order = contrib.abs().mean().sort_values(ascending=True).tail(top)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 0.35 * len(order) + 1.5), sharey=True)
    ax1.barh(order.index, order.values)
    ax1.set(xlabel="mean |contribution| (log-odds)", title="Feature importance (TreeSHAP)")
    rng = np.random.default_rng(0)
    for i, col in enumerate(order.index):
        vals = contrib[col].to_numpy()
        raw = pd.to_numeric(x[col], errors="coerce") if col in x else pd.Series(np.nan, index=x.index)
        colour = raw.rank(pct=True).fillna(0.5).to_numpy()
        ax2.scatter(vals, i + rng.uniform(-0.3, 0.3, len(vals)), c=colour, cmap="coolwarm", s=4, alpha=0.6)
    ax2.axvline(0, c="grey", lw=0.5)
    ax2.set(xlabel="contribution (log-odds); colour: feature value low->high", title="Per-row contributions")
    fig.tight_layout()
    return fig


def policy_comparison(totals: dict[str, dict[str, float]]):
    """Expected conversions and load balance of each assignment policy on held-out batches."""
    plt = pyplot()
    names = list(totals)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.bar(names, [totals[n]["expected_conversions"] for n in names])
    ax1.set(ylabel="expected conversions (model p)", title="Held-out weekly batches")
    ax2.bar(names, [totals[n]["load_ratio_std"] for n in names])
    ax2.set(ylabel="std of rep load ratio (lower = more even)", title="First-touch load balance")
    fig.tight_layout()
    return fig
