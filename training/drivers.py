"""The drivers of a score: per row, the features whose contributions raised it most.

One rule for every place that shows them (``/intent`` and ``/health`` answers, ``HealthModel.health``
and ``health_frame``, the scoring job's driver columns, the reasons of a lead-match proposal and of
``/match``): the ``k`` largest contributions, largest first, the first of equal values winning (as
in a stable sort), and only those above zero; effects are rounded to 4 places as Python's ``round``
rounds them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.chs_text import round_like_python

EFFECT_DIGITS = 4


def top_k(values: np.ndarray, k: int) -> np.ndarray:
    """``np.argsort(-values, axis=1, kind="stable")[:, :k]`` for a small k, by repeated argmax (the
    first of equal values wins, as in a stable sort): sorting every row in full cost more."""
    values = np.asarray(values)
    k = min(k, values.shape[1])
    if not np.isfinite(values).all():  # argmax would pick a NaN first; the sort puts it last
        return np.argsort(-values, axis=1, kind="stable")[:, :k]
    v = values.copy()
    rows = np.arange(len(v))
    out = np.empty((len(v), k), dtype=np.int64)
    for j in range(k):
        out[:, j] = np.argmax(v, axis=1)
        v[rows, out[:, j]] = -np.inf
    return out


def top_drivers(contrib: pd.DataFrame, k: int = 3) -> list[list[tuple[str, float]]]:
    """Per row of ``contrib`` (features as columns, no bias), up to ``k`` (feature, contribution)
    pairs: the features that raised the score most, largest first."""
    return top_drivers_of(contrib.to_numpy(dtype=np.float64), contrib.columns, k)


def top_drivers_of(values: np.ndarray, names, k: int = 3) -> list[list[tuple[str, float]]]:
    """``top_drivers`` of a rows x features array whose columns are ``names``."""
    values = np.asarray(values, dtype=np.float64)
    order = top_k(values, k)
    effect = np.take_along_axis(values, order, axis=1)
    return [[(names[j], float(e)) for j, e in zip(order[r], effect[r]) if e > 0] for r in range(len(values))]


def driver_effects(contrib: pd.DataFrame, k: int = 3) -> list[list[dict]]:
    """``top_drivers`` as the answers show them: ``{"feature": name, "effect": rounded}`` per driver."""
    return driver_effects_of(contrib.to_numpy(dtype=np.float64), contrib.columns, k)


def driver_effects_of(values: np.ndarray, names, k: int = 3) -> list[list[dict]]:
    """``driver_effects`` of a rows x features array whose columns are ``names``."""
    return [[{"feature": f, "effect": round(v, EFFECT_DIGITS)} for f, v in row]
            for row in top_drivers_of(values, names, k)]


def driver_columns(values: np.ndarray, names, k: int = 3) -> dict[str, np.ndarray]:
    """``top_drivers`` of a rows x features array as columns: ``driver_<j>`` (the feature, None where
    fewer than j features raise the score) and ``driver_<j>_effect`` (rounded; NaN there), j = 1..k."""
    names = np.asarray(names, dtype=object)
    order = top_k(values, k)
    effect = np.take_along_axis(values, order, axis=1).astype(np.float64)
    out: dict[str, np.ndarray] = {}
    for j in range(order.shape[1]):
        shown = effect[:, j] > 0
        out[f"driver_{j + 1}"] = np.where(shown, names[order[:, j]], np.full(shown.shape, None, dtype=object))
        out[f"driver_{j + 1}_effect"] = np.where(shown, round_like_python(effect[:, j], EFFECT_DIGITS), np.nan)
    return out
