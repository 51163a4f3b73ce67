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

import duckdb
import pandas as pd

# Behaviour measures watched for the "below own baseline" early-warning pattern.
BASELINE_MEASURES = ("key_feature_uses", "api_calls", "config_changes", "scans_run", "custom_rules")
TREND_MEASURES = ("key_feature_uses", "api_calls", "scans_run", "custom_rules")
BASELINE_WEEKS = 12  # the account's own baseline: mean of the previous 12 weeks
BASELINE_MIN_WEEKS = 4  # fewer weeks of history -> no baseline, trend features missing
BELOW_BASELINE_RATIO = 0.8
STREAK_WEEKS = 3  # weeks in a row with >= 2 measures below baseline -> early warning
TIER_RANK = {"basic": 1, "pro": 2, "enterprise": 3}
SENIORITY_RANK = {"junior": 1, "mid": 2, "senior": 3}


def _sql(query: str, **frames: pd.DataFrame) -> pd.DataFrame:
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone='UTC'")
        for name, frame in frames.items():
            con.register(name, frame)
        out = con.execute(query).df()
    finally:
        con.close()
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


def contract_features(contracts: pd.DataFrame) -> pd.DataFrame:
    contracts = _optional(contracts, ("sla_attainment",))
    tier_case = " ".join(f"WHEN '{k}' THEN {v}" for k, v in TIER_RANK.items())
    return _sql(
        f"""
        SELECT account_id,
               snapshot_at AS event_timestamp,
               SUM(annual_value)::DOUBLE AS annual_value,
               MAX(CASE tier {tier_case} END)::DOUBLE AS tier_rank,
               MIN(date_diff('day', snapshot_at, end_date))::DOUBLE AS days_to_renewal,
               MAX(date_diff('day', start_date, snapshot_at))::DOUBLE AS contract_age_days,
               MIN(sla_attainment - sla_target)::DOUBLE AS sla_gap,
               MAX(CASE WHEN sla_attainment < sla_target THEN 1 ELSE 0 END)::DOUBLE AS sla_breached
        FROM contracts
        GROUP BY account_id, snapshot_at
        ORDER BY account_id, snapshot_at
        """,
        contracts=contracts,
    )


def behaviour_features(usage: pd.DataFrame) -> pd.DataFrame:
    usage = _optional(usage, ("scans_run", "custom_rules"), "Int64")
    w = "OVER (PARTITION BY account_id ORDER BY week_start"
    base = f"{w} ROWS BETWEEN {BASELINE_WEEKS} PRECEDING AND 1 PRECEDING)"
    below = " + ".join(
        f"(CASE WHEN n_prev >= {BASELINE_MIN_WEEKS} AND {m} < {BELOW_BASELINE_RATIO} * base_{m} "
        f"THEN 1 ELSE 0 END)"
        for m in BASELINE_MEASURES
    )
    base_cols = ",\n".join(f"AVG({m}) {base} AS base_{m}" for m in BASELINE_MEASURES)
    trend_cols = ",\n".join(
        f"AVG({m}) {w} ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) AS recent_{m},\n"
        f"AVG({m}) {w} ROWS BETWEEN 15 PRECEDING AND 4 PRECEDING) AS before_{m}"
        for m in TREND_MEASURES
    )
    trend = " + ".join(f"ln((recent_{m} + 1) / (before_{m} + 1))" for m in TREND_MEASURES)
    return _sql(
        f"""
        WITH u AS (
            SELECT *,
                   COUNT(*) {base} AS n_prev,
                   {base_cols},
                   LAG(api_calls) {w}) AS api_prev_week,
                   LAG(key_feature_uses) {w}) AS kfu_prev_week,
                   SUM(api_calls) {w} ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) AS api_4w,
                   SUM(api_calls) {w} ROWS BETWEEN 7 PRECEDING AND 4 PRECEDING) AS api_prev_4w,
                   AVG(logins) {w} ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) AS logins_4w_avg,
                   AVG(key_feature_uses) {w} ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) AS kfu_4w_avg,
                   COUNT(*) {w} ROWS BETWEEN 7 PRECEDING AND CURRENT ROW) AS n_8w,
                   COUNT(*) {w} ROWS BETWEEN 15 PRECEDING AND CURRENT ROW) AS n_16w,
                   {trend_cols},
                   ROW_NUMBER() {w}) AS weeks_of_history
            FROM usage
        ), flagged AS (
            SELECT *, ({below}) AS below_baseline_measures FROM u
        ), runs AS (
            SELECT *,
                   SUM(CASE WHEN below_baseline_measures >= 2 THEN 0 ELSE 1 END) {w}
                       ROWS UNBOUNDED PRECEDING) AS run_id
            FROM flagged
        ), streaks AS (
            SELECT *,
                   CASE WHEN below_baseline_measures >= 2
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
               CASE WHEN n_16w = 16 THEN ({trend}) / {len(TREND_MEASURES)} END::DOUBLE AS usage_trend_4v12,
               weeks_of_history::DOUBLE AS weeks_of_history
        FROM streaks
        ORDER BY account_id, event_timestamp
        """,
        usage=usage,
    )


def relationship_features(interactions: pd.DataFrame, grid: pd.DataFrame | None = None) -> pd.DataFrame:
    """Trailing-window relationship measures on a weekly grid.

    The grid (account_id, event_timestamp) is normally the behaviour view's week ends, so the
    relationship layer is as fresh as behaviour and a silent account's touchpoint count falls
    to zero instead of freezing at its last interaction.
    """
    interactions = _optional(interactions, ("communication_quality", "nps"))
    interactions = _optional(interactions, ("joint_project",), "boolean")
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
    return _sql(
        f"""
        WITH stream AS (
            SELECT account_id, occurred_at AS ts, FALSE AS is_grid, 1 AS touch,
                   communication_quality AS q, nps, COALESCE(joint_project, FALSE)::INT AS joint
            FROM interactions
            UNION ALL
            SELECT DISTINCT account_id, event_timestamp, TRUE, 0, NULL, NULL, 0 FROM grid
        ), agg AS (
            SELECT account_id, ts, is_grid,
                   {win(90, "SUM(touch)")} AS touchpoints_90d,
                   {win(90, "AVG(q)")} AS communication_quality_90d,
                   {win(365, "AVG(q)")} AS communication_quality_365d,
                   {win(365, "AVG(nps)")} AS nps_avg_365d,
                   {win(180, "SUM(joint)")} AS joint_project_touchpoints_180d,
                   {win(None, "last_value(nps IGNORE NULLS)")} AS nps_last,
                   {win(None, "MAX(CASE WHEN touch = 1 THEN ts END)")} AS last_touch
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
               date_diff('day', last_touch, ts)::DOUBLE AS days_since_last_touch
        FROM agg WHERE is_grid
        ORDER BY account_id, event_timestamp
        """,
        grid=grid, interactions=interactions,
    )


def lead_activity_features(lead_events: pd.DataFrame) -> pd.DataFrame:
    """Trailing counts per lead, one row per event time (as fresh as the latest signal)."""
    lead_events = _optional(lead_events, ("dwell_seconds", "webinar_completion"))
    lead_events = _optional(lead_events, ("page", "doc_type"), "string")

    def win(days: int, cond: str, agg: str = "COUNT(*)") -> str:
        return (f"{agg} FILTER (WHERE {cond}) OVER (PARTITION BY lead_id ORDER BY occurred_at "
                f"RANGE BETWEEN INTERVAL {days} DAY PRECEDING AND CURRENT ROW)")

    pricing = "event_type = 'page_view' AND page = 'pricing'"
    return _sql(
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
                   ROW_NUMBER() OVER (PARTITION BY lead_id, occurred_at ORDER BY event_id DESC) AS dup
            FROM lead_events
        )
        SELECT lead_id, occurred_at AS event_timestamp,
               page_views_7d::DOUBLE AS page_views_7d,
               pricing_page_views_7d::DOUBLE AS pricing_page_views_7d,
               COALESCE(pricing_dwell_seconds_7d, 0)::DOUBLE AS pricing_dwell_seconds_7d,
               case_study_views_30d::DOUBLE AS case_study_views_30d,
               doc_downloads_30d::DOUBLE AS doc_downloads_30d,
               pricing_sheet_downloads_30d::DOUBLE AS pricing_sheet_downloads_30d,
               COALESCE(webinar_completion_max_30d, 0)::DOUBLE AS webinar_completion_max_30d,
               competitor_social_30d::DOUBLE AS competitor_social_30d,
               budget_signals_90d::DOUBLE AS budget_signals_90d,
               tender_signals_90d::DOUBLE AS tender_signals_90d,
               events_total::DOUBLE AS events_total,
               -- engagement rate since the first signal, so a young lead is not judged by its count
               (events_total * 7.0 / GREATEST(7.0, epoch(occurred_at - first_event_at) / 86400.0))::DOUBLE
                   AS events_per_week
        FROM e WHERE dup = 1
        ORDER BY lead_id, event_timestamp
        """,
        lead_events=lead_events,
    )


def lead_profile_features(leads: pd.DataFrame) -> pd.DataFrame:
    """Static lead attributes. ``expected_deal_amount`` is subjective and deliberately left out."""
    leads = _optional(leads, ("company_size",), "Int64")
    return _sql(
        """
        SELECT lead_id, created_at AS event_timestamp,
               industry::VARCHAR AS lead_industry, region::VARCHAR AS lead_region,
               product_interest::VARCHAR AS lead_product, source::VARCHAR AS lead_source,
               company_size::DOUBLE AS company_size
        FROM leads ORDER BY lead_id
        """,
        leads=leads,
    )


def rep_state_features(rep_state: pd.DataFrame, reps: pd.DataFrame) -> pd.DataFrame:
    rep_state = _optional(rep_state, ("capacity",), "Int64")
    rank = " ".join(f"WHEN '{k}' THEN {v}" for k, v in SENIORITY_RANK.items())
    return _sql(
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
               r.products::VARCHAR AS rep_products
        FROM rep_state s JOIN reps r USING (rep_id)
        ORDER BY s.rep_id, s.as_of
        """,
        rep_state=rep_state, reps=reps,
    )


def lead_rep_fit(df: pd.DataFrame) -> pd.DataFrame:
    """Lead x rep fit, computed at request time (Feast on-demand view) and in training alike."""
    def member(item: pd.Series, items: pd.Series) -> pd.Series:
        return pd.Series(
            [float(isinstance(a, str) and isinstance(b, str) and a in b.split("|"))
             for a, b in zip(item, items)], index=df.index, dtype="float64",
        )

    out = pd.DataFrame(index=df.index)
    out["industry_match"] = member(df["lead_industry"], df["rep_industries"])
    out["product_match"] = member(df["lead_product"], df["rep_products"])
    same_region = df["lead_region"].astype("string") == df["rep_region"].astype("string")
    out["region_match"] = same_region.fillna(False).astype("float64")
    return out


def build_all(frames: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Every offline feature table from a validated export (keys: feature view names)."""
    out: dict[str, pd.DataFrame] = {}
    if "contracts" in frames:
        out["contract"] = contract_features(frames["contracts"])
    if "usage_weekly" in frames:
        out["behaviour"] = behaviour_features(frames["usage_weekly"])
    if "interactions" in frames:
        grid = out.get("behaviour", pd.DataFrame(columns=["account_id", "event_timestamp"]))
        grid = pd.concat([
            grid[["account_id", "event_timestamp"]],
            out["contract"][["account_id", "event_timestamp"]] if "contract" in out else None,
        ])
        out["relationship"] = relationship_features(frames["interactions"], grid)
    if "lead_events" in frames:
        out["lead_activity"] = lead_activity_features(frames["lead_events"])
    if "leads" in frames:
        out["lead_profile"] = lead_profile_features(frames["leads"])
    if "rep_state" in frames and "reps" in frames:
        out["rep_state"] = rep_state_features(frames["rep_state"], frames["reps"])
    return out
