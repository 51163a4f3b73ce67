"""Feast definitions: entities, sources, feature views per data layer, feature services per model.

The parquet files behind the sources are written by ``salesml features build`` from the raw
export (see features/transforms.py).  Source paths are relative: Feast resolves them against
the store's repo path, which ``features.store.open_store`` sets to the feature-data folder of
the active settings, so the registry holds no machine paths.

The views are built by ``repo(custom, present)``: each view's schema is its built-in features
plus the company-specific ones the project declares (``features.custom``), and each model's
service holds the views the export could fill (``present``), so an export without contracts or
web events still has a ``chs`` or ``intent`` service.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import pandas as pd
from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Bool, FeastType, Float64, Int64, String
from feast.value_type import ValueType

from features.custom import CustomFeature
from features.transforms import FEATURE_TYPES, custom_type

# Feast's type for each feature type of features.transforms.FEATURE_TYPES (the one source: the
# files those transforms write carry the same types, so materialize and retrieval cast nothing).
FEAST_TYPES = {"int": Int64, "bool": Bool, "float": Float64, "str": String}
# Built-in features per view: (name, Feast type).
BUILTIN: dict[str, list[tuple[str, FeastType]]] = {
    view: [(n, FEAST_TYPES[t]) for n, t in types.items()] for view, types in FEATURE_TYPES.items()
    if view != "lead_rep_fit"
}
# Why each view exists, and how long a value stays valid after its event time.
VIEWS = {
    # Contract layer: value, tier, renewal distance and SLA attainment, from contract snapshots.
    "contract": ("account", timedelta(days=400)),
    # Behaviour layer: weekly usage, trends, recency/frequency and the below-own-baseline streak.
    "behaviour": ("account", timedelta(days=28)),
    # Relationship layer: CSM touchpoints, communication quality, NPS, joint projects.
    "relationship": ("account", timedelta(days=28)),
    # Company-specific account attributes (plan, seats, add-ons), part of the contract layer.
    "account_profile": ("account", timedelta(0)),
    # Lead intent signals: trailing counts of objective behaviour, fresh to the latest event.
    "lead_activity": ("lead", timedelta(days=90)),
    # Lead firmographics, used for segmenting and for the lead x rep fit.
    "lead_profile": ("lead", timedelta(0)),
    # Rep live state: load, win rate, close cycle, and the skill profile for fit features.
    "rep_state": ("rep", timedelta(days=28)),
}
# Views fed live through a push source (no batch job between an event and the online store).
PUSHED = {"behaviour": "behaviour_push", "lead_activity": "lead_activity_push"}
# The CHS layers and the views each reads.
CHS_LAYERS = {"contract": ("contract", "account_profile"), "behaviour": ("behaviour",),
              "relationship": ("relationship",)}
# Per-model services (and the sandbox's layer subsets): the views each reads, where present.
SERVICES = {
    "intent": ("lead_activity", "lead_profile"),
    "lead_match": ("lead_activity", "lead_profile", "rep_state", "lead_rep_fit"),
    "chs": ("contract", "account_profile", "behaviour", "relationship"),
    # Does the relationship layer earn its keep? (A/B sandbox)
    "chs_contract_behaviour": ("contract", "account_profile", "behaviour"),
    "chs_behaviour_only": ("behaviour",),
    "intent_profile_only": ("lead_profile",),
}
FIT_FEATURES = tuple(FEATURE_TYPES["lead_rep_fit"])
# Views the scoring job (serving/scoring_job.py) writes, not ``features build``: view -> (entity,
# file relative to the feature folder, features). Their files live with the score history, outside
# the folder a rebuild rewrites; each is registered once its file exists, and is written online by
# the job after each run (``materialize`` leaves it alone).
SCORE_VIEWS = {
    # The latest CHS of every account, so applications read it online instead of recomputing it.
    "chs_scores": ("account", "../scores/chs/latest.parquet",
                   [("score", Float64), ("level", String), ("churn_probability", Float64),
                    ("layer_contract", Float64), ("layer_behaviour", Float64), ("layer_relationship", Float64),
                    ("early_warning", Float64), ("as_of", String), ("status", String),
                    ("model_version", String), ("weights_version", String)]),
}

# A customer account: the unit the health score and churn model are about.
account = Entity(name="account", join_keys=["account_id"], value_type=ValueType.STRING)
# A lead: a prospective buyer scored for purchase intent and matched to a rep.
lead = Entity(name="lead", join_keys=["lead_id"], value_type=ValueType.STRING)
# A sales rep: a candidate owner for a lead, with live workload.
rep = Entity(name="rep", join_keys=["rep_id"], value_type=ValueType.STRING)
ENTITIES = {"account": account, "lead": lead, "rep": rep}


def _source(name: str) -> FileSource:
    return FileSource(name=f"{name}_source", path=f"{name}.parquet", timestamp_field="event_timestamp")


def view_features(view: str, custom: dict[str, list[CustomFeature]] | None = None) -> list[tuple[str, FeastType]]:
    """(name, Feast type) of a view's features: built-in, then the project's custom ones."""
    extra = [(f.name, FEAST_TYPES[custom_type(f)])
             for feats in (custom or {}).values() for f in feats if f.view == view]
    clash = {n for n, _ in extra} & {n for n, _ in BUILTIN[view]}
    if clash:
        raise ValueError(f"custom column(s) {', '.join(sorted(clash))} would shadow built-in {view} features; "
                         "rename them in salesml.yaml")
    return BUILTIN[view] + extra


def layer_of(columns: list[str], custom: dict[str, list[CustomFeature]] | None = None) -> dict[str, list[str]]:
    """CHS layer -> the given feature columns it reads."""
    out = {}
    for layer, views in CHS_LAYERS.items():
        names = {n for v in views for n, _ in view_features(v, custom)}
        out[layer] = [c for c in columns if c in names]
    return out


@dataclass
class Repo:
    views: dict[str, FeatureView]
    services: dict[str, FeatureService]
    objects: list = field(default_factory=list)
    # Views ``materialize`` loads online: those whose batch source is a feature file of ``features
    # build`` (pushed ones too: a push carries only new events). Not the score views (the scoring job
    # writes them online) nor on-demand views (computed at request time, no source of their own).
    materialized: list[str] = field(default_factory=list)


def repo(custom: dict[str, list[CustomFeature]] | None = None, present: set[str] | None = None) -> Repo:
    """Entities, sources, views and services for this project; ``present``: views with a feature file
    (None: all of VIEWS; a SCORE_VIEWS view only when named)."""
    present = set(VIEWS) if present is None else set(present)
    pushes = {v: PushSource(name=p, batch_source=_source(v)) for v, p in PUSHED.items()}
    views = {}
    for name, (entity, ttl) in VIEWS.items():
        schema = [Field(name=n, dtype=t) for n, t in view_features(name, custom)]
        if name not in present or not schema:
            continue
        views[name] = FeatureView(name=name, entities=[ENTITIES[entity]], ttl=ttl, schema=schema,
                                  source=pushes.get(name) or _source(name))
    for name, (entity, path, fields) in SCORE_VIEWS.items():
        if name in present:  # a score is valid until the next run replaces it: no TTL
            views[name] = FeatureView(name=name, entities=[ENTITIES[entity]], ttl=timedelta(0),
                                      schema=[Field(name=n, dtype=t) for n, t in fields],
                                      source=FileSource(name=f"{name}_source", path=path,
                                                        timestamp_field="event_timestamp"))
    odfv = None
    if {"lead_profile", "rep_state"} <= set(views):
        # Lead x rep fit depends on the pair, so it is computed at request time, not stored.
        @on_demand_feature_view(sources=[views["lead_profile"], views["rep_state"]],
                                schema=[Field(name=n, dtype=FEAST_TYPES[t])
                                        for n, t in FEATURE_TYPES["lead_rep_fit"].items()], mode="pandas")
        def lead_rep_fit(inputs: pd.DataFrame) -> pd.DataFrame:
            from features.transforms import lead_rep_fit as fit  # Feast runs the UDF without our globals

            return fit(inputs)

        odfv = lead_rep_fit
    parts = {**views, **({"lead_rep_fit": odfv} if odfv is not None else {})}
    services = {}
    for name, wanted in SERVICES.items():
        feats = [parts[v] for v in wanted if v in parts]
        if feats and (name != "lead_match" or "rep_state" in parts):
            services[name] = FeatureService(name=name, features=feats)
    used = {v: pushes[v] for v in pushes if v in views}
    objects = [*ENTITIES.values(), *used.values(), *parts.values(), *services.values()]
    return Repo(views, services, objects, [v for v in views if v in VIEWS])
