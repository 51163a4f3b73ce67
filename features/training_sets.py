"""Point-in-time training sets: label rows from the raw export, features from Feast.

Labels are observed *as of* an observation time; Feast joins each feature view's latest row
at or before that time, so nothing after the observation can reach a training row.

Duplicate (entity, timestamp) label rows: Feast's file store silently drops them and its
duckdb store keeps them, so the builder decides before Feast sees them: rows with the same
entity keys and observation time are collapsed to one, and if their labels disagree the
positive label wins (a lead converted if any record says so).  The count collapsed is
returned in ``TrainingSet.duplicates_collapsed``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from salesml.settings import Settings

MODELS = ("chs", "intent", "lead_match")
CHURN_HORIZON_DAYS = 182  # churn or downgrade within ~6 months of the observation
CHS_OBSERVATION_EVERY_WEEKS = 4
CONVERSION_HORIZON_DAYS = 90


@dataclass
class TrainingSet:
    model: str
    feature_service: str
    frame: pd.DataFrame
    entity_columns: list[str]
    label: str = "label"
    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None
    duplicates_collapsed: int = 0
    feature_columns: list[str] = field(default_factory=list)


def export_horizon(frames: dict[str, pd.DataFrame]) -> pd.Timestamp:
    """The latest moment the export speaks about: labels need a full window before it."""
    stamps = []
    for name, col in [("usage_weekly", "week_start"), ("churn_events", "occurred_at"),
                      ("contracts", "snapshot_at"), ("lead_assignments", "assigned_at"),
                      ("lead_events", "occurred_at"), ("interactions", "occurred_at"),
                      ("rep_state", "as_of")]:
        if name in frames and len(frames[name]):
            ts = frames[name][col].max()
            stamps.append(ts + pd.Timedelta(days=7) if name == "usage_weekly" else ts)
    return max(stamps)


def chs_labels(frames: dict[str, pd.DataFrame], horizon_days: int = CHURN_HORIZON_DAYS,
               every_weeks: int = CHS_OBSERVATION_EVERY_WEEKS) -> pd.DataFrame:
    """One row per account every ``every_weeks`` usage weeks: churn/downgrade within the horizon."""
    usage = frames["usage_weekly"][["account_id", "week_start"]].copy()
    usage["obs"] = usage["week_start"] + pd.Timedelta(days=7)  # usage known at week end
    usage = usage.sort_values(["account_id", "obs"])
    idx = usage.groupby("account_id").cumcount(ascending=False)
    obs = usage[idx % every_weeks == 0][["account_id", "obs"]]  # always includes the last week
    horizon = pd.Timedelta(days=horizon_days)
    obs = obs[obs["obs"] + horizon <= export_horizon(frames)]

    events = frames.get("churn_events", pd.DataFrame(columns=["account_id", "occurred_at", "kind"]))
    churned = events[events["kind"] == "churn"].groupby("account_id")["occurred_at"].min()
    obs = obs[~(obs["obs"] >= obs["account_id"].map(churned))]  # gone accounts are not scored

    merged = obs.merge(events[["account_id", "occurred_at"]], on="account_id", how="left")
    hit = (merged["occurred_at"] > merged["obs"]) & (merged["occurred_at"] <= merged["obs"] + horizon)
    merged["label"] = hit.astype(int)
    out = merged.groupby(["account_id", "obs"], as_index=False)["label"].max()
    return out.rename(columns={"obs": "event_timestamp"})


def assignment_labels(frames: dict[str, pd.DataFrame], with_rep: bool,
                      horizon_days: int = CONVERSION_HORIZON_DAYS) -> pd.DataFrame:
    a = frames["lead_assignments"].copy()
    horizon = pd.Timedelta(days=horizon_days)
    a = a[a["assigned_at"] + horizon <= export_horizon(frames)]
    converted = a["converted"].fillna(False).astype(bool)
    if "converted_at" in a.columns:
        in_time = a["converted_at"].isna() | (a["converted_at"] <= a["assigned_at"] + horizon)
        converted &= in_time.astype(bool)
    cols = ["lead_id", "rep_id"] if with_rep else ["lead_id"]
    out = a[cols + ["assigned_at"]].rename(columns={"assigned_at": "event_timestamp"})
    out["label"] = converted.astype(int).to_numpy()
    return out


def collapse_duplicates(labels: pd.DataFrame, keys: list[str]) -> tuple[pd.DataFrame, int]:
    by = keys + ["event_timestamp"]
    out = labels.groupby(by, as_index=False, sort=False)["label"].max()
    return out, len(labels) - len(out)


def label_rows(model: str, frames: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, list[str]]:
    if model == "chs":
        return chs_labels(frames), ["account_id"]
    if model == "intent":
        return assignment_labels(frames, with_rep=False), ["lead_id"]
    if model == "lead_match":
        return assignment_labels(frames, with_rep=True), ["lead_id", "rep_id"]
    raise ValueError(f"unknown model '{model}': expected one of {', '.join(MODELS)}")


LABEL_TABLES = {
    "chs": ["usage_weekly", "churn_events", "contracts", "interactions", "accounts"],
    "intent": ["lead_assignments", "lead_events", "leads", "reps", "rep_state"],
    "lead_match": ["lead_assignments", "lead_events", "leads", "reps", "rep_state"],
}


def build_training_set(settings: Settings, model: str, raw_dir: Path | None = None,
                       feature_service: str | None = None, store=None,
                       labels: pd.DataFrame | None = None) -> TrainingSet:
    """Labelled point-in-time frame for ``model`` through Feast's historical retrieval."""
    from features.store import open_store
    from salesml.validation import load_valid_export

    if model not in MODELS:
        raise ValueError(f"unknown model '{model}': expected one of {', '.join(MODELS)}")
    keys = {"chs": ["account_id"], "intent": ["lead_id"], "lead_match": ["lead_id", "rep_id"]}[model]
    if labels is None:
        frames = load_valid_export(raw_dir or settings.raw_dir, LABEL_TABLES[model])
        labels, keys = label_rows(model, frames)
    labels, collapsed = collapse_duplicates(labels, keys)
    if labels.empty:
        raise ValueError(f"no label rows for model '{model}': the export has no observation "
                         "with a complete outcome window")
    if not any(settings.feature_data_dir.glob("*.parquet")):
        raise ValueError(f"no feature files in {settings.feature_data_dir}: run `salesml features build` first")
    store = store or open_store(settings)
    service_name = feature_service or model
    service = store.get_feature_service(service_name)
    frame = store.get_historical_features(entity_df=labels, features=service).to_df()
    feature_cols = [c for c in frame.columns if c not in set(labels.columns)]
    return TrainingSet(
        model=model, feature_service=service_name, frame=frame, entity_columns=keys,
        start=labels["event_timestamp"].min(), end=labels["event_timestamp"].max(),
        duplicates_collapsed=collapsed, feature_columns=feature_cols,
    )
