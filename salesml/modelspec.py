"""One declarative spec per model: everything the stages need to know about it.

The shipped specs are ``salesml/specs/<model>.yaml``; a project's ``salesml.yaml`` may override
any field under ``models.<model>`` (see ``salesml.project``). Training sets, the pipeline,
serving, drift, the online A/B analysis and the command line read the spec instead of keeping
their own copies of a horizon, a key or a column name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

SPEC_DIR = Path(__file__).resolve().parent / "specs"
ModelName = Literal["intent", "lead_match", "chs"]
Candidate = Literal["xgboost", "xgboost_unconstrained", "logistic"]
MODEL_NAMES: tuple[str, ...] = get_args(ModelName)
CANDIDATES: tuple[str, ...] = get_args(Candidate)
ENTITY_TABLES = {"account": "accounts", "lead": "leads"}  # the contract table that lists each entity


class SpecError(ValueError):
    pass


class Observe(BaseModel, extra="forbid"):
    tables: list[str] = Field(default_factory=lambda: ["usage_weekly", "contracts"])
    every_weeks: int = Field(4, ge=1, le=52)


class Outcome(BaseModel, extra="forbid"):
    table: str = "churn_events"
    kinds: list[str] = Field(default_factory=lambda: ["churn", "downgrade"])
    terminal: list[str] = Field(default_factory=lambda: ["churn"])  # after these an entity is gone


class Inactivity(BaseModel, extra="forbid"):
    """Churn = no activity for ``inactive_weeks`` (a purchase-only business)."""

    inactive_weeks: int = Field(ge=1, le=260)
    activity: str | None = None  # usage_weekly column whose value > 0 counts as activity; default: any row
    reactivation: bool = True  # an entity that comes back is observed again


class Conversion(BaseModel, extra="forbid"):
    table: str = "lead_assignments"
    at: str = "assigned_at"
    flag: str = "converted"
    converted_at: str | None = "converted_at"


class Label(BaseModel, extra="forbid"):
    horizon_days: int = Field(ge=1, le=3660)
    observe: Observe = Field(default_factory=Observe)
    outcome: Outcome | None = None
    churn: Inactivity | None = None
    conversion: Conversion | None = None
    reactivation: bool = False  # event-based churn: may a churned entity be observed again?

    @property
    def kind(self) -> Literal["conversion", "inactivity", "events"]:
        if self.conversion is not None:
            return "conversion"
        return "inactivity" if self.churn is not None else "events"


class Tables(BaseModel, extra="forbid"):
    required: list[str] = Field(default_factory=list)
    optional: list[str] = Field(default_factory=list)

    @property
    def all(self) -> list[str]:
        return [*self.required, *[t for t in self.optional if t not in self.required]]


class Serving(BaseModel, extra="forbid"):
    entity_type: Literal["account", "lead"]
    prediction: str  # the prediction-log column drift compares
    outcome: str  # the outcome kind that counts as the event for drift and online A/B
    higher_is_better: bool


class ModelSpec(BaseModel, extra="forbid"):
    name: str
    entity: Literal["account", "lead"]
    keys: list[str]
    feature_service: str
    tables: Tables
    label: Label
    monotone: dict[str, Literal[-1, 0, 1]] = Field(default_factory=dict)
    candidates: list[Candidate] = Field(default_factory=lambda: list(get_args(Candidate)))
    baselines: list[Literal["logistic", "rules"]] = ["logistic"]  # pydantic copies a mutable default
    # A candidate is registered only if no logged baseline beats it on validation by more than this.
    selection_margin: float = Field(0.01, ge=0, le=0.5)
    serving: Serving

    @field_validator("monotone", mode="before")
    @classmethod
    def _directions(cls, v):
        return directions(v)

    @model_validator(mode="after")
    def _consistent(self):
        if self.label.kind == "events" and self.label.outcome is None:
            self.label.outcome = Outcome()
        if not self.candidates:
            raise ValueError("candidates: name at least one model to fit")
        return self

    @property
    def key(self) -> str:
        return self.keys[0]

    @property
    def horizon_days(self) -> int:
        return self.label.horizon_days

    @property
    def experiment(self) -> str:
        """The MLflow experiment of the model's training and tuning runs."""
        return f"salesml-{self.name}"

    @property
    def entity_table(self) -> str:
        """The export table that lists the model's entities (``accounts``, ``leads``)."""
        return ENTITY_TABLES[self.entity]

    @property
    def constraints(self) -> dict[str, int]:
        return {k: v for k, v in self.monotone.items() if v}


def directions(v):
    """``{increasing: [...], decreasing: [...]}`` lists or a plain ``{feature: -1|0|1}`` map."""
    if not isinstance(v, dict):
        return v
    out = {}
    for key, value in v.items():
        if key in ("increasing", "decreasing") and isinstance(value, list):
            out.update({f: 1 if key == "increasing" else -1 for f in value})
        else:
            out[key] = value
    return out


def _merge(base: dict, override: dict) -> dict:
    """Nested dicts merge; anything else in ``override`` replaces. ``monotone`` entries add up."""
    out = dict(base)
    for k, v in override.items():
        if k == "monotone" and isinstance(v, dict):
            out[k] = {**directions(base.get(k, {})), **directions(v)}
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def check_name(name: str) -> str:
    if name not in MODEL_NAMES:
        raise SpecError(f"unknown model '{name}': expected one of {', '.join(MODEL_NAMES)}")
    return name


def load_spec(name: str, project=None) -> ModelSpec:
    """The shipped spec of ``name`` with the project's ``models.<name>`` overrides applied."""
    check_name(name)
    raw = yaml.safe_load((SPEC_DIR / f"{name}.yaml").read_text())
    override = dict((project.models.get(name) if project is not None else None) or {})
    label = dict(override.pop("label", {}))
    # top-level shorthands users reach for first: horizon_days, churn, observe, observe_every_weeks
    for short in ("horizon_days", "churn", "observe", "reactivation"):
        if short in override:
            label[short] = override.pop(short)
    if "observe_every_weeks" in override:
        label["observe"] = {**label.get("observe", {}), "every_weeks": override.pop("observe_every_weeks")}
    if label:
        override["label"] = label
    try:
        return ModelSpec.model_validate(_merge(raw, override))
    except ValidationError as exc:
        where = (f"{project.source}: " if project is not None and project.source else "") + f"models.{name}"
        lines = [f"{where}.{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise SpecError("\n".join(lines)) from None
