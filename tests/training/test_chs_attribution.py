"""The vectorized CHS pieces against slow references: attribution, health frame, TreeSHAP shortcut."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training import treeshap
from training.chs import HealthModel, explain, fit_health_model
from training.chs_text import Attribution, LayerDrivers, change_texts, round_like_python
from training.data import infer_spec, prepare_features, time_split
from training.models import fit_linear_model, fit_xgboost

pytestmark = [pytest.mark.integration]

SMALL_XGB = {"n_estimators": 80, "learning_rate": 0.1}


@pytest.fixture(scope="module")
def chs_frame(store_settings, export_dir, store):
    from features.training_sets import build_training_set

    ts = build_training_set(store_settings, "chs", raw_dir=export_dir, store=store)
    return ts.frame, ts.feature_columns


@pytest.fixture(scope="module")
def health_model(chs_frame) -> HealthModel:
    frame, columns = chs_frame
    split = time_split(frame)
    full = fit_xgboost(split.train, split.valid, infer_spec(frame, columns), 0, SMALL_XGB, name="chs")
    return fit_health_model(split.train, split.valid, full, 0, SMALL_XGB)


# --- the per-row attribution as it was written before the vectorized one: the oracle ----------
def _num(v):
    return None if v is None or pd.isna(v) else float(v)


def _pct(a, b):
    a, b = _num(a), _num(b)
    if a is None or b is None or a == 0:
        return None
    return round(100.0 * (b - a) / abs(a), 1)


def reference_change(model: HealthModel, before: pd.Series, after: pd.Series, top: int = 2) -> dict:
    frame = pd.DataFrame([before, after])
    frame.index = [0, 1]
    subs = model.layer_scores(frame)
    total = float(model.score(frame)[1] - model.score(frame)[0])
    layers = {}
    for name, layer in model.layers.items():
        delta = model.weights[name] * float(subs.loc[1, name] - subs.loc[0, name])
        c = layer.contributions(frame).drop(columns="bias")
        dc = c.loc[1] - c.loc[0]
        dz = float(dc.sum())
        shares = (dc / dz * delta) if abs(dz) > 1e-12 else dc * 0.0
        drivers = []
        for feat, part in shares.reindex(shares.abs().sort_values(ascending=False).index).head(top).items():
            if abs(part) < 0.05:
                continue
            drivers.append({"feature": feat, "points": round(float(part), 2),
                            "before": _num(before.get(feat)), "after": _num(after.get(feat)),
                            "change_pct": _pct(before.get(feat), after.get(feat))})
        layers[name] = {"points": round(delta, 2), "drivers": drivers}
    total = round(total, 2)
    return {"change": total, "layers": layers, "text": explain(total, layers)}


def _pairs(frame: pd.DataFrame, n: int = 50) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each of n accounts' last two observations (4 weeks apart), plus an unchanged pair and a pair
    whose usage fell 60%."""
    last = frame.sort_values("event_timestamp").groupby("account_id").tail(2)
    two = last.groupby("account_id").filter(lambda g: len(g) == 2)
    ids = two["account_id"].drop_duplicates().head(n)
    two = two[two["account_id"].isin(ids)].sort_values(["account_id", "event_timestamp"])
    before, after = two.iloc[0::2].copy(), two.iloc[1::2].copy()
    same = before.iloc[[0]]
    usage = ["logins", "active_users", "key_feature_uses", "api_calls", "config_changes"]
    fell = before.iloc[[1]].assign(**{c: lambda d, c=c: d[c] * 0.4 for c in usage})
    return (pd.concat([before, same, before.iloc[[1]]], ignore_index=True),
            pd.concat([after, same, fell], ignore_index=True))


def test_attribute_changes_equals_the_per_row_reference(health_model, chs_frame):
    before, after = _pairs(chs_frame[0])
    got = health_model.attribute_changes(before, after)
    assert len(got) == len(after) >= 50 and got.index.equals(after.index)
    moved = 0
    for i in range(len(after)):
        ref = reference_change(health_model, before.iloc[i], after.iloc[i])
        row = got.iloc[i]
        assert row["change_text"] == ref["text"], i
        assert row["change_points"] == ref["change"]
        for name, info in ref["layers"].items():
            assert row[f"change_{name}"] == info["points"]
        # the per-row API gives the reference's whole answer, drivers included
        assert health_model.attribute_change(before.iloc[i], after.iloc[i]) == ref
        moved += "no material change" not in ref["text"]
    assert moved >= 10, "too few accounts moved for the comparison to say much"
    assert got["change_text"].iloc[-2].endswith("no material change")
    assert got["change_points"].iloc[-1] <= 0 and "behaviour" in got["change_text"].iloc[-1]  # less usage, less health


def test_health_frame_matches_health(health_model, chs_frame):
    rows = chs_frame[0].sample(60, random_state=2)
    frame = health_model.health_frame(rows)
    for (_, got), ref in zip(frame.iterrows(), health_model.health(rows)):
        assert got["score"] == ref["score"] and got["level"] == ref["level"]
        assert got["churn_probability"] == ref["churn_probability"]
        assert {n: got[f"layer_{n}"] for n in ref["layers"]} == ref["layers"]
        assert (None if pd.isna(got["early_warning"]) else bool(got["early_warning"])) == ref["early_warning"]
        drivers = [{"feature": got[f"driver_{k}"], "effect": got[f"driver_{k}_effect"]}
                   for k in (1, 2, 3) if got[f"driver_{k}"] is not None]
        assert drivers == ref["drivers"]


def _jittered(frame: pd.DataFrame, columns: list[str], n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    big = frame[columns].iloc[rng.integers(0, len(frame), n)].reset_index(drop=True)
    return big * rng.lognormal(0, 0.05, size=big.shape)  # distinct rows, like a real book


def test_treeshap_shortcut_equals_xgboost_to_the_bit(health_model, chs_frame):
    frame, _ = chs_frame
    x = prepare_features(_jittered(frame, health_model.full.spec.columns, treeshap.MIN_ROWS + 500),
                         health_model.full.spec)
    for model in [health_model.full, *health_model.layers.values()]:
        fast = treeshap.contributions(model, x)
        slow = model.contributions(x, prepared=True).drop(columns="bias").to_numpy()
        assert fast.dtype == slow.dtype and np.array_equal(fast, slow), model.name


def test_treeshap_falls_back_for_models_it_does_not_cover(chs_frame):
    frame, columns = chs_frame
    split = time_split(frame)
    linear = fit_linear_model(split.train, infer_spec(frame, columns), 0, "chs")
    x = prepare_features(frame.head(treeshap.MIN_ROWS + 10).pipe(lambda d: pd.concat([d] * 2)), linear.spec)
    expected = linear.contributions(x, prepared=True).drop(columns="bias").to_numpy()
    assert np.array_equal(treeshap.contributions(linear, x), expected)


@pytest.mark.parametrize("digits", [1, 2, 4])
def test_rounding_follows_python(digits):
    rng = np.random.default_rng(digits)
    values = np.concatenate([rng.normal(0, 30, 20_000), [2.675, 0.125, -0.005, -0.0, 0.0, 1.005, 0.045, -0.05]])
    values = np.concatenate([values, np.round(values, digits + 1)])  # many exact halves
    assert list(round_like_python(values, digits)) == [round(float(v), digits) for v in values]


def test_change_texts_read_like_explain_for_every_row():
    """The column-wise text builder against ``explain`` on random attributions: moves around the 0.05
    cut, -0.0, ties between layers, missing percentages, one or two drivers, non-ASCII names."""
    rng = np.random.default_rng(5)
    n, layers = 4000, ["contract", "behaviour", "relationship"]
    points = round_like_python(rng.choice([0.0, -0.0, 0.04, 0.05, -0.05, 0.3, -1.25, 2.0], size=(n, 3))
                               * rng.choice([1, 1, 1, 3.3], size=(n, 3)), 2)
    found = []
    for name in layers:
        names = [f"{name}_f{i}" for i in range(5)] + ["tâche_ratio"]
        rows = np.flatnonzero(rng.random(n) < 0.8)
        feature = rng.integers(-1, len(names), size=(len(rows), 2))
        feature[feature[:, 0] < 0, 1] = -1  # drivers are a prefix
        pct = round_like_python(rng.normal(0, 80, (len(rows), 2)), 1)
        pct[rng.random((len(rows), 2)) < 0.2] = np.nan
        blank = np.full((len(rows), 2), np.nan)
        found.append(LayerDrivers(names, rows, feature, blank, blank, blank, pct))
    total = round_like_python(points.sum(axis=1) + rng.choice([0.0, 0.01, -0.01], n), 2)
    attr = Attribution(layers, total, points, found)
    got = change_texts(attr)
    for i in range(n):
        info = {}
        for k, name in enumerate(layers):
            drivers = [{"feature": d.feature, "change_pct": d.change_pct} for d in attr.drivers(k, i)]
            info[name] = {"points": float(points[i, k]), "drivers": drivers}
        assert got[i] == explain(float(total[i]), info), i
