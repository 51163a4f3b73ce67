"""TreeSHAP contributions for many rows at once, equal to XGBoost's ``pred_contribs`` to the bit.

XGBoost's CPU TreeSHAP cost 45-65 us per row for a 31-tree depth-4 layer model here: a million
accounts would take minutes per model and frame. But one tree's SHAP values for a row depend only
on which side of each of the tree's thresholds the row's values fall: its pattern. A depth-4 tree
has a few hundred possible patterns, so once per model we ask XGBoost for the SHAP values of one
made-up row per pattern (that tree alone) and keep them in a table; scoring a frame is then table
lookups. XGBoost adds its trees' float32 values one tree after the other, and so does this, so
the result is the same to the bit (tests/training/test_chs_attribution.py checks it).

The pattern is cheap: each feature's thresholds over all trees are sorted once per model; a row's
value becomes its rank among them (one ``searchsorted`` per feature and frame); per tree a lookup
table turns that rank into the row's position among the tree's own thresholds on the feature, and
those positions, one per feature the tree splits on, make the pattern number. Missing values get
a position of their own (XGBoost sends them the node's default way). Rows go in blocks that stay in
the CPU cache while every tree adds to them.

Models this does not cover (categorical splits, several trees per round, trees with more than
MAX_PATTERNS patterns, linear models) and small frames go through the model's own ``contributions``.
"""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass

import numpy as np
import pandas as pd

# Below this many rows XGBoost's own TreeSHAP costs less than a pattern pass per tree.
MIN_ROWS = 1000
MAX_PATTERNS = 1 << 16  # per tree: the made-up rows XGBoost explains once per model
BLOCK = 16_384  # rows per block: their ranks and sums stay in cache across the trees
_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass
class _Tree:
    used: np.ndarray  # the columns the tree splits on
    tables: list[np.ndarray]  # per used column: rank among all thresholds -> position x stride (int64)
    phi: np.ndarray  # (used columns, patterns) float32: the tree's SHAP values per pattern


@dataclass
class _Plan:
    thresholds: dict[int, np.ndarray]  # column -> sorted distinct float32 thresholds over all trees
    trees: list[_Tree]


def _plan(booster, n_trees: int, names: list[str]) -> _Plan | None:
    """The first ``n_trees`` trees of a one-tree-per-round numeric model over columns ``names``; None
    when the shortcut does not apply to this booster."""
    import xgboost as xgb

    n_columns = len(names)
    model = json.loads(booster.save_raw("json"))["learner"]["gradient_booster"]
    if model.get("name") != "gbtree":
        return None
    body = model["model"]
    if int(body["gbtree_model_param"].get("num_parallel_tree", "1")) != 1 or any(body["tree_info"]):
        return None
    raw = []
    for tree in body["trees"][:n_trees]:
        split = np.flatnonzero(np.asarray(tree["left_children"]) != -1)
        if any(tree.get("split_type") or [0]):  # categorical splits: not a threshold
            return None
        raw.append((np.asarray(tree["split_indices"], dtype=np.int64)[split],
                    np.asarray(tree["split_conditions"], dtype=np.float32)[split]))
    every: dict[int, list] = {}
    for feats, conds in raw:
        for f, c in zip(feats, conds):
            every.setdefault(int(f), []).append(c)
    thresholds = {f: np.unique(np.asarray(c, dtype=np.float32)) for f, c in every.items()}
    trees = []
    for t, (feats, conds) in enumerate(raw):
        used = np.unique(feats)
        tables, stride, rows = [], 1, []
        for f in used:
            mine = np.unique(conds[feats == f])
            everyone = thresholds[int(f)]
            # rank g (g thresholds <= value) -> how many of this tree's thresholds are <= value;
            # rank len+1 is "missing", a position of its own
            pos = np.concatenate([[0], np.searchsorted(mine, everyone, side="right"), [len(mine) + 1]])
            tables.append(pos.astype(np.int64) * stride)
            # a value at each position: below the lowest threshold, at each threshold, missing
            rows.append(np.concatenate([[np.nextafter(mine[0], np.float32(-np.inf))], mine, [np.nan]]))
            stride *= len(mine) + 2
        if stride > MAX_PATTERNS:
            return None
        made_up = np.full((stride, n_columns), np.nan, dtype=np.float32)
        digits = np.arange(stride)
        for f, values in zip(used, rows):  # pattern number -> one position per used column
            made_up[:, f] = values[digits % len(values)]
            digits //= len(values)
        dm = xgb.DMatrix(made_up, feature_names=names, nthread=1)
        phi = booster[t:t + 1].predict(dm, pred_contribs=True)
        trees.append(_Tree(used, tables, np.ascontiguousarray(phi[:, used].T)))
    return _Plan(thresholds, trees)


def _plan_of(model) -> _Plan | None:
    booster = model.booster
    if booster not in _PLANS:
        _PLANS[booster] = _plan(booster.get_booster(), model._trees[1], list(model.spec.columns))
    return _PLANS[booster]


def contributions(model, x: pd.DataFrame, rows: np.ndarray | None = None) -> np.ndarray:
    """Per-feature TreeSHAP contributions (log-odds, no bias column) of the rows ``rows`` (positions;
    default all) of a prepared frame ``x`` (``prepare_features`` output, the model's columns or more),
    as a (rows x columns) array in ``model.spec.columns`` order: float32 from XGBoost models, as
    ``model.contributions`` gives."""
    from training.models import ScoringModel

    columns = list(model.spec.columns)
    n = len(x) if rows is None else len(rows)
    fast = (isinstance(model, ScoringModel) and not model.spec.categorical and n >= MIN_ROWS
            and model._trees[1] > 0)
    plan = _plan_of(model) if fast else None
    if plan is None:
        part = x if rows is None else x.iloc[rows]
        return model.contributions(part, prepared=True).drop(columns="bias").to_numpy()  # float32 from XGBoost
    rank = {}
    for f, th in plan.thresholds.items():  # XGBoost compares float32 values with float32 thresholds
        column = x[columns[f]].to_numpy(np.float32)
        column = column if rows is None else column[rows]
        r = np.searchsorted(th, column, side="right")
        r[np.isnan(column)] = len(th) + 1
        rank[f] = r
    out = np.zeros((len(columns), n), dtype=np.float32)
    for a in range(0, n, BLOCK):
        block = {f: r[a:a + BLOCK] for f, r in rank.items()}
        sums = out[:, a:a + BLOCK]
        for tree in plan.trees:  # in XGBoost's order: each sum adds the trees one after the other
            code = tree.tables[0][block[int(tree.used[0])]]
            for f, table in zip(tree.used[1:], tree.tables[1:]):
                code += table[block[int(f)]]
            for j, f in enumerate(tree.used):  # the other columns get exactly 0 from this tree
                sums[f] += tree.phi[j][code]
    return out.T
