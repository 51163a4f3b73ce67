"""The portable form of a scoring model (training/portable.py) and the code logged with it."""

from __future__ import annotations

import ast
import json
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training import portable
from training.chs import HealthModel
from training.data import FeatureSpec
from training.models import fit_linear_model, fit_xgboost
from training.tracking import MODEL_PACKAGES, model_code, pip_requirements

TRAINING = Path(portable.__file__).parent


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 400
    df = pd.DataFrame({"usage": rng.normal(size=n), "seats": rng.integers(1, 50, n).astype(float),
                       "plan": rng.choice(["Starter", "Pro", "Enterprise"], n)})
    df.loc[::6, "usage"] = np.nan
    df.loc[::9, "plan"] = None
    df["label"] = ((df["usage"].fillna(0) - 0.02 * df["seats"] + rng.normal(size=n)) > 0).astype(int)
    return df


@pytest.fixture(scope="module")
def spec() -> FeatureSpec:
    return FeatureSpec(["usage", "seats"], {"plan": ["Enterprise", "Pro", "Starter"]})


@pytest.fixture(scope="module")
def xgb_model(frame, spec):
    return fit_xgboost(frame[:300], frame[300:], spec, seed=1, params={"n_estimators": 60}, monotone={"usage": 1},
                       name="intent")


def _same(a, b, frame):
    assert type(a) is type(b)
    np.testing.assert_array_equal(a.predict_proba(frame), b.predict_proba(frame))
    pd.testing.assert_frame_equal(a.contributions(frame), b.contributions(frame))
    assert (a.name, a.spec, a.monotone) == (b.name, b.spec, b.monotone)


def test_xgboost_model_comes_back_identical(tmp_path, frame, xgb_model):
    portable.save(xgb_model, tmp_path / "m")
    back = portable.load(tmp_path / "m")
    _same(xgb_model, back, frame)
    assert back.booster.best_iteration == xgb_model.booster.best_iteration  # the trees early stopping kept
    assert back.booster.get_params()["n_jobs"] == xgb_model.booster.get_params()["n_jobs"]
    assert json.loads((tmp_path / "m" / portable.BOOSTER).read_text())["learner"]  # XGBoost's own JSON


def test_linear_model_comes_back_identical_without_pickle(tmp_path, frame, spec):
    model = fit_linear_model(frame[:300], spec, seed=1, name="lead_match")
    portable.save(model, tmp_path / "m")
    back = portable.load(tmp_path / "m")
    _same(model, back, frame)
    np.testing.assert_array_equal(back._mean, model._mean)
    assert not any(p.suffix in (".pkl", ".pickle") for p in (tmp_path / "m").rglob("*"))


def test_health_model_keeps_layers_weights_and_levels(tmp_path, frame, spec, xgb_model):
    layer = fit_xgboost(frame[:300], frame[300:], FeatureSpec(["usage"], spec.categorical), seed=1,
                        params={"n_estimators": 30}, name="chs_behaviour")
    model = HealthModel({"behaviour": layer}, xgb_model, base_logit=-0.3, weights={"behaviour": 1.0},
                        thresholds={"green": 70.0, "yellow": 50.5, "orange": 30.0}, weights_version="2025Q3")
    portable.save(model, tmp_path / "m")
    back = portable.load(tmp_path / "m")
    assert (back.base_logit, back.weights, back.thresholds, back.weights_version) == (
        model.base_logit, model.weights, model.thresholds, model.weights_version)
    _same(model.full, back.full, frame)
    _same(model.layers["behaviour"], back.layers["behaviour"], frame)
    assert back.health(frame.head(20)) == model.health(frame.head(20))


def test_unknown_objects_and_formats_are_refused(tmp_path, xgb_model):
    with pytest.raises(TypeError, match="cannot keep a dict"):
        portable.save({"a": 1}, tmp_path / "x")
    portable.save(xgb_model, tmp_path / "m")
    meta = json.loads((tmp_path / "m" / portable.META).read_text())
    (tmp_path / "m" / portable.META).write_text(json.dumps({**meta, "format": portable.FORMAT + 1}))
    with pytest.raises(ValueError, match="format"):
        portable.load(tmp_path / "m")


def _imports(path: Path, top_level_only: bool) -> set[str]:
    """Modules ``path`` imports: at import time only, or anywhere (inside functions too)."""
    tree = ast.parse(path.read_text())
    nodes = list(ast.walk(tree))
    if top_level_only:
        inside = {id(n) for f in nodes if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                  for n in ast.walk(f)}
        guarded = {id(n) for f in nodes if isinstance(f, ast.If) and "TYPE_CHECKING" in ast.unparse(f.test)
                   for n in ast.walk(f)}
        nodes = [n for n in nodes if id(n) not in inside | guarded]
    out = set()
    for n in nodes:
        if isinstance(n, ast.Import):
            out |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom) and n.level == 0:
            out |= {n.module} | {f"{n.module}.{a.name}" for a in n.names}
    return out


def test_logged_code_is_self_contained_and_its_packages_are_its_requirements():
    files = model_code()
    assert {"__init__.py", "portable.py", "data.py", "models.py", "chs.py"} <= set(files)
    assert not {"tracking.py", "pipeline.py", "engine.py", "pyfunc_model.py"} & set(files)
    shipped = {f"training.{f.removesuffix('.py')}" for f in files} | {"training"}
    dists = packages_distributions()
    required = {r.split("==")[0] for r in pip_requirements()}
    assert required == set(MODEL_PACKAGES) and all("==" in r for r in pip_requirements())
    for f in [*files, "pyfunc_model.py"]:
        path = TRAINING / f
        # importing it needs nothing of the repository but the shipped modules
        local = {m for m in _imports(path, top_level_only=True) if m.split(".")[0] in
                 ("training", "salesml", "features", "serving", "experiments", "drift", "benchmarks")}
        assert {m for m in local if m not in shipped and m.rsplit(".", 1)[0] not in shipped} == set(), f
        # and every package it imports anywhere (fitting, explaining) is a requirement
        third = {m.split(".")[0] for m in _imports(path, top_level_only=False)} - set(sys.stdlib_module_names) - {
            "training", "salesml", "features", "serving", "experiments", "drift", "benchmarks", "__future__"}
        assert [m for m in third if not set(dists.get(m, [m])) & set(MODEL_PACKAGES)] == [], f
