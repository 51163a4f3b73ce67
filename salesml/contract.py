"""The raw-data contract: the tables a CRM + product-analytics export must provide.

Each table is a pandera schema plus its keys, event timestamp and foreign keys.  Every
timestamp is UTC: tz-aware UTC in parquet, ISO-8601 with ``Z`` / ``+00:00`` (or a bare
``YYYY-MM-DD`` date, read as UTC midnight) in CSV.  ``docs/data-contract.md`` is the
human-readable version of this file; ``tests/salesml/test_contract_docs.py`` keeps the two in step.

Every timestamp column also carries ``NOT_BEFORE_MIN`` (no time before ``MIN_TIMESTAMP``: a
1900 or year-1000 date is a broken export, not history), so the Markdown lists it per column.

Numbers are bounded twice: every float column holds a finite value within float32 range
(``FLOAT32_MAX``: XGBoost scores float32, so a larger value becomes inf inside the booster and
makes its entity unscorable), and each numeric column carries a plausibility range (a week of
10**18 logins is a broken feed, not a busy customer). Rules across the columns of a row (a
contract that ends before it starts) are the table's ``row_rules``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import pandera.pandas as pa

TS = pd.DatetimeTZDtype("us", "UTC")  # Feast's duckdb store rejects ns tz-aware timestamps
UTC_TEXT = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]00:?00))?$"
FUTURE_TOLERANCE = pd.Timedelta(days=1)
# The earliest time any timestamp column may hold (sales data older than this is an export error).
MIN_TIMESTAMP = pd.Timestamp("1990-01-01", tz="UTC")
# How far ahead a scheduled date (``future_ok``, e.g. a renewal) may lie: generous, yet year 2999 is an error.
FUTURE_OK_YEARS = 10
# What an entity or event id sent to the service (a request, a pushed row, an outcome) may look like.
ID_PATTERN = r"^[A-Za-z0-9_.:\-]+$"
ID_MAX_LENGTH = 64
# The largest magnitude a float column may hold: XGBoost scores float32, a larger value overflows to inf.
FLOAT32_MAX = float(np.finfo(np.float32).max)
FLOAT_RULE = f"a finite number within float32 range (|x| <= {FLOAT32_MAX:.4g})"
# Plausibility bounds shared by several columns (each column's own range is in TABLES).
MAX_COUNT_WEEK = 100_000_000  # a count per account and week (logins, key feature uses, scans)
MAX_PEOPLE = 10_000_000  # employees, active users, company size: beyond the largest employers
MAX_MONEY = 10_000_000_000  # an annual contract value or a deal, in the export's currency
MAX_DAYS = 3650  # a sales cycle or close cycle: ten years


@dataclass(frozen=True)
class Col:
    name: str
    dtype: str  # "str" | "int" | "float" | "bool" | "ts"
    required: bool = True
    nullable: bool = False
    checks: tuple = ()
    doc: str = ""
    future_ok: bool = False  # scheduled dates (a renewal) may lie ahead; observed times may not

    @property
    def is_id(self) -> bool:
        """An id column: what the API's id pattern must be able to query (``ID_PATTERN``)."""
        return self.dtype == "str" and self.name.endswith("_id")


@dataclass(frozen=True)
class RowRule:
    """A rule across the columns of one row. ``bad(frame)`` is True where a row breaks it; the
    violation names ``column`` and says ``text``. It applies when every column in ``needs`` is in
    the file; a row whose value there was already refused (a type error) is left out."""

    text: str
    column: str
    needs: tuple[str, ...]
    bad: Callable[[pd.DataFrame], pd.Series]


@dataclass(frozen=True)
class Table:
    name: str
    doc: str
    columns: tuple[Col, ...]
    key: tuple[str, ...]
    event_ts: str
    foreign_keys: dict[str, str] = field(default_factory=dict)  # column -> parent table
    # Required columns the features can do without: left out, the features built from them stay
    # empty (``features build`` lists them) instead of the export being refused. Keys, event times
    # and label columns are never among them.
    omittable: tuple[str, ...] = ()
    row_rules: tuple[RowRule, ...] = ()

    @property
    def timestamp_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.dtype == "ts"]

    def col(self, name: str) -> Col:
        return next(c for c in self.columns if c.name == name)


def _in(*values: str) -> tuple:
    return (pa.Check.isin(list(values)),)


def _between(lo: float, hi: float) -> tuple:
    return (pa.Check.in_range(lo, hi),)


def number_text(x: float) -> str:
    """A bound as the docs and violations write it: 86,400, 0.5, 1,000,000,000,000."""
    x = float(x)
    return f"{int(x):,}" if x.is_integer() else f"{x:g}"


def range_text(lo: float | None, hi: float | None) -> str:
    """A plausibility range in words (the contract's ranges and a custom column's min/max)."""
    if lo is not None and hi is not None:
        return f"a value from {number_text(lo)} to {number_text(hi)}"
    if lo is not None:
        return f"a value >= {number_text(lo)}"
    return f"a value <= {number_text(hi)}" if hi is not None else "any value"


def _upto(hi: float) -> tuple:
    """A non-negative quantity with a plausible maximum."""
    return _between(0, hi)


def _ends_after_start(df: pd.DataFrame) -> pd.Series:
    return df["end_date"] < df["start_date"]


def _converted_without_time(df: pd.DataFrame) -> pd.Series:
    return df["converted"].eq(True) & df["converted_at"].isna()


def _time_without_conversion(df: pd.DataFrame) -> pd.Series:
    return df["converted"].eq(False) & df["converted_at"].notna()


# Named in words: contract_doc renders a check's name as the column's rule, validation._explain
# turns it into the violation's "expected" text.
NOT_BEFORE_MIN = pa.Check(lambda s: s.isna() | (s >= MIN_TIMESTAMP),
                          name=f"not before {MIN_TIMESTAMP:%Y-%m-%d}")
MONDAY_MIDNIGHT = pa.Check(lambda s: s.isna() | ((s.dt.dayofweek == 0) & (s == s.dt.normalize())),
                           name="Monday 00:00 UTC")


def _with_timestamp_floor(table: Table) -> Table:
    """Every timestamp column of ``table`` with ``NOT_BEFORE_MIN`` added to its checks."""
    return replace(table, columns=tuple(
        replace(c, checks=(*c.checks, NOT_BEFORE_MIN)) if c.dtype == "ts" else c for c in table.columns))


TABLES: dict[str, Table] = {
    t.name: _with_timestamp_floor(t)
    for t in [
        Table(
            "accounts",
            "One row per customer account (the company that holds contracts).",
            (
                Col("account_id", "str", doc="Account key, referenced by every account table."),
                Col("name", "str", required=False, nullable=True, doc="Display name."),
                Col("industry", "str", doc="Industry, e.g. saas, finance, retail."),
                Col("region", "str", doc="Sales region, e.g. emea, na, apac."),
                Col("employees", "int", required=False, nullable=True, checks=_between(1, MAX_PEOPLE)),
                Col("created_at", "ts", doc="When the account was created in the CRM."),
            ),
            key=("account_id",),
            event_ts="created_at",
            omittable=("industry", "region"),
        ),
        Table(
            "contracts",
            "Contract snapshots: one row per contract per export date (a single snapshot is fine).",
            (
                Col("contract_id", "str"),
                Col("account_id", "str"),
                Col("tier", "str", checks=_in("basic", "pro", "enterprise")),
                Col("annual_value", "float", checks=_upto(MAX_MONEY), doc="Annual contract value."),
                Col("start_date", "ts"),
                Col("end_date", "ts", future_ok=True,
                    doc=f"Renewal date (may lie in the future, at most {FUTURE_OK_YEARS} years ahead)."),
                Col("sla_target", "float", checks=_between(0, 1), doc="Promised SLA, e.g. 0.995."),
                Col(
                    "sla_attainment", "float", required=False, nullable=True,
                    checks=_between(0, 1), doc="SLA attained over the last period.",
                ),
                Col("snapshot_at", "ts", doc="When this snapshot was taken (event time)."),
            ),
            key=("contract_id", "snapshot_at"),
            event_ts="snapshot_at",
            foreign_keys={"account_id": "accounts"},
            omittable=("tier", "annual_value", "start_date", "end_date", "sla_target"),
            row_rules=(RowRule("an end_date not before start_date", "end_date", ("start_date", "end_date"),
                               _ends_after_start),),
        ),
        Table(
            "usage_weekly",
            "Product usage per account and week (behaviour layer). History may be one week.",
            (
                Col("account_id", "str"),
                Col("week_start", "ts", checks=(MONDAY_MIDNIGHT,),
                    doc="Monday 00:00 UTC of the week; known at week end."),
                Col("logins", "int", checks=_upto(MAX_COUNT_WEEK)),
                Col("active_users", "int", checks=_upto(MAX_PEOPLE)),
                Col("key_feature_uses", "int", checks=_upto(MAX_COUNT_WEEK)),
                Col("api_calls", "int", checks=_upto(1_000_000_000_000),
                    doc="API calls in the week (up to ~1.6 million a second)."),
                Col("config_changes", "int", checks=_upto(MAX_PEOPLE), doc="Configuration change depth."),
                Col("scans_run", "int", required=False, nullable=True, checks=_upto(MAX_COUNT_WEEK),
                    doc="Domain measure: vulnerability scans run."),
                Col("custom_rules", "int", required=False, nullable=True, checks=_upto(MAX_PEOPLE),
                    doc="Domain measure: custom rules defined."),
            ),
            key=("account_id", "week_start"),
            event_ts="week_start",
            foreign_keys={"account_id": "accounts"},
            omittable=("logins", "active_users", "key_feature_uses", "api_calls", "config_changes"),
        ),
        Table(
            "interactions",
            "Relationship-layer touchpoints between the customer-success team and the account.",
            (
                Col("interaction_id", "str"),
                Col("account_id", "str"),
                Col("occurred_at", "ts"),
                Col("channel", "str", checks=_in("call", "meeting", "email", "qbr", "survey")),
                Col("csm_id", "str", required=False, nullable=True),
                Col("communication_quality", "float", required=False, nullable=True,
                    checks=_between(1, 5), doc="CSM communication quality score, 1-5."),
                Col("nps", "int", required=False, nullable=True, checks=_between(0, 10)),
                Col("joint_project", "bool", required=False, nullable=True,
                    doc="Interaction is part of a joint innovation project."),
                Col("notes", "str", required=False, nullable=True,
                    doc="Free text; sensitive, never a feature, admin role only."),
            ),
            key=("interaction_id",),
            event_ts="occurred_at",
            foreign_keys={"account_id": "accounts"},
            omittable=("channel",),
        ),
        Table(
            "churn_events",
            "Observed churn and downgrade outcomes (labels for the churn/CHS model).",
            (
                Col("account_id", "str"),
                Col("occurred_at", "ts"),
                Col("kind", "str", checks=_in("churn", "downgrade")),
            ),
            key=("account_id", "occurred_at", "kind"),
            event_ts="occurred_at",
            foreign_keys={"account_id": "accounts"},
        ),
        Table(
            "leads",
            "Leads (prospective buyers) from the CRM.",
            (
                Col("lead_id", "str"),
                Col("industry", "str"),
                Col("region", "str"),
                Col("company_size", "int", required=False, nullable=True, checks=_between(1, MAX_PEOPLE)),
                Col("source", "str", checks=_in("web", "event", "referral", "outbound", "partner")),
                Col("product_interest", "str", doc="Product line the lead asked about."),
                Col("created_at", "ts"),
                Col("expected_deal_amount", "float", required=False, nullable=True, checks=_upto(MAX_MONEY),
                    doc="A rep's subjective estimate; kept for reference, never a feature."),
            ),
            key=("lead_id",),
            event_ts="created_at",
            omittable=("industry", "region", "source", "product_interest"),
        ),
        Table(
            "lead_events",
            "Objective behaviour signals per lead (web analytics, marketing automation, intent feeds).",
            (
                Col("event_id", "str"),
                Col("lead_id", "str"),
                Col("occurred_at", "ts"),
                Col("event_type", "str", checks=_in(
                    "page_view", "doc_download", "webinar", "competitor_social",
                    "budget_signal", "tender_signal",
                )),
                Col("page", "str", required=False, nullable=True,
                    doc="Page path category for page_view: pricing, case_study, product, blog."),
                Col("doc_type", "str", required=False, nullable=True,
                    doc="For doc_download: whitepaper, datasheet, pricing_sheet, case_study."),
                Col("dwell_seconds", "float", required=False, nullable=True, checks=_upto(86_400),
                    doc="Seconds on the page or asset; more than a day is a tracking artefact."),
                Col("webinar_completion", "float", required=False, nullable=True,
                    checks=_between(0, 1), doc="Share of the webinar watched."),
            ),
            key=("event_id",),
            event_ts="occurred_at",
            foreign_keys={"lead_id": "leads"},
        ),
        Table(
            "reps",
            "Sales reps and their skill profile.",
            (
                Col("rep_id", "str"),
                Col("region", "str"),
                Col("industries", "str", doc="Industries the rep knows, '|'-separated."),
                Col("products", "str", doc="Product lines the rep sells, '|'-separated."),
                Col("seniority", "str", checks=_in("junior", "mid", "senior")),
                Col("hired_at", "ts"),
                Col("active", "bool", required=False, nullable=True),
            ),
            key=("rep_id",),
            event_ts="hired_at",
            omittable=("region", "industries", "products", "seniority"),
        ),
        Table(
            "rep_state",
            "Rep workload and performance over time (snapshots).",
            (
                Col("rep_id", "str"),
                Col("as_of", "ts"),
                Col("open_leads", "int", checks=_upto(100_000)),
                Col("capacity", "int", required=False, nullable=True, checks=_between(1, 100_000),
                    doc="Most open leads the rep should carry."),
                Col("win_rate_90d", "float", checks=_between(0, 1)),
                Col("avg_close_cycle_days", "float", nullable=True, checks=_upto(MAX_DAYS)),
            ),
            key=("rep_id", "as_of"),
            event_ts="as_of",
            foreign_keys={"rep_id": "reps"},
            omittable=("open_leads", "win_rate_90d"),
        ),
        Table(
            "lead_assignments",
            "Which rep took which lead, and what came of it (labels for intent and lead match).",
            (
                Col("assignment_id", "str"),
                Col("lead_id", "str"),
                Col("rep_id", "str"),
                Col("assigned_at", "ts"),
                Col("first_touch_at", "ts", required=False, nullable=True),
                Col("converted", "bool"),
                Col("converted_at", "ts", required=False, nullable=True),
                Col("cycle_days", "float", required=False, nullable=True, checks=_upto(MAX_DAYS)),
            ),
            key=("assignment_id",),
            event_ts="assigned_at",
            foreign_keys={"lead_id": "leads", "rep_id": "reps"},
            row_rules=(
                RowRule("a converted_at where converted is true", "converted_at", ("converted", "converted_at"),
                        _converted_without_time),
                RowRule("no converted_at where converted is false", "converted_at", ("converted", "converted_at"),
                        _time_without_conversion),
            ),
        ),
    ]
}
