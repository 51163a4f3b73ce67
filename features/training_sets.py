"""Point-in-time training sets: label rows from the raw export, features from Feast.

What a label is comes from the model's spec (``salesml/specs/<model>.yaml`` plus the project's
overrides): the outcome table and kinds, or the conversion flag, or churn as N weeks without
activity; the horizon; the observation cadence; whether a churned entity is observed again.

Labels are observed *as of* an observation time; Feast joins each feature view's latest row
at or before that time, so nothing after the observation can reach a training row.  An
observation counts only when its whole outcome window lies before the export's end: the
``as_of`` the export declares (``salesml.yaml`` ``export.as_of``, ``SALESML_EXPORT_AS_OF``,
``--as-of``), else the latest timestamp found in the tables (said in the output).

Duplicate (entity, timestamp) label rows: Feast's file store silently drops them and its
duckdb store keeps them, so the builder decides before Feast sees them: rows with the same
entity keys and observation time are collapsed to one, and if their labels disagree the
positive label wins (a lead converted if any record says so).  The count collapsed is
returned in ``TrainingSet.duplicates_collapsed``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from features.feast_store import open_store
from features.transforms import missing_activity
from salesml.contract import TABLES
from salesml.modelspec import MODEL_NAMES, ModelSpec
from salesml.settings import Settings

MODELS = MODEL_NAMES
# Tables whose event time is a creation date: they say nothing about how far the export reaches.
CREATED = ("accounts", "leads", "reps")
WEEK = pd.Timedelta(days=7)


class IncompleteWindows(ValueError):
    """No observation of the export has a complete outcome window before the export's end."""


@dataclass
class ExportEnd:
    at: pd.Timestamp
    source: str  # where it came from: the configuration, or which table it was inferred from
    latest: dict[str, pd.Timestamp] = field(default_factory=dict)  # table.column -> latest timestamp

    def describe(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} UTC ({self.source})"


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
    export_end: ExportEnd | None = None


def latest_timestamps(frames: dict[str, pd.DataFrame]) -> dict[str, pd.Timestamp]:
    out = {}
    for name, df in frames.items():
        col = TABLES[name].event_ts
        if len(df) and col in df:
            out[f"{name}.{col}"] = df[col].max()
    return out


def export_end(frames: dict[str, pd.DataFrame], as_of: pd.Timestamp | None = None) -> ExportEnd:
    """The moment the export speaks up to: declared, or the latest observed timestamp (a usage
    week counts until its end)."""
    latest = latest_timestamps(frames)
    if as_of is not None:
        return ExportEnd(pd.Timestamp(as_of), "declared export.as_of", latest)
    observed = {k: (v + WEEK if k.startswith("usage_weekly.") else v) for k, v in latest.items()
                if k.split(".")[0] not in CREATED}
    if not observed:
        raise IncompleteWindows("the export has no timestamped rows to tell when it ends; declare export.as_of "
                                "in salesml.yaml (or SALESML_EXPORT_AS_OF)")
    where = max(observed, key=lambda k: observed[k])
    return ExportEnd(observed[where], f"not declared; inferred from the latest {where}", latest)


def _window_error(spec: ModelSpec, end: ExportEnd, first_complete: pd.Timestamp | None, observed: int) -> str:
    tables = ", ".join(f"{k} {v:%Y-%m-%d}" for k, v in end.latest.items()) or "none"
    need = f"; the earliest observation ({first_complete:%Y-%m-%d}) needs the export to reach " \
           f"{first_complete + pd.Timedelta(days=spec.horizon_days):%Y-%m-%d}" if first_complete is not None else ""
    return (f"no label rows for model '{spec.name}': none of its {observed:,} observation(s) has a complete "
            f"{spec.horizon_days}-day outcome window (label.horizon_days) by the export end "
            f"{end.describe()}{need}. Latest timestamp per table: {tables}. If the export was taken later than "
            "its latest row, say so with export.as_of in salesml.yaml, SALESML_EXPORT_AS_OF or --as-of.")


def _complete(obs: pd.DataFrame, spec: ModelSpec, end: ExportEnd, column: str) -> pd.DataFrame:
    done = obs[obs[column] + pd.Timedelta(days=spec.horizon_days) <= end.at]
    if done.empty:
        first = obs[column].min() if len(obs) else None
        raise IncompleteWindows(_window_error(spec, end, first, len(obs)))
    return done


def _cadence(times: pd.DataFrame, key: str, column: str, every: int) -> pd.DataFrame:
    """Every ``every``-th row per entity counted back from its latest (which is always kept)."""
    times = times.sort_values([key, column])
    idx = times.groupby(key).cumcount(ascending=False)
    return times[idx % every == 0]


def label_problems(spec: ModelSpec, columns: Mapping[str, Collection[str]]) -> list[str]:
    """What the export lacks to label ``spec``'s rows, one sentence each (empty: it can be labelled).
    ``columns``: the export's tables and their columns. ``data validate``, ``features build`` and the
    label builders all ask here, so a lack is named before anything is built."""
    label = spec.label
    if label.kind == "conversion":
        assert label.conversion is not None
        if label.conversion.table not in columns:
            return [f"model '{spec.name}' labels rows of {label.conversion.table} (label.conversion.table), "
                    "which the export lacks"]
        return []
    if label.kind == "inactivity":
        assert label.churn is not None
        if "usage_weekly" not in columns:
            return [f"model '{spec.name}' defines churn as {label.churn.inactive_weeks} weeks without activity "
                    "(label.churn) and needs usage_weekly, which the export lacks"]
        problem = missing_activity(label.churn.activity, list(columns["usage_weekly"]))
        return [problem] if problem else []
    if not any(t in columns for t in label.observe.tables):
        return [f"model '{spec.name}' is observed on {' or '.join(label.observe.tables)} "
                "(label.observe.tables); the export has neither"]
    return []


def event_labels(spec: ModelSpec, frames: dict[str, pd.DataFrame], end: ExportEnd) -> pd.DataFrame:
    """Churn/downgrade events within the horizon, observed on the first observation table present."""
    key, label = spec.key, spec.label
    table = next(t for t in label.observe.tables if t in frames)  # label_problems checked there is one
    if table == "usage_weekly":
        usage = frames["usage_weekly"][[key, "week_start"]].assign(obs=lambda d: d["week_start"] + WEEK)
        obs = _cadence(usage, key, "obs", label.observe.every_weeks)[[key, "obs"]]
    else:
        col = TABLES[table].event_ts
        obs = frames[table][[key, col]].drop_duplicates().rename(columns={col: "obs"})
    obs = _complete(obs, spec, end, "obs")
    outcome = label.outcome
    assert outcome is not None  # ModelSpec fills in the default outcome of an event label
    events = frames.get(outcome.table, pd.DataFrame(columns=[key, "occurred_at", "kind"]))
    events = events[events["kind"].isin(outcome.kinds)]
    if not label.reactivation:  # gone entities are not scored
        gone = events[events["kind"].isin(outcome.terminal)].groupby(key)["occurred_at"].min()
        obs = obs[~(obs["obs"] >= obs[key].map(gone))]
    horizon = pd.Timedelta(days=spec.horizon_days)
    merged = obs.merge(events[[key, "occurred_at"]], on=key, how="left")
    hit = (merged["occurred_at"] > merged["obs"]) & (merged["occurred_at"] <= merged["obs"] + horizon)
    merged["label"] = hit.astype(int)
    out = merged.groupby([key, "obs"], as_index=False)["label"].max()
    return out.rename(columns={"obs": "event_timestamp"})


def inactivity_labels(spec: ModelSpec, frames: dict[str, pd.DataFrame], end: ExportEnd) -> pd.DataFrame:
    """Churn = no activity week starting in [t, t + horizon), on one grid every N weeks back from
    the export end. Observed: entities active before t and within the ``inactive_weeks`` before t
    (a lapsed entity is not scored); with reactivation an entity that comes back is observed again."""
    key, rule = spec.key, spec.label.churn
    assert rule is not None  # an inactivity label is one with label.churn
    usage = frames["usage_weekly"]  # label_problems checked it and its activity column are there
    if rule.activity is not None:
        usage = usage[usage[rule.activity].fillna(0).astype(float) > 0]
    weeks = usage[[key, "week_start"]].drop_duplicates().sort_values([key, "week_start"])
    step = pd.Timedelta(days=7 * spec.label.observe.every_weeks)
    first = weeks["week_start"].min() + WEEK
    n = int((end.at - first) / step) + 1
    us = pd.DatetimeTZDtype("us", "UTC")  # merge_asof wants identical key dtypes
    weeks = weeks.astype({"week_start": us})
    grid = pd.DataFrame({"obs": pd.Series([end.at - k * step for k in range(max(n, 0))], dtype=us)})
    lapse = pd.Timedelta(days=7 * rule.inactive_weeks)
    horizon = pd.Timedelta(days=spec.horizon_days)
    # last activity known at t: the latest week that ended by t (merge_asof per entity)
    known = weeks.assign(known=(weeks["week_start"] + WEEK).astype(us)).sort_values("known")
    cand = grid.merge(pd.DataFrame({key: weeks[key].unique()}), how="cross").sort_values("obs")
    cand = pd.merge_asof(cand, known[[key, "known", "week_start"]].rename(columns={"week_start": "last_active"}),
                         left_on="obs", right_on="known", by=key, direction="backward")
    obs = cand[cand["last_active"].notna() & (cand["last_active"] >= cand["obs"] - lapse)][[key, "obs"]]
    if not rule.reactivation:  # after the first lapse the entity is gone for good
        w = weeks.assign(gap=weeks.groupby(key)["week_start"].diff())
        # a gap longer than the lapse: gone from the end of the week before it plus the lapse
        first_lapse = (w[w["gap"] > lapse].assign(at=lambda d: d["week_start"] - d["gap"] + WEEK + lapse)
                       .groupby(key)["at"].min())
        obs = obs[~(obs["obs"] >= obs[key].map(first_lapse))]
    obs = _complete(obs, spec, end, "obs")
    nxt = weeks.sort_values("week_start")
    o = obs.astype({"obs": us}).sort_values("obs")
    o = pd.merge_asof(o, nxt.rename(columns={"week_start": "next_active"}), left_on="obs",
                      right_on="next_active", by=key, direction="forward")
    o["label"] = (o["next_active"].isna() | (o["next_active"] >= o["obs"] + horizon)).astype(int)
    return o[[key, "obs", "label"]].rename(columns={"obs": "event_timestamp"}).reset_index(drop=True)


def conversion_labels(spec: ModelSpec, frames: dict[str, pd.DataFrame], end: ExportEnd) -> pd.DataFrame:
    conv = spec.label.conversion
    assert conv is not None  # a conversion label is one with label.conversion
    a = _complete(frames[conv.table].copy(), spec, end, conv.at)
    horizon = pd.Timedelta(days=spec.horizon_days)
    converted = a[conv.flag].fillna(False).astype(bool)
    if conv.converted_at and conv.converted_at in a.columns:
        in_time = a[conv.converted_at].isna() | (a[conv.converted_at] <= a[conv.at] + horizon)
        converted &= in_time.astype(bool)
    out = a[list(spec.keys) + [conv.at]].rename(columns={conv.at: "event_timestamp"})
    out["label"] = converted.astype(int).to_numpy()
    return out


def collapse_duplicates(labels: pd.DataFrame, keys: list[str]) -> tuple[pd.DataFrame, int]:
    by = keys + ["event_timestamp"]
    out = labels.groupby(by, as_index=False, sort=False)["label"].max()
    return out, len(labels) - len(out)


def label_rows(spec: ModelSpec, frames: dict[str, pd.DataFrame],
               as_of: pd.Timestamp | None = None) -> tuple[pd.DataFrame, list[str], ExportEnd]:
    """(label rows, entity key columns, the export end the windows were judged against)."""
    problems = label_problems(spec, {name: list(df.columns) for name, df in frames.items()})
    if problems:
        raise ValueError("; ".join(problems))
    end = export_end(frames, as_of)
    builder = {"conversion": conversion_labels, "inactivity": inactivity_labels, "events": event_labels}
    return builder[spec.label.kind](spec, frames, end), list(spec.keys), end


def export_folder(settings: Settings, raw_dir: Path | None) -> tuple[Path, str]:
    """The export folder a command reads and why that one: ``--raw``, else the folder the last
    successful ``features build`` recorded, else the home's default (no build has succeeded)."""
    if raw_dir is not None:
        return Path(raw_dir), "given with --raw"
    if settings.state_path.exists():
        return settings.export_dir, "the folder the last successful `features build` read"
    return settings.raw_dir, ("the home's default export folder: no `features build` has succeeded in this home, "
                              "so none was recorded; pass --raw or run `salesml features build --raw <folder>`")


def read_label_tables(settings: Settings, spec: ModelSpec, raw_dir: Path, why: str = "") -> dict[str, pd.DataFrame]:
    """The model's tables from the export (required ones must be there; the rest when present).
    ``why``: how the folder was chosen, said when it holds none of them."""
    from salesml.validation import ContractError, read_export

    def lacking(what: str) -> ValueError:
        return ValueError(f"model '{spec.name}': the export folder {raw_dir} ({why or 'as given'}) {what}")

    if not Path(raw_dir).is_dir():
        raise lacking("does not exist")
    project = settings.project(raw_dir)
    report = read_export(raw_dir, tables=spec.tables.all, required_tables=spec.tables.required,
                         extra=project.extra_columns(), optional=optional_columns(spec))
    if report.violations:
        raise ContractError(report.violations)
    if not report.frames:
        raise lacking(f"holds none of its tables ({', '.join(spec.tables.all)})")
    return report.frames


def optional_columns(spec: ModelSpec) -> dict[str, set[str]]:
    """Required contract columns this model's export may leave out: those the features can do
    without (``Table.omittable``) and those its label reads nowhere."""
    out = {t.name: set(t.omittable) for t in TABLES.values() if t.omittable}
    if spec.label.kind == "conversion" and "rep_id" not in spec.keys:
        out.setdefault("lead_assignments", set()).add("rep_id")
    return out


def numbers_as_floats(frame: pd.DataFrame, service) -> pd.DataFrame:
    """Count and flag features (Feast Int64, Bool) as float64, missing as NaN: the model reads every
    number as a float, and a flag column with gaps would otherwise come back as Python objects."""
    from feast.types import Bool, Int64

    typed = {f.name for p in service.feature_view_projections for f in p.features if f.dtype in (Int64, Bool)}
    for col in typed & set(frame.columns):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    return frame


def build_training_set(settings: Settings, model: str, raw_dir: Path | None = None,
                       feature_service: str | None = None, store=None,
                       labels: pd.DataFrame | None = None, spec: ModelSpec | None = None) -> TrainingSet:
    """Labelled point-in-time frame for ``model`` through Feast's historical retrieval."""
    raw_dir, why = export_folder(settings, raw_dir)
    spec = spec or settings.spec(model, raw_dir)
    keys, end = list(spec.keys), None
    if labels is None:
        frames = read_label_tables(settings, spec, raw_dir, why)
        labels, keys, end = label_rows(spec, frames, settings.project(raw_dir).export.as_of)
    labels, collapsed = collapse_duplicates(labels, keys)
    if labels.empty:
        raise IncompleteWindows(f"no label rows for model '{model}' in {raw_dir}")
    if not any(settings.feature_data_dir.glob("*.parquet")):
        raise ValueError(f"no feature files in {settings.feature_data_dir}: run `salesml features build` first")
    store = store or open_store(settings)
    service_name = feature_service or spec.feature_service
    service = store.get_feature_service(service_name)
    frame = numbers_as_floats(store.get_historical_features(entity_df=labels, features=service).to_df(), service)
    feature_cols = [c for c in frame.columns if c not in set(labels.columns)]
    return TrainingSet(
        model=model, feature_service=service_name, frame=frame, entity_columns=keys,
        start=labels["event_timestamp"].min(), end=labels["event_timestamp"].max(),
        duplicates_collapsed=collapsed, feature_columns=feature_cols, export_end=end,
    )
