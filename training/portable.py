"""A scoring model as a folder of portable files, and back: what the registry holds for every model.

``save`` writes, and ``load`` rebuilds, the project's scoring objects (``ScoringModel``,
``LinearScoringModel``, ``HealthModel``): XGBoost boosters in XGBoost's own JSON format,
scikit-learn pipelines in skops' format (loaded from an allow-list of types, never unpickled), the
feature specs, weights and thresholds as JSON. No object of this project is pickled, so the folder
loads wherever the packages of ``training.tracking.MODEL_PACKAGES`` and the few ``training``
modules of ``training.tracking.model_code()`` are: the logged MLflow model (``training/pyfunc_model.py``)
and serving rebuild the same objects from the same files, and score with the same code.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from training.chs import HealthModel
from training.data import FeatureSpec
from training.models import LinearScoringModel, LogisticBaseline, ScoringModel

ARTIFACT = "scoring"  # the folder's name among the logged model's artifacts
FORMAT = 1  # bump when the layout changes; ``load`` refuses a format it does not know
META = "model.json"
BOOSTER = "booster.json"  # XGBoost's JSON model format: the trees, best_iteration, feature types
PIPELINE = "pipeline.skops"
# Types of a fitted logistic pipeline that skops does not trust by default. ``save`` refuses a
# pipeline that needs any other, so a model that ``load`` would refuse is never registered.
TRUSTED_SKOPS_TYPES = ("numpy.dtype",)


def save(model, path: Path | str) -> Path:
    """Write ``model`` into the folder ``path`` (created); TypeError for a kind of model it cannot keep."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if isinstance(model, HealthModel):
        save(model.full, path / "full")
        for name, layer in model.layers.items():
            save(layer, path / "layers" / name)
        meta = {"kind": "health", "layers": list(model.layers), "base_logit": float(model.base_logit),
                "weights": {k: float(v) for k, v in model.weights.items()},
                "thresholds": {k: float(v) for k, v in model.thresholds.items()},
                "weights_version": str(model.weights_version)}
    elif isinstance(model, ScoringModel):
        model.booster.save_model(path / BOOSTER)
        meta = {"kind": "xgboost", **_described(model), "params": _json_params(model.booster.get_params())}
    elif isinstance(model, LinearScoringModel):
        import skops.io as sio

        data = sio.dumps(model.baseline.pipeline)
        untrusted = sorted(set(sio.get_untrusted_types(data=data)) - set(TRUSTED_SKOPS_TYPES))
        if untrusted:
            raise TypeError(f"the logistic pipeline of '{model.name}' holds types a portable model may not load: "
                            f"{', '.join(untrusted)}")
        (path / PIPELINE).write_bytes(data)
        mean = getattr(model, "_mean", None)
        meta = {"kind": "linear", **_described(model),
                "mean": None if mean is None else [float(v) for v in np.asarray(mean, dtype=np.float64)]}
    else:
        raise TypeError(f"cannot keep a {type(model).__name__} as a portable model: "
                        "ScoringModel, LinearScoringModel or HealthModel only")
    (path / META).write_text(json.dumps({"format": FORMAT, **meta}, indent=1, allow_nan=False))
    return path


def load(path: Path | str):
    """The model ``save`` wrote into ``path``."""
    path = Path(path)
    meta = json.loads((path / META).read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: portable model format {meta.get('format')!r}, this code reads {FORMAT}")
    kind = meta["kind"]
    if kind == "health":
        layers = {name: load(path / "layers" / name) for name in meta["layers"]}
        return HealthModel(layers, load(path / "full"), float(meta["base_logit"]), dict(meta["weights"]),
                           dict(meta["thresholds"]), str(meta["weights_version"]))
    spec = FeatureSpec.from_dict(meta["spec"])
    if kind == "xgboost":
        import xgboost as xgb

        booster = xgb.XGBClassifier(**meta["params"])
        booster.load_model(path / BOOSTER)
        return ScoringModel(meta["name"], spec, booster, dict(meta["monotone"]))
    if kind == "linear":
        import skops.io as sio

        pipeline = sio.load(path / PIPELINE, trusted=list(TRUSTED_SKOPS_TYPES))
        model = LinearScoringModel(meta["name"], spec, LogisticBaseline(spec, pipeline), dict(meta["monotone"]))
        if meta["mean"] is not None:
            model._mean = np.asarray(meta["mean"], dtype=np.float64)
        return model
    raise ValueError(f"{path}: unknown kind of portable model {kind!r}")


def _described(model) -> dict:
    return {"name": model.name, "spec": model.spec.to_dict(), "monotone": dict(model.monotone)}


def _json_params(params: dict) -> dict:
    """The estimator's hyper-parameters that JSON can hold (callbacks are training-time objects;
    ``missing`` is NaN, the default): loading passes them back, so e.g. ``n_jobs`` stays as trained."""
    out = {}
    for key, value in params.items():
        value = list(value) if isinstance(value, tuple) else value
        if key == "callbacks":
            continue
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            continue
        out[key] = value
    return out
