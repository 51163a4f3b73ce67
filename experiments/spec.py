"""Declarative experiment specs (YAML), validated with pydantic so a bad spec names its field."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from salesml.modelspec import ModelName

Metric = Literal["roc_auc", "pr_auc", "brier", "log_loss"]
METRICS: tuple[str, ...] = get_args(Metric)


class Variant(BaseModel, extra="forbid"):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    feature_service: str | None = None  # default: the model's own service
    features: list[str] | None = None  # a subset of the service's columns
    exclude_features: list[str] = Field(default_factory=list)
    model_class: Literal["xgboost", "logistic", "rules", "round_robin"] = "xgboost"
    params: dict[str, float | int] = Field(default_factory=dict)
    seed: int = 42


class Bootstrap(BaseModel, extra="forbid"):
    resamples: int = Field(1000, ge=50, le=100_000)
    seed: int = 0
    alpha: float = Field(0.05, gt=0, lt=0.5)


class DecisionRule(BaseModel, extra="forbid"):
    metric: Metric = "roc_auc"
    higher_is_better: bool | None = None  # default from the metric
    alpha: float = Field(0.05, gt=0, lt=0.5)
    min_effect: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _direction(self):
        if self.higher_is_better is None:
            self.higher_is_better = self.metric in ("roc_auc", "pr_auc")
        return self


class ExperimentSpec(BaseModel, extra="forbid"):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    model: ModelName
    variants: list[Variant] = Field(min_length=2)
    metrics: list[Metric] = Field(default_factory=lambda: list(get_args(Metric)))
    fits_per_variant: int = Field(3, ge=1, le=20, description="seeds per variant: training variance enters the CIs")
    operating_share: float = Field(0.1, gt=0, lt=1, description="share of test rows flagged at the operating threshold")
    bootstrap: Bootstrap = Field(default_factory=Bootstrap)
    decision: DecisionRule = Field(default_factory=DecisionRule)

    @field_validator("variants")
    @classmethod
    def _unique(cls, v: list[Variant]):
        names = [x.name for x in v]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique, got {names}")
        return v

    @model_validator(mode="after")
    def _rule_metric_is_computed(self):
        if self.decision.metric not in self.metrics:
            self.metrics = [*self.metrics, self.decision.metric]
        return self


class SpecError(ValueError):
    pass


def load_spec(path: Path) -> ExperimentSpec:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"{path}: no such spec file") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    try:
        return ExperimentSpec.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{path}: {'.'.join(str(x) for x in e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors()]
        raise SpecError("\n".join(lines)) from None
