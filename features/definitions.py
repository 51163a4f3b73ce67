"""Feast definitions: entities, sources, feature views per data layer, feature services per model.

The parquet files behind the sources are written by ``salesml features build`` from the raw
export (see features/transforms.py).  Source paths are relative: Feast resolves them against
the store's repo path, which ``features.store.open_store`` sets to the feature-data folder of
the active settings, so the registry holds no machine paths.
"""

from datetime import timedelta

import pandas as pd
from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, String
from feast.value_type import ValueType


def _source(name: str) -> FileSource:
    return FileSource(name=f"{name}_source", path=f"{name}.parquet",
                      timestamp_field="event_timestamp")


def _floats(*names: str) -> list[Field]:
    return [Field(name=n, dtype=Float64) for n in names]


# A customer account: the unit the health score and churn model are about.
account = Entity(name="account", join_keys=["account_id"], value_type=ValueType.STRING)
# A lead: a prospective buyer scored for purchase intent and matched to a rep.
lead = Entity(name="lead", join_keys=["lead_id"], value_type=ValueType.STRING)
# A sales rep: a candidate owner for a lead, with live workload.
rep = Entity(name="rep", join_keys=["rep_id"], value_type=ValueType.STRING)

# Live usage events reach the online store through this push source without a batch job.
behaviour_push = PushSource(name="behaviour_push", batch_source=_source("behaviour"))
# Live lead behaviour (page views, downloads, signals) pushed minutes after it happens.
lead_activity_push = PushSource(name="lead_activity_push", batch_source=_source("lead_activity"))

# Contract layer: value, tier, renewal distance and SLA attainment, from contract snapshots.
contract = FeatureView(
    name="contract", entities=[account], ttl=timedelta(days=400),
    schema=_floats("annual_value", "tier_rank", "days_to_renewal", "contract_age_days",
                   "sla_gap", "sla_breached"),
    source=_source("contract"),
)

# Behaviour layer: weekly usage, trends and the below-own-baseline streak (early warning).
behaviour = FeatureView(
    name="behaviour", entities=[account], ttl=timedelta(days=28),
    schema=_floats("logins", "active_users", "key_feature_uses", "api_calls", "config_changes",
                   "scans_run", "custom_rules", "logins_4w_avg", "key_feature_uses_4w_avg",
                   "api_calls_wow", "key_feature_uses_wow", "api_calls_mom",
                   "below_baseline_measures", "below_baseline_streak", "early_warning",
                   "usage_trend_4v12", "weeks_of_history"),
    source=behaviour_push,
)

# Relationship layer: CSM touchpoints, communication quality, NPS, joint projects.
relationship = FeatureView(
    name="relationship", entities=[account], ttl=timedelta(days=28),
    schema=_floats("touchpoints_90d", "communication_quality_90d", "communication_quality_365d", "nps_avg_365d",
                   "joint_project_touchpoints_180d", "nps_last", "days_since_last_touch"),
    source=_source("relationship"),
)

# Lead intent signals: trailing counts of objective behaviour, fresh to the latest event.
lead_activity = FeatureView(
    name="lead_activity", entities=[lead], ttl=timedelta(days=90),
    schema=_floats("page_views_7d", "pricing_page_views_7d", "pricing_dwell_seconds_7d",
                   "case_study_views_30d", "doc_downloads_30d", "pricing_sheet_downloads_30d",
                   "webinar_completion_max_30d", "competitor_social_30d", "budget_signals_90d",
                   "tender_signals_90d", "events_total", "events_per_week"),
    source=lead_activity_push,
)

# Lead firmographics, used for segmenting and for the lead x rep fit.
lead_profile = FeatureView(
    name="lead_profile", entities=[lead], ttl=timedelta(0),
    schema=[Field(name=n, dtype=String) for n in
            ("lead_industry", "lead_region", "lead_product", "lead_source")]
    + _floats("company_size"),
    source=_source("lead_profile"),
)

# Rep live state: load, win rate, close cycle, and the skill profile for fit features.
rep_state = FeatureView(
    name="rep_state", entities=[rep], ttl=timedelta(days=28),
    schema=_floats("open_leads", "capacity", "load_ratio", "win_rate_90d",
                   "avg_close_cycle_days", "seniority_rank")
    + [Field(name=n, dtype=String) for n in ("rep_region", "rep_industries", "rep_products")],
    source=_source("rep_state"),
)


# Lead x rep fit depends on the pair, so it is computed at request time, not stored.
@on_demand_feature_view(
    sources=[lead_profile, rep_state],
    schema=_floats("industry_match", "product_match", "region_match"),
    mode="pandas",
)
def lead_rep_fit(inputs: pd.DataFrame) -> pd.DataFrame:
    from features.transforms import lead_rep_fit as fit  # Feast runs the UDF without our globals

    return fit(inputs)


CHS_LAYERS = {"contract": contract, "behaviour": behaviour, "relationship": relationship}

# Per-model services: what each model reads, online and offline.
intent_service = FeatureService(name="intent", features=[lead_activity, lead_profile])
lead_match_service = FeatureService(
    name="lead_match", features=[lead_activity, lead_profile, rep_state, lead_rep_fit]
)
chs_service = FeatureService(name="chs", features=[contract, behaviour, relationship])
# Layer subsets for the A/B sandbox (does the relationship layer earn its keep?).
chs_contract_behaviour_service = FeatureService(
    name="chs_contract_behaviour", features=[contract, behaviour]
)
chs_behaviour_only_service = FeatureService(name="chs_behaviour_only", features=[behaviour])
intent_profile_only_service = FeatureService(name="intent_profile_only", features=[lead_profile])

ALL = [
    account, lead, rep, behaviour_push, lead_activity_push,
    contract, behaviour, relationship, lead_activity, lead_profile, rep_state, lead_rep_fit,
    intent_service, lead_match_service, chs_service, chs_contract_behaviour_service,
    chs_behaviour_only_service, intent_profile_only_service,
]
