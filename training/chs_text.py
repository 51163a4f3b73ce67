"""The CHS change attribution for many rows at once: per-layer drivers and the change texts.

``HealthModel.attribute_change`` (one row) and ``attribute_changes`` (a million) both go through
``HealthModel._attribution`` and these helpers, so the rule exists once; the text reads like
``training.chs.explain`` ("CHS -2.1: behaviour -1.7 (api_calls -40%), relationship -0.4").

Numbers are rounded and formatted exactly as Python's ``round`` and ``format`` do for each value
(numpy's ``round`` differs near halves), and the driver shares are computed in float32, as pandas
computed them from XGBoost's float32 contributions, so a text built here equals the per-row text.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

MATERIAL = 0.05  # points: a layer or driver below this is not worth a word


def round_like_python(values, digits: int) -> np.ndarray:
    """``round(v, digits)`` for each value. numpy's rint(v * 10**d) / 10**d agrees except where the
    scaled value lies within rounding error of a half (2.675 -> 2.67 in Python, whose decimal
    rounding sees the exact binary value); those few are rounded by Python."""
    values = np.asarray(values, dtype=np.float64)
    out = np.round(values, digits)
    scaled = np.abs(values * 10.0 ** digits)
    with np.errstate(invalid="ignore"):
        near = np.abs(scaled - np.floor(scaled) - 0.5) < 1e-6
    if near.any():
        out[near] = [round(float(v), digits) for v in values[near]]
    return out


@dataclass
class Driver:
    feature: str
    points: float
    before: float | None
    after: float | None
    change_pct: float | None


@dataclass
class LayerDrivers:
    """A layer's largest feature shares for the rows ``rows`` (positions); -1 / NaN: not shown."""

    names: list[str]
    rows: np.ndarray
    feature: np.ndarray  # (rows, top) column index into names
    points: np.ndarray  # (rows, top) rounded to 2
    before: np.ndarray
    after: np.ndarray
    change_pct: np.ndarray  # rounded to 1; NaN where not computable (missing value, before == 0)


@dataclass
class Attribution:
    layers: list[str]
    total: np.ndarray  # (rows,) rounded to 2
    points: np.ndarray  # (rows, layers) rounded to 2
    found: list[LayerDrivers]
    before: np.ndarray | None = None  # (rows,) CHS of the earlier frame, rounded to 2

    def drivers(self, layer: int, row: int) -> list[Driver]:
        d = self.found[layer]
        at = np.flatnonzero(d.rows == row)
        if not len(at):
            return []
        i = at[0]
        out = []
        for j in range(d.feature.shape[1]):
            if d.feature[i, j] < 0:
                break
            out.append(Driver(d.names[d.feature[i, j]], float(d.points[i, j]), _none(d.before[i, j]),
                              _none(d.after[i, j]), _none(d.change_pct[i, j])))
        return out


def _none(v: float) -> float | None:
    return None if np.isnan(v) else float(v)


def layer_drivers(model, xb: pd.DataFrame, xa: pd.DataFrame, rows: np.ndarray, delta: np.ndarray,
                  top: int) -> LayerDrivers:
    """A layer's points ``delta`` (all rows) split across its features in proportion to their TreeSHAP
    contribution changes, for the rows ``rows``; the ``top`` largest shares of at least MATERIAL."""
    from training import treeshap
    from training.drivers import top_k

    names = list(model.spec.columns)
    m, k = len(rows), len(names)
    feature = np.full((m, top), -1, dtype=np.int64)
    blank = np.full((m, top), np.nan)
    if m == 0 or k == 0:
        return LayerDrivers(names, rows, feature, blank, blank.copy(), blank.copy(), blank.copy())
    dc = treeshap.contributions(model, xa, rows) - treeshap.contributions(model, xb, rows)
    dz = dc.sum(axis=1)
    ok = np.abs(dz.astype(np.float64)) > 1e-12
    # float32 throughout, as pandas divided the float32 contributions by Python floats
    share = np.where(ok[:, None], dc / np.where(ok, dz, 1)[:, None] * delta[rows].astype(dc.dtype)[:, None],
                     dc * 0)
    order = top_k(np.abs(share), top)
    part = np.take_along_axis(share, order, axis=1)
    # drivers are a prefix: shares are sorted by size, so once one is too small the rest are too
    shown = np.cumprod(np.abs(part) >= MATERIAL, axis=1).astype(bool)
    feature[:, :order.shape[1]] = np.where(shown, order, -1)
    points = blank.copy()
    points[:, :order.shape[1]] = np.where(shown, round_like_python(part.astype(np.float64), 2), np.nan)
    numeric = np.array([c not in model.spec.categorical for c in names])
    vb = np.full((m, k), np.nan)
    va = np.full((m, k), np.nan)
    vb[:, numeric] = xb[[c for c, n in zip(names, numeric) if n]].to_numpy(np.float64)[rows]
    va[:, numeric] = xa[[c for c, n in zip(names, numeric) if n]].to_numpy(np.float64)[rows]
    safe = np.clip(feature, 0, None)
    before = np.where(feature >= 0, np.take_along_axis(vb, safe, axis=1), np.nan)
    after = np.where(feature >= 0, np.take_along_axis(va, safe, axis=1), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        pct = np.where(before != 0, 100.0 * (after - before) / np.abs(before), np.nan)
    return LayerDrivers(names, rows, feature, points, before, after, round_like_python(pct, 1))


def change_texts(attr: Attribution) -> np.ndarray:
    """``explain``'s text for every row, as an object array. Built piece by piece for all rows at
    once: each piece (a layer's name, its points, a driver, its change) is looked up from a small
    table of the distinct strings, as fixed-width bytes, and the rows are joined in one pass."""
    n, n_layers = attr.points.shape
    moved = np.abs(attr.points) >= MATERIAL
    order = np.argsort(-np.abs(attr.points), axis=1, kind="stable")  # biggest move first, ties by layer
    top = max((d.feature.shape[1] for d in attr.found), default=0)
    names = [f for d in attr.found for f in d.names]
    offset = np.cumsum([0] + [len(d.names) for d in attr.found])
    feature = np.full((n_layers, top, n), -1, dtype=np.int64)  # index into names; -1: no driver
    pct = np.full((n_layers, top, n), np.nan)
    for k, d in enumerate(attr.found):
        if len(d.rows):
            feature[k][:, d.rows] = np.where(d.feature >= 0, d.feature + offset[k], -1).T
            pct[k][:, d.rows] = d.change_pct.T
    rows = np.arange(n)
    text = _Pieces(n)
    text.add(*_formatted(attr.total, "CHS {:+.1f}: "))
    for p in range(n_layers):  # the moved layers sort first: ", " goes before every one but the first
        layer = order[:, p]
        shown = moved[rows, layer]
        text.add([f"{', ' if p else ''}{name} " for name in attr.layers], layer, shown)
        text.add(*_formatted(attr.points[rows, layer], "{:+.1f}"), shown)
        for j in range(top):
            f = feature[layer, j, rows]
            has = shown & (f >= 0)
            text.add([(" (" if j == 0 else ", ") + name for name in names], np.clip(f, 0, None), has)
            v = pct[layer, j, rows]
            known = has & ~np.isnan(v)
            text.add(*_formatted(np.where(known, v, 0.0), " {:+.0f}%"), known)
        if top:
            text.add([")"], np.zeros(n, dtype=np.int64), shown & (feature[layer, 0, rows] >= 0))
    text.add(["no material change"], np.zeros(n, dtype=np.int64), ~moved.any(axis=1))
    return text.join()


def _formatted(values: np.ndarray, template: str) -> tuple[list[str], np.ndarray]:
    """(the distinct values written with ``template``, each row's index into them). Distinct by bit
    pattern: -0.0 stays apart from 0.0, as Python writes it '-0.0'."""
    v = np.ascontiguousarray(values, dtype=np.float64)
    codes, uniques = pd.factorize(v.view(np.int64))
    return [template.format(float(u)) for u in np.asarray(uniques).view(np.float64)], codes


class _Pieces:
    """Rows of text assembled piece by piece: each piece is a small table of distinct strings as
    fixed-width, zero-padded UTF-8 bytes, and each row picks one (or none); ``join`` drops the padding
    and splits the rows in one pass over the bytes (a zero byte never occurs inside UTF-8 text)."""

    def __init__(self, n: int):
        self.n = n
        self.blocks: list[np.ndarray] = []

    def add(self, strings: list[str], index: np.ndarray, where: np.ndarray | None = None) -> None:
        encoded = [s.encode() for s in strings]
        width = max((len(e) for e in encoded), default=0)
        if not width or not self.n:
            return
        table = np.zeros((len(encoded) + 1, width), dtype=np.uint8)  # row 0: nothing
        for i, e in enumerate(encoded, 1):
            table[i, :len(e)] = np.frombuffer(e, dtype=np.uint8)
        pick = np.asarray(index, dtype=np.int64) + 1
        self.blocks.append(table[pick if where is None else np.where(where, pick, 0)])

    def join(self) -> np.ndarray:
        if not self.n:
            return np.array([], dtype=object)
        ends = np.full((self.n, 1), ord("\n"), dtype=np.uint8)
        data = np.hstack([*self.blocks, ends]).ravel()
        data = data[data != 0].tobytes().decode()
        return np.array(data.split("\n")[:-1], dtype=object)
