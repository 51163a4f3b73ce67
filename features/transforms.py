"""Raw contract tables -> feature tables, one per Feast feature view.

The same functions build the offline feature files (``salesml features build``) and the rows
that live events push to the online store, so training and serving see one definition of
every feature.  They run as DuckDB SQL over pandas frames: window functions over 20M usage
rows stay fast and within memory where pandas ``groupby().rolling()`` does not.

Every feature row carries ``event_timestamp`` = the moment its value became known; for
weekly usage that is the *end* of the week, so a week's usage never leaks into a label
observed during that week.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

import duckdb
import pandas as pd

from features.custom import CustomFeature

TS = pd.DatetimeTZDtype("us", "UTC")

# Behaviour measures watched for the "below own baseline" early-warning pattern.
BASELINE_MEASURES = ("key_feature_uses", "api_calls", "config_changes", "scans_run", "custom_rules")
TREND_MEASURES = ("key_feature_uses", "api_calls", "scans_run", "custom_rules")
BASELINE_WEEKS = 12  # the account's own baseline: mean of the previous 12 weeks
BASELINE_MIN_WEEKS = 4  # fewer weeks of history -> no baseline, trend features missing
BELOW_BASELINE_RATIO = 0.8
STREAK_WEEKS = 3  # weeks in a row with >= 2 measures below baseline -> early warning
USAGE_MEASURES = ("logins", "active_users", "key_feature_uses", "api_calls", "config_changes",
                  "scans_run", "custom_rules")
TIER_RANK = {"basic": 1, "pro": 2, "enterprise": 3}
SENIORITY_RANK = {"junior": 1, "mid": 2, "senior": 3}

# The type of every built-in feature, by meaning, in the contract's dtype names: the one source of
# the Feast schema (features.definitions), of the feature files' column types and of pushed rows.
# int: counts, ranks, whole days or weeks (missing stays missing: nullable); bool: flags; float:
# amounts, ratios, averages, trends; str: categories. The model still reads every number as a
# float (training.data.prepare_features).
FEATURE_TYPES: dict[str, dict[str, str]] = {
    "contract": {"annual_value": "float", "tier_rank": "int", "days_to_renewal": "int",
                 "contract_age_days": "int", "sla_gap": "float", "sla_breached": "bool"},
    "behaviour": {
        **dict.fromkeys(USAGE_MEASURES, "int"),
        "logins_4w_avg": "float", "key_feature_uses_4w_avg": "float", "api_calls_wow": "float",
        "key_feature_uses_wow": "float", "api_calls_mom": "float", "below_baseline_measures": "int",
        "below_baseline_streak": "int", "early_warning": "bool", "usage_trend_4v12": "float",
        "weeks_of_history": "int", "weeks_since_active": "int", "active_weeks_26w": "int",
        "active_weeks_52w": "int", "active_weeks_total": "int"},
    "relationship": {"touchpoints_90d": "int", "communication_quality_90d": "float",
                     "communication_quality_365d": "float", "nps_avg_365d": "float",
                     "joint_project_touchpoints_180d": "int", "nps_last": "int", "days_since_last_touch": "int"},
    "account_profile": {},
    "lead_activity": {
        "page_views_7d": "int", "pricing_page_views_7d": "int", "pricing_dwell_seconds_7d": "float",
        "case_study_views_30d": "int", "doc_downloads_30d": "int", "pricing_sheet_downloads_30d": "int",
        "webinar_completion_max_30d": "float", "competitor_social_30d": "int", "budget_signals_90d": "int",
        "tender_signals_90d": "int", "events_total": "int", "events_per_week": "float"},
    "lead_profile": {"lead_industry": "str", "lead_region": "str", "lead_product": "str", "lead_source": "str",
                     "company_size": "int"},
    "rep_state": {"open_leads": "int", "capacity": "int", "load_ratio": "float", "win_rate_90d": "float",
                  "avg_close_cycle_days": "float", "seniority_rank": "int", "rep_region": "str",
                  "rep_industries": "str", "rep_products": "str"},
    # computed at request time (an on-demand view), never stored
    "lead_rep_fit": {"industry_match": "bool", "product_match": "bool", "region_match": "bool"},
}
# Clocks: features that grow with elapsed time by construction (an age, weeks of history, active weeks
# counted over the lifetime or over a window longer than a young account's history). They differ between
# any two dates, so the drift check reports them apart from its verdict (drift.evidently_check).
CLOCK_FEATURES = frozenset({"contract_age_days", "weeks_of_history", "active_weeks_total", "active_weeks_52w",
                            "active_weeks_26w"})
# What an export that leaves out an omittable contract column (``Table.omittable``) loses: the
# built-in features that column feeds, empty for every row (the lead-rep fit flags, computed at
# request time, are then never true). ``data validate`` says so; tests/features/test_export_path_f1.py
# checks every entry against build_all.
FED_BY_OMITTABLE: dict[str, dict[str, tuple[str, ...]]] = {
    "accounts": {"industry": (), "region": ()},
    "contracts": {"tier": ("tier_rank",), "annual_value": ("annual_value",), "start_date": ("contract_age_days",),
                  "end_date": ("days_to_renewal",), "sla_target": ("sla_gap", "sla_breached")},
    "usage_weekly": {"logins": ("logins", "logins_4w_avg"), "active_users": ("active_users",),
                     "key_feature_uses": ("key_feature_uses", "key_feature_uses_4w_avg", "key_feature_uses_wow"),
                     "api_calls": ("api_calls", "api_calls_wow", "api_calls_mom"),
                     "config_changes": ("config_changes",)},
    "interactions": {"channel": ()},
    "leads": {"industry": ("lead_industry", "industry_match"), "region": ("lead_region", "region_match"),
              "source": ("lead_source",), "product_interest": ("lead_product", "product_match")},
    "reps": {"region": ("rep_region", "region_match"), "industries": ("rep_industries", "industry_match"),
             "products": ("rep_products", "product_match"), "seniority": ("seniority_rank",)},
    "rep_state": {"open_leads": ("open_leads", "load_ratio"), "win_rate_90d": ("win_rate_90d",)},
}
# How each type is held in a pandas frame of features (and so in the parquet files).
PANDAS_TYPES = {"int": "Int64", "bool": "boolean", "float": "float64", "str": "object"}


def custom_type(f: CustomFeature) -> str:
    """A custom feature's type, by what its transform computes from the column."""
    if f.fn == "count" or (f.fn == "sum" and f.type == "boolean"):
        return "int"
    if f.fn in (None, "last"):
        return {"categorical": "str", "boolean": "bool"}.get(f.type, "float")
    if f.type == "boolean" and f.fn in ("max", "min"):
        return "bool"
    return "float"


def feature_types(view: str, custom: dict[str, list[CustomFeature]] | None = None) -> dict[str, str]:
    """Feature name -> type of a view: built-in, then the project's custom features of that view."""
    out = dict(FEATURE_TYPES[view])
    for feats in (custom or {}).values():
        for f in feats:
            if f.view == view:
                out.setdefault(f.name, custom_type(f))
    return out


def _typed_frame(df: pd.DataFrame, view: str, custom: Sequence[CustomFeature] = ()) -> pd.DataFrame:
    """The view's features with their declared types (the SQL computes numbers as DOUBLE). A count
    that is not whole, or a flag not 0/1, raises instead of being rounded into another meaning."""
    types = feature_types(view, {"": list(custom)})
    for name, kind in types.items():
        if name in df.columns and kind != "str" and df[name].dtype != PANDAS_TYPES[kind]:
            df[name] = df[name].astype(PANDAS_TYPES[kind])
    return df


_CONNECTIONS = threading.local()


def _connection() -> duckdb.DuckDBPyConnection:
    """This thread's in-memory DuckDB connection, opened once: opening one costs ~25 ms, which a live
    push (a few rows through the same transform) would otherwise pay every time. Keyed by process too,
    so a forked child never reuses its parent's connection."""
    con = getattr(_CONNECTIONS, "con", None)
    if con is None or _CONNECTIONS.pid != os.getpid():
        con = duckdb.connect()
        con.execute("SET TimeZone='UTC'")
        _CONNECTIONS.con, _CONNECTIONS.pid = con, os.getpid()
    return con


def _sql(query: str, **frames: pd.DataFrame) -> pd.DataFrame:
    con = _connection()
    registered = []
    try:
        for name, frame in frames.items():
            con.register(name, frame)
            registered.append(name)
        out = con.execute(query).df()
    finally:
        for name in registered:
            con.unregister(name)
    return _utc_us(out)


def _utc_us(df: pd.DataFrame) -> pd.DataFrame:
    """Feast's duckdb store rejects ns tz-aware timestamps: keep microsecond UTC."""
    for col in df.columns:
        if pd.api.types.is_datetime64_any_dtype(df[col].dtype):
            s = df[col]
            s = s.dt.tz_localize("UTC") if s.dt.tz is None else s.dt.tz_convert("UTC")
            df[col] = s.astype(pd.DatetimeTZDtype("us", "UTC"))
    return df


def _optional(df: pd.DataFrame, columns: tuple[str, ...], dtype: str = "Float64") -> pd.DataFrame:
    """Optional contract columns absent from an export become empty columns, not errors."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        df = df.assign(**{c: pd.Series(pd.NA, index=df.index, dtype=dtype) for c in missing})
    return df


def contract_features(contracts: pd.DataFrame, custom: Sequence[CustomFeature] = ()) -> pd.DataFrame:
    contracts = _optional(contracts, ("sla_attainment", "annual_value", "sla_target"))
    contracts = _optional(contracts, ("tier",), "string")
    contracts = _optional(contracts, ("start_date", "end_date"), TS)
    tier_case = " ".join(f"WHEN '{k}' THEN {v}" for k, v in TIER_RANK.items())
    extra = "".join(f",\n               MAX({_typed(f)}) AS {_q(f.name)}" for f in custom)
    return _typed_frame(_sql(
        f"""
        SELECT account_id,
               snapshot_at AS event_timestamp,
               SUM(annual_value)::DOUBLE AS annual_value,
               MAX(CASE tier {tier_case} END)::DOUBLE AS tier_rank,
               MIN(date_diff('day', snapshot_at, end_date))::DOUBLE AS days_to_renewal,
               MAX(date_diff('day', start_date, snapshot_at))::DOUBLE AS contract_age_days,
               MIN(sla_attainment - sla_target)::DOUBLE AS sla_gap,
               -- unknown attainment is not "no breach": NULL unless some contract says either way
               MAX(CASE WHEN sla_attainment IS NULL OR sla_target IS NULL THEN NULL
                        WHEN sla_attainment < sla_target THEN 1 ELSE 0 END)::DOUBLE AS sla_breached{extra}
        FROM contracts
        GROUP BY account_id, snapshot_at
        ORDER BY account_id, snapshot_at
        """,
        contracts=contracts,
    ), "contract", custom)


def _q(name: str) -> str:
    """A column name as a DuckDB identifier (custom names come from a user's file)."""
    return '"' + name.replace('"', '""') + '"'


def _typed(f: CustomFeature, expr: str | None = None) -> str:
    """A custom column's value as DOUBLE (numbers, booleans as 0/1) or VARCHAR (categories)."""
    expr = expr or _q(f.column)
    if f.type == "categorical":
        return f"({expr})::VARCHAR"
    return f"({expr})::INT::DOUBLE" if f.type == "boolean" else f"({expr})::DOUBLE"


def _densify(usage: pd.DataFrame, measures: list[str], until: pd.Timestamp | None,
             stops: pd.Series | None) -> pd.DataFrame:
    """One row per account and week from its first week on: a week without a row had no activity.

    Filled weeks carry 0 for the measures the export has (NULL for those it lacks). With ``until``
    (the export end) every account runs to the last complete week before it, except accounts whose
    terminal churn (``stops``: account -> time) came after their last row: they are gone, not silent.
    Without this, an account that went quiet would keep its last active week's values, and a
    feature view's TTL would then blank it: dormant customers would look healthy or unknown.
    """
    bounds = usage.groupby("account_id")["week_start"].agg(["min", "max"])
    last = bounds["max"]
    if until is not None:
        extend = pd.Series(pd.Timestamp(until) - pd.Timedelta(days=7), index=bounds.index)
        if stops is not None and len(stops):
            gone = stops.reindex(bounds.index)
            extend = extend.where(~(gone >= bounds["max"]), bounds["max"])
        last = pd.concat([bounds["max"], extend], axis=1).max(axis=1)
    n = ((last - bounds["min"]) / pd.Timedelta(days=7)).astype(int) + 1
    if (n == usage.groupby("account_id").size().reindex(bounds.index)).all():
        return usage  # already dense: nothing to fill
    grid = pd.DataFrame({"account_id": bounds.index.repeat(n)})
    offsets = grid.groupby("account_id").cumcount().to_numpy()
    starts = pd.DatetimeIndex(bounds["min"].repeat(n))
    grid["week_start"] = (starts + pd.to_timedelta(offsets * 7, unit="D")).astype(usage["week_start"].dtype)
    out = grid.merge(usage, on=["account_id", "week_start"], how="left")
    filled = out[measures].isna().all(axis=1) if measures else pd.Series(False, index=out.index)
    for m in measures:
        out[m] = out[m].astype("Float64").mask(filled & out[m].isna(), 0)
    return out


def missing_activity(activity: str | None, columns: Sequence[str]) -> str | None:
    """What is wrong when the churn rule's activity column (``label.churn.activity``) is not a
    column of usage_weekly; None when it is (or when no column is named: any measure counts)."""
    if activity is None or activity in columns:
        return None
    return (f"label.churn.activity: usage_weekly has no column '{activity}' (has {', '.join(map(str, columns))}); "
            "name one of them under models.chs.churn.activity in salesml.yaml")


def behaviour_features(usage: pd.DataFrame, custom: Sequence[CustomFeature] = (), until: pd.Timestamp | None = None,
                       stops: pd.Series | None = None, activity: str | None = None) -> pd.DataFrame:
    """Weekly behaviour: measures, trends, the below-own-baseline streak, recency and frequency.

    ``custom``: the usage table's custom features (``features.custom``); their numeric measures
    count as activity, join the own-baseline watch and the usage trend. ``activity``: the column
    whose value > 0 makes a week active (default: any measure > 0); ValueError when usage has no
    such column.
    """
    problem = missing_activity(activity, list(usage.columns))
    if problem:
        raise ValueError(problem)
    present = [m for m in USAGE_MEASURES if m in usage.columns]
    custom_numeric = list(dict.fromkeys(f.column for f in custom if f.type == "numeric"))
    usage = _densify(usage, present + custom_numeric, until, stops)
    usage = _optional(usage, USAGE_MEASURES, "Int64")
    watched = [m for m in BASELINE_MEASURES if m in present] + custom_numeric
    trend_measures = [m for m in TREND_MEASURES if m in present] + custom_numeric
    need = min(2, len(watched)) or 1
    w = "OVER (PARTITION BY account_id ORDER BY week_start"
    base = f"{w} ROWS BETWEEN {BASELINE_WEEKS} PRECEDING AND 1 PRECEDING)"
    # Below own baseline: under 0.8x the mean of the previous 12 weeks, or silent (0) after having
    # used the measure before, once the baseline itself has worn down to 0 (dormant is not healthy).
    below = " + ".join(
        f"(CASE WHEN n_prev >= {BASELINE_MIN_WEEKS} AND ({_q(m)} < {BELOW_BASELINE_RATIO} * base_{i} "
        f"OR ({_q(m)} = 0 AND base_{i} = 0 AND ever_{i} > 0)) THEN 1 ELSE 0 END)"
        for i, m in enumerate(watched)
    ) or "0"
    base_cols = "".join(f"AVG({_q(m)}) {base} AS base_{i}, MAX({_q(m)}) {w} ROWS BETWEEN UNBOUNDED PRECEDING "
                        f"AND 1 PRECEDING) AS ever_{i},\n" for i, m in enumerate(watched))
    trend_cols = "".join(
        f"AVG({_q(m)}) {w} ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) AS recent_{i},\n"
        f"AVG({_q(m)}) {w} ROWS BETWEEN 15 PRECEDING AND 4 PRECEDING) AS before_{i},\n"
        for i, m in enumerate(trend_measures)
    )
    # The mean over the measures the export has: a measure it lacks must not blank the trend.
    terms = [f"ln((recent_{i} + 1) / (before_{i} + 1))" for i in range(len(trend_measures))]
    trend = (f"({' + '.join(f'COALESCE({t}, 0)' for t in terms)}) / NULLIF("
             f"{' + '.join(f'({t} IS NOT NULL)::INT' for t in terms)}, 0)") if terms else "NULL"
    act_cols = [activity] if activity else present + custom_numeric
    active = " OR ".join(f"COALESCE({_q(c)}, 0) > 0" for c in act_cols) or "FALSE"
    custom_sel = ""
    for f in custom:
        col = _q(f.column)
        if f.fn is None:
            expr = _typed(f) if f.type == "numeric" else _typed(f, f"last_value({col} IGNORE NULLS) {w} "
                                                                  "ROWS UNBOUNDED PRECEDING)")
        else:
            rows = f"ROWS BETWEEN {f.days // 7 - 1} PRECEDING AND CURRENT ROW" if f.days else "ROWS UNBOUNDED PRECEDING"
            agg = {"count": f"COUNT({col}) FILTER (WHERE {col} > 0)", "last": f"last_value({col} IGNORE NULLS)"}.get(
                f.fn, f"{str(f.fn).upper()}({col})")
            expr = f"({agg} {w} {rows}))::DOUBLE"
        custom_sel += f",\n               {expr} AS {_q(f.name)}"
    return _typed_frame(_sql(
        f"""
        WITH u0 AS (
            SELECT *, ({active}) AS is_active FROM usage
        ), u AS (
            SELECT *,
                   COUNT(*) {base} AS n_prev,
                   {base_cols}
                   LAG(api_calls) {w}) AS api_prev_week,
                   LAG(key_feature_uses) {w}) AS kfu_prev_week,
                   SUM(api_calls) {w} ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) AS api_4w,
                   SUM(api_calls) {w} ROWS BETWEEN 7 PRECEDING AND 4 PRECEDING) AS api_prev_4w,
                   AVG(logins) {w} ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) AS logins_4w_avg,
                   AVG(key_feature_uses) {w} ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) AS kfu_4w_avg,
                   COUNT(*) {w} ROWS BETWEEN 7 PRECEDING AND CURRENT ROW) AS n_8w,
                   COUNT(*) {w} ROWS BETWEEN 15 PRECEDING AND CURRENT ROW) AS n_16w,
                   {trend_cols}
                   MAX(CASE WHEN is_active THEN week_start END) {w} ROWS UNBOUNDED PRECEDING) AS last_active,
                   SUM(is_active::INT) {w} ROWS BETWEEN 25 PRECEDING AND CURRENT ROW) AS active_26w,
                   SUM(is_active::INT) {w} ROWS BETWEEN 51 PRECEDING AND CURRENT ROW) AS active_52w,
                   SUM(is_active::INT) {w} ROWS UNBOUNDED PRECEDING) AS active_total,
                   ROW_NUMBER() {w}) AS weeks_of_history
            FROM u0
        ), flagged AS (
            SELECT *, ({below}) AS below_baseline_measures FROM u
        ), runs AS (
            SELECT *,
                   SUM(CASE WHEN below_baseline_measures >= {need} THEN 0 ELSE 1 END) {w}
                       ROWS UNBOUNDED PRECEDING) AS run_id
            FROM flagged
        ), streaks AS (
            SELECT *,
                   CASE WHEN below_baseline_measures >= {need}
                        THEN COUNT(*) OVER (PARTITION BY account_id, run_id ORDER BY week_start
                                            ROWS UNBOUNDED PRECEDING) - (CASE WHEN run_id = 0 THEN 0 ELSE 1 END)
                        ELSE 0 END AS below_baseline_streak
            FROM runs
        )
        SELECT account_id,
               week_start + INTERVAL 7 DAY AS event_timestamp,
               logins::DOUBLE AS logins, active_users::DOUBLE AS active_users,
               key_feature_uses::DOUBLE AS key_feature_uses, api_calls::DOUBLE AS api_calls,
               config_changes::DOUBLE AS config_changes, scans_run::DOUBLE AS scans_run,
               custom_rules::DOUBLE AS custom_rules,
               logins_4w_avg::DOUBLE AS logins_4w_avg,
               kfu_4w_avg::DOUBLE AS key_feature_uses_4w_avg,
               CASE WHEN api_prev_week > 0 THEN api_calls / api_prev_week - 1 END::DOUBLE AS api_calls_wow,
               CASE WHEN kfu_prev_week > 0 THEN key_feature_uses / kfu_prev_week - 1 END::DOUBLE
                   AS key_feature_uses_wow,
               CASE WHEN n_8w = 8 AND api_prev_4w > 0 THEN api_4w / api_prev_4w - 1 END::DOUBLE
                   AS api_calls_mom,
               CASE WHEN n_prev >= {BASELINE_MIN_WEEKS}
                    THEN below_baseline_measures END::DOUBLE AS below_baseline_measures,
               CASE WHEN n_prev >= {BASELINE_MIN_WEEKS}
                    THEN below_baseline_streak END::DOUBLE AS below_baseline_streak,
               CASE WHEN n_prev >= {BASELINE_MIN_WEEKS}
                    THEN (below_baseline_streak >= {STREAK_WEEKS})::INT END::DOUBLE AS early_warning,
               -- last 4 weeks against the 12 before them: a slow decline before any streak shows
               CASE WHEN n_16w = 16 THEN {trend} END::DOUBLE AS usage_trend_4v12,
               weeks_of_history::DOUBLE AS weeks_of_history,
               -- recency and frequency of activity (purchases, logins...): silence is a signal
               (date_diff('day', last_active, week_start) / 7)::DOUBLE AS weeks_since_active,
               active_26w::DOUBLE AS active_weeks_26w,
               active_52w::DOUBLE AS active_weeks_52w,
               active_total::DOUBLE AS active_weeks_total{custom_sel}
        FROM streaks
        ORDER BY account_id, event_timestamp
        """,
        usage=usage,
    ), "behaviour", custom)


def _event_aggs(f: CustomFeature, key: str, ts: str, filt: str = "") -> str:
    """A custom event column's trailing-window aggregate (or latest value) at each row."""
    col = _q(f.column)
    where = f" FILTER (WHERE {filt})" if filt else ""
    frame = (f"RANGE BETWEEN INTERVAL {f.days} DAY PRECEDING AND CURRENT ROW" if f.days
             else "ROWS UNBOUNDED PRECEDING")
    order = f"ORDER BY {ts}" + (", is_grid" if filt else "")
    if f.fn == "last":
        return _typed(f, f"last_value({col} IGNORE NULLS) OVER (PARTITION BY {key} {order} {frame})")
    agg = f"COUNT({col})" if f.fn == "count" else f"{str(f.fn).upper()}({col})"
    return f"({agg}{where} OVER (PARTITION BY {key} {order} {frame}))::DOUBLE"


def relationship_features(interactions: pd.DataFrame, grid: pd.DataFrame | None = None,
                          custom: Sequence[CustomFeature] = ()) -> pd.DataFrame:
    """Trailing-window relationship measures on a weekly grid.

    The grid (account_id, event_timestamp) is normally the behaviour view's week ends, so the
    relationship layer is as fresh as behaviour and a silent account's touchpoint count falls
    to zero instead of freezing at its last interaction.
    """
    interactions = _optional(interactions, ("communication_quality", "nps"))
    interactions = _optional(interactions, ("joint_project",), "boolean")
    cols = list(dict.fromkeys(f.column for f in custom))
    num = {f.column for f in custom if f.type != "categorical"}
    stream_cols = "".join(f", {_typed_raw(c, c in num)} AS {_q(c)}" for c in cols)
    grid_nulls = "".join(f", NULL AS {_q(c)}" for c in cols)
    custom_agg = "".join(f",\n                   {_event_aggs(f, 'account_id', 'ts')} AS {_q(f.name)}"
                         for f in custom)
    custom_sel = "".join(f", {_q(f.name)}" for f in custom)
    if grid is None:
        grid = interactions[["account_id", "occurred_at"]].rename(columns={"occurred_at": "event_timestamp"})
    def win(days: int | None, agg: str) -> str:
        if days:
            frame = f"ORDER BY ts RANGE BETWEEN INTERVAL {days} DAY PRECEDING AND CURRENT ROW"
        else:  # interactions before grid rows at equal times
            frame = "ORDER BY ts, is_grid ROWS UNBOUNDED PRECEDING"
        return f"{agg} OVER (PARTITION BY account_id {frame})"

    # One ordered stream per account: interactions carry values, grid rows carry none; window
    # aggregates over the stream are exact for any grid spacing, then only grid rows are kept.
    return _typed_frame(_sql(
        f"""
        WITH stream AS (
            SELECT account_id, occurred_at AS ts, FALSE AS is_grid, 1 AS touch,
                   communication_quality AS q, nps, COALESCE(joint_project, FALSE)::INT AS joint{stream_cols}
            FROM interactions
            UNION ALL
            SELECT DISTINCT account_id, event_timestamp, TRUE, 0, NULL, NULL, 0{grid_nulls} FROM grid
        ), agg AS (
            SELECT account_id, ts, is_grid,
                   {win(90, "SUM(touch)")} AS touchpoints_90d,
                   {win(90, "AVG(q)")} AS communication_quality_90d,
                   {win(365, "AVG(q)")} AS communication_quality_365d,
                   {win(365, "AVG(nps)")} AS nps_avg_365d,
                   {win(180, "SUM(joint)")} AS joint_project_touchpoints_180d,
                   {win(None, "last_value(nps IGNORE NULLS)")} AS nps_last,
                   {win(None, "MAX(CASE WHEN touch = 1 THEN ts END)")} AS last_touch{custom_agg}
            FROM stream
        )
        SELECT account_id, ts AS event_timestamp,
               touchpoints_90d::DOUBLE AS touchpoints_90d,
               communication_quality_90d::DOUBLE AS communication_quality_90d,
               -- a year of contacts: a steadier read of the relationship than one quarter's few
               communication_quality_365d::DOUBLE AS communication_quality_365d,
               nps_avg_365d::DOUBLE AS nps_avg_365d,
               joint_project_touchpoints_180d::DOUBLE AS joint_project_touchpoints_180d,
               nps_last::DOUBLE AS nps_last,
               date_diff('day', last_touch, ts)::DOUBLE AS days_since_last_touch{custom_sel}
        FROM agg WHERE is_grid
        ORDER BY account_id, event_timestamp
        """,
        grid=grid, interactions=interactions,
    ), "relationship", custom)


def lead_activity_features(lead_events: pd.DataFrame, custom: Sequence[CustomFeature] = ()) -> pd.DataFrame:
    """Trailing counts per lead, one row per event time (as fresh as the latest signal)."""
    # No dwell / webinar columns in the export: those features stay unknown, not 0.
    zero_dwell = "0" if "dwell_seconds" in lead_events.columns else "NULL"
    zero_webinar = "0" if "webinar_completion" in lead_events.columns else "NULL"
    lead_events = _optional(lead_events, ("dwell_seconds", "webinar_completion"))
    lead_events = _optional(lead_events, ("page", "doc_type"), "string")

    def win(days: int, cond: str, agg: str = "COUNT(*)") -> str:
        return (f"{agg} FILTER (WHERE {cond}) OVER (PARTITION BY lead_id ORDER BY occurred_at "
                f"RANGE BETWEEN INTERVAL {days} DAY PRECEDING AND CURRENT ROW)")

    pricing = "event_type = 'page_view' AND page = 'pricing'"
    custom_agg = "".join(f",\n                   {_event_aggs(f, 'lead_id', 'occurred_at')} AS {_q(f.name)}"
                         for f in custom)
    custom_sel = "".join(f", {_q(f.name)}" for f in custom)
    return _typed_frame(_sql(
        f"""
        WITH e AS (
            SELECT lead_id, occurred_at,
                   {win(7, "event_type = 'page_view'")} AS page_views_7d,
                   {win(7, pricing)} AS pricing_page_views_7d,
                   {win(7, pricing, "SUM(dwell_seconds)")} AS pricing_dwell_seconds_7d,
                   {win(30, "event_type = 'page_view' AND page = 'case_study'")} AS case_study_views_30d,
                   {win(30, "event_type = 'doc_download'")} AS doc_downloads_30d,
                   {win(30, "event_type = 'doc_download' AND doc_type = 'pricing_sheet'")}
                       AS pricing_sheet_downloads_30d,
                   {win(30, "event_type = 'webinar'", "MAX(webinar_completion)")} AS webinar_completion_max_30d,
                   {win(30, "event_type = 'competitor_social'")} AS competitor_social_30d,
                   {win(90, "event_type = 'budget_signal'")} AS budget_signals_90d,
                   {win(90, "event_type = 'tender_signal'")} AS tender_signals_90d,
                   COUNT(*) OVER (PARTITION BY lead_id ORDER BY occurred_at
                                  RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS events_total,
                   MIN(occurred_at) OVER (PARTITION BY lead_id) AS first_event_at,
                   ROW_NUMBER() OVER (PARTITION BY lead_id, occurred_at ORDER BY event_id DESC) AS dup{custom_agg}
            FROM lead_events
        )
        SELECT lead_id, occurred_at AS event_timestamp,
               page_views_7d::DOUBLE AS page_views_7d,
               pricing_page_views_7d::DOUBLE AS pricing_page_views_7d,
               COALESCE(pricing_dwell_seconds_7d, {zero_dwell})::DOUBLE AS pricing_dwell_seconds_7d,
               case_study_views_30d::DOUBLE AS case_study_views_30d,
               doc_downloads_30d::DOUBLE AS doc_downloads_30d,
               pricing_sheet_downloads_30d::DOUBLE AS pricing_sheet_downloads_30d,
               COALESCE(webinar_completion_max_30d, {zero_webinar})::DOUBLE AS webinar_completion_max_30d,
               competitor_social_30d::DOUBLE AS competitor_social_30d,
               budget_signals_90d::DOUBLE AS budget_signals_90d,
               tender_signals_90d::DOUBLE AS tender_signals_90d,
               events_total::DOUBLE AS events_total,
               -- engagement rate since the first signal, so a young lead is not judged by its count
               (events_total * 7.0 / GREATEST(7.0, epoch(occurred_at - first_event_at) / 86400.0))::DOUBLE
                   AS events_per_week{custom_sel}
        FROM e WHERE dup = 1
        ORDER BY lead_id, event_timestamp
        """,
        lead_events=lead_events,
    ), "lead_activity", custom)


def _custom_select(custom: Sequence[CustomFeature], alias: str = "") -> str:
    return "".join(f",\n               {_typed(f, alias + _q(f.column))} AS {_q(f.name)}" for f in custom)


def _typed_raw(column: str, numeric: bool) -> str:
    return f"({_q(column)})::INT::DOUBLE" if not numeric else f"({_q(column)})"


def account_profile_features(accounts: pd.DataFrame, custom: list[CustomFeature]) -> pd.DataFrame:
    """An account's company-specific attributes (plan, seats, add-ons...), known from creation."""
    return _typed_frame(_sql(
        f"""
        SELECT account_id, created_at AS event_timestamp{_custom_select(custom)}
        FROM accounts ORDER BY account_id
        """,
        accounts=accounts,
    ), "account_profile", custom)


def lead_profile_features(leads: pd.DataFrame, custom: Sequence[CustomFeature] = ()) -> pd.DataFrame:
    """Static lead attributes. ``expected_deal_amount`` is subjective and deliberately left out."""
    leads = _optional(leads, ("company_size",), "Int64")
    leads = _optional(leads, ("industry", "region", "product_interest", "source"), "string")
    return _typed_frame(_sql(
        f"""
        SELECT lead_id, created_at AS event_timestamp,
               industry::VARCHAR AS lead_industry, region::VARCHAR AS lead_region,
               product_interest::VARCHAR AS lead_product, source::VARCHAR AS lead_source,
               company_size::DOUBLE AS company_size{_custom_select(custom)}
        FROM leads ORDER BY lead_id
        """,
        leads=leads,
    ), "lead_profile", custom)


def rep_state_features(rep_state: pd.DataFrame, reps: pd.DataFrame, custom: Sequence[CustomFeature] = ()
                       ) -> pd.DataFrame:
    rep_state = _optional(rep_state, ("capacity", "open_leads"), "Int64")
    rep_state = _optional(rep_state, ("win_rate_90d", "avg_close_cycle_days"))
    reps = _optional(reps, ("region", "industries", "products", "seniority"), "string")
    rank = " ".join(f"WHEN '{k}' THEN {v}" for k, v in SENIORITY_RANK.items())
    extra = "".join(f",\n               {_typed(f, ('r.' if f.table == 'reps' else 's.') + _q(f.column))} "
                    f"AS {_q(f.name)}" for f in custom)
    return _typed_frame(_sql(
        f"""
        SELECT s.rep_id, s.as_of AS event_timestamp,
               s.open_leads::DOUBLE AS open_leads,
               s.capacity::DOUBLE AS capacity,
               CASE WHEN s.capacity > 0 THEN s.open_leads / s.capacity END::DOUBLE AS load_ratio,
               s.win_rate_90d::DOUBLE AS win_rate_90d,
               s.avg_close_cycle_days::DOUBLE AS avg_close_cycle_days,
               (CASE r.seniority {rank} END)::DOUBLE AS seniority_rank,
               r.region::VARCHAR AS rep_region,
               r.industries::VARCHAR AS rep_industries,
               r.products::VARCHAR AS rep_products{extra}
        FROM rep_state s JOIN reps r USING (rep_id)
        ORDER BY s.rep_id, s.as_of
        """,
        rep_state=rep_state, reps=reps,
    ), "rep_state", custom)


def lead_rep_fit(df: pd.DataFrame) -> pd.DataFrame:
    """Lead x rep fit, computed at request time (Feast on-demand view) and in training alike."""
    def member(item: pd.Series, items: pd.Series) -> pd.Series:
        return pd.Series(
            [isinstance(a, str) and isinstance(b, str) and a in b.split("|")
             for a, b in zip(item, items)], index=df.index, dtype=bool,
        )

    out = pd.DataFrame(index=df.index)
    out["industry_match"] = member(df["lead_industry"], df["rep_industries"])
    out["product_match"] = member(df["lead_product"], df["rep_products"])
    same_region = df["lead_region"].astype("string") == df["rep_region"].astype("string")
    out["region_match"] = same_region.fillna(False).astype(bool)
    return out


def build_all(frames: dict[str, pd.DataFrame], custom: dict[str, list[CustomFeature]] | None = None,
              until: pd.Timestamp | None = None, stops: pd.Series | None = None,
              activity: str | None = None) -> dict[str, pd.DataFrame]:
    """Every offline feature table the export allows (keys: feature view names).

    ``custom``: features of company-specific columns per table (``features.custom``); ``until``:
    the export end, to which weekly behaviour runs for accounts still there (``stops``: terminal
    churn time per account); ``activity``: the usage column that makes a week active.
    """
    custom = custom or {}
    out: dict[str, pd.DataFrame] = {}
    if "contracts" in frames:
        out["contract"] = contract_features(frames["contracts"], custom.get("contracts", []))
    if "usage_weekly" in frames:
        out["behaviour"] = behaviour_features(frames["usage_weekly"], custom.get("usage_weekly", []),
                                              until, stops, activity)
    if "interactions" in frames:
        grid = out.get("behaviour", pd.DataFrame(columns=["account_id", "event_timestamp"]))
        grid = pd.concat([
            grid[["account_id", "event_timestamp"]],
            out["contract"][["account_id", "event_timestamp"]] if "contract" in out else None,
        ])
        out["relationship"] = relationship_features(frames["interactions"], grid, custom.get("interactions", []))
    if "accounts" in frames and custom.get("accounts"):
        out["account_profile"] = account_profile_features(frames["accounts"], custom["accounts"])
    if "lead_events" in frames:
        out["lead_activity"] = lead_activity_features(frames["lead_events"], custom.get("lead_events", []))
    if "leads" in frames:
        out["lead_profile"] = lead_profile_features(frames["leads"], custom.get("leads", []))
    if "rep_state" in frames and "reps" in frames:
        out["rep_state"] = rep_state_features(frames["rep_state"], frames["reps"],
                                              custom.get("reps", []) + custom.get("rep_state", []))
    return out
