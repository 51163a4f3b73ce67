"""What each model adds to the common training step: one small strategy per model name.

A strategy's ``read`` runs at the edge (settings, export files, the feature store) and returns what its
``extend`` needs; ``extend`` works on the fitted result and what was read, with no MLflow and no store
opened. A model without an entry (intent, a project's own model) adds nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from salesml.modelspec import ModelSpec
    from salesml.settings import Settings
    from training.pipeline import TrainResult


@dataclass
class Extras:
    """A model's additions to a training result."""

    model: Any = None  # replaces the chosen model as the one logged and registered (chs: the health model)
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, object] = field(default_factory=dict)
    figures: dict[str, object] = field(default_factory=dict)  # logged as plots/<name>.png
    documents: dict[str, dict] = field(default_factory=dict)  # artifact file -> JSON content
    details: dict[str, object] = field(default_factory=dict)  # facts for callers (the assignment replay's totals)


@dataclass
class TrainingInputs:
    """What the training step reads besides the training set, gathered at the edge by ``read_inputs``."""

    # The generating process's probability of each row, where the export carries the truth (simulated data).
    truth: Callable[[pd.DataFrame], np.ndarray | None] | None = None
    model: dict = field(default_factory=dict)  # the model's own inputs (its strategy's ``read``)


def _read_nothing(settings: Settings, spec: ModelSpec, raw_dir: Path) -> dict:
    return {}


def _add_nothing(fit: TrainResult, inputs: dict, seed: int, params: dict | None) -> Extras:
    return Extras()


@dataclass(frozen=True)
class ModelSteps:
    read: Callable[..., dict] = _read_nothing  # (settings, spec, raw_dir) -> inputs, at the edge
    extend: Callable[..., Extras] = _add_nothing  # (fit, inputs, seed, params) -> Extras, pure on its inputs


# --- chs: the health score (layer models and weights) on top of the churn model ---

def _read_chs(settings: Settings, spec: ModelSpec, raw_dir: Path) -> dict:
    from features.custom import custom_features

    return {"levels": dict(settings.chs_levels), "custom": custom_features(settings.project(raw_dir))}


def _health_model(fit: TrainResult, inputs: dict, seed: int, params: dict | None) -> Extras:
    from training.chs import DEFAULT_LEVELS, fit_health_model, warning_metrics
    from training.data import LABEL

    split = fit.split
    health = fit_health_model(split.train, split.valid, fit.model, seed, params, monotone=fit.spec.constraints,
                              custom=inputs.get("custom"))
    health.thresholds = dict(inputs.get("levels", DEFAULT_LEVELS))
    warnings = warning_metrics(health.score(split.test), split.test[LABEL].to_numpy(), health.thresholds)
    return Extras(
        model=health, metrics={f"test_{k}": v for k, v in warnings.items()},
        params={**{f"chs_weight_{k}": v for k, v in health.weights.items()},
                **{f"chs_level_{k}": v for k, v in health.thresholds.items()}},
        documents={"chs_weights.json": {"version": health.weights_version, "weights": health.weights,
                                        "thresholds": health.thresholds}})


# --- lead_match: optimal proposals vs round-robin vs least-loaded on the held-out weekly batches ---

def _read_reps(settings: Settings, spec: ModelSpec, raw_dir: Path) -> dict:
    """The active reps of the export, and the feature store the replay reads pair features from."""
    from features.store import open_store
    from salesml.validation import load_valid_export

    reps = load_valid_export(raw_dir, ["reps"])["reps"]
    active = reps["active"].fillna(True).astype(bool) if "active" in reps else True
    return {"rep_ids": reps.loc[active, "rep_id"].tolist(), "store": open_store(settings),
            "feature_service": spec.feature_service}


def _assignment_replay(fit: TrainResult, inputs: dict, seed: int, params: dict | None) -> Extras:
    """Without a store to read pair features from (a unit test), there is no replay."""
    if inputs.get("store") is None:
        return Extras()
    from training import lead_match, plots

    totals = lead_match.evaluate_on_test(fit.model, inputs["store"], fit.split.test, inputs["rep_ids"],
                                         inputs["feature_service"])
    return Extras(metrics={f"assign_{policy}_{k}": float(v) for policy, m in totals.items() for k, v in m.items()},
                  figures={"assignment_policies": plots.policy_comparison(totals)},
                  details={"assignment": totals})


STEPS: dict[str, ModelSteps] = {
    "chs": ModelSteps(read=_read_chs, extend=_health_model),
    "lead_match": ModelSteps(read=_read_reps, extend=_assignment_replay),
}


def steps_for(name: str) -> ModelSteps:
    return STEPS.get(name, ModelSteps())


def read_inputs(settings: Settings, spec: ModelSpec, raw_dir: Path) -> TrainingInputs:
    """The edge of the training step: the truth where the export has it, and the model's own inputs."""
    from training.truth import oracle_probabilities

    def truth(frame: pd.DataFrame):
        return oracle_probabilities(spec, frame, raw_dir)

    return TrainingInputs(truth=truth, model=steps_for(spec.name).read(settings, spec, Path(raw_dir)))
