"""Test exports shaped unlike our own simulator, each with planted signal and a truth table.

The platform is used on a company's own export (the product brief, "Whose data"):
company-specific columns carry most of the signal, customers come as one snapshot, businesses
have no contracts, lead lists have no web feed.  Each generator here writes such an export into
``out_dir``: one CSV per contract table it has (contract column names plus custom columns;
timestamps ISO-8601 UTC text ending in ``Z``; booleans ``true`` / ``false``; NULL = empty field),
the project configuration ``salesml.yaml`` (``export.as_of``, ``custom_columns``, ``models``)
and ``truth/truth.csv`` (entity key, ``event_timestamp``, ``p_true``, ``label``), never features.
Each returns ``{"tables": {table: rows}, "label_rate": ..., "truth_auc": ...}``, truth_auc being
the ROC-AUC of p_true against the realised label: the ceiling a model can reach on the export.
Same ``seed`` -> identical files (one ``numpy.random.default_rng(seed)``, fixed draw order).
``p_true`` is always a function of what the export shows (never of an unobserved latent), so a
model that learned the planted structure perfectly would score exactly truth_auc.

(a) ``snapshot_subscription``: one contract snapshot per account at S = 2025-12-29T00:00:00Z
----------------------------------------------------------------------------------------------
Tables accounts (23 custom columns), contracts (exactly one row per account, snapshot_at = S,
end_date = renewal, may lie after S), churn_events (all after S).  as_of = S + 182 d + 14 d.
Label: the account has a churn or downgrade with S < occurred_at <= S + 182 d (events in the
last 14 days before as_of, after the horizon, do not count).  Planted logit (``_snapshot_logit``),
custom columns first: hinge on seat utilisation active_seats_30d / seats (+3.0 x max(0, 0.6 -
util); +0.3 where seats is NULL, a legacy usage-priced plan), +0.7 x log1p(days since the last
admin login), billing_cycle (monthly +0.4, multi_year -0.5), list-price increase x (0.02 + 0.09
if monthly) -- the interaction: price rises hurt month-to-month customers --, support tickets
hurt only when CSAT < 3 (+0.6 x log1p(tickets)), onboarding not completed +0.9, exec sponsor
-0.6, payment failures +0.45 each (<= 3), integrations -0.35 x log1p, add-ons / SSO / plan /
billing channel small terms; then the deliberately small contract terms: tier (basic +0.15,
enterprise -0.15), -0.12 x log(annual_value / 10k), renewal within the horizon +0.35, SLA
shortfall +0.6 per pp (<= 1).  The event draws sigmoid(logit + b0 + e), e ~ N(0, 0.7^2) the
unobserved latent; p_true = E_e[sigmoid(logit + b0 + e)] (Gauss-Hermite, exact to ~1e-9) and b0
is solved so that mean p_true = 22%.  Plan-correlated terms are kept small because the contract
columns proxy them (tier ~ plan, a 30-day term ~ monthly billing): at n = 4000 a boosted model
on the contract columns alone reaches AUC ~0.72, on all columns ~0.78, truth_auc ~0.83.  Noise
columns: account_owner_pod, signup_promo_code, crm_health_legacy, marketing_opt_in,
dunning_email_variant.  An event is a churn (45%) or a downgrade; 20% of downgrades churn later
(if before as_of); 3% of the others have an event after the horizon.  truth: account_id,
event_timestamp = S, p_true, label.

(b) ``prospect_list``: a B2B lead list for a finance-software vendor, no web events, no reps
-------------------------------------------------------------------------------------------
Tables leads (49 custom firmographic / technographic / contact columns), lead_assignments
(assignment_id, lead_id, assigned_at 3-20 days after created_at, converted, converted_at; no
rep_id column, no reps table).  Leads are created uniformly over 18 months from 2024-12-02;
as_of = last assigned_at + 90 d + 7 d.  Label: converted and converted_at <= assigned_at + 90 d;
6% of the other leads convert later (converted true, converted_at after the 90 days: label 0).
p_true = sigmoid(b0 + ``_prospect_logit``), stationary (no time term), b0 solved for a 17% mean:
employee band sweet spot (201-1000 +0.9, 1-10 -1.0), NetSuite +0.6, QuickBooks +0.5 at 51+
employees else -0.2 (outgrowing it), competitor user (Coupa / Bill.com) +0.6 if series B / C+
funded else -0.5 (the interaction), contact title (CFO +0.7 ... Student -2.0), free-mail address
-0.9, third-party intent score thresholds (>= 70 +1.1, >= 40 +0.35, NULL 0), headcount growth
+1.8 x clip(g, -0.2, 0.4), open finance job postings +0.3 x log1p, Snowflake +0.3, source
(referral +0.5, partner +0.3, event +0.1, outbound -0.4).  Everything else is noise.
truth: lead_id, event_timestamp = assigned_at, p_true, label.

(c) ``purchases_only``: a wholesale food supplier's customers, weekly orders only
--------------------------------------------------------------------------------
Tables accounts (7 custom columns), usage_weekly with only account_id, week_start (Mondays
00:00Z) and custom measures orders (int >= 1) and revenue (float >= 0), one row per week WITH
orders (sparse).  156 weeks end at E = 2026-06-29 (as_of, the Monday after the last week_start);
accounts start at a staggered week (first order that week, orders 1, revenue =
first_order_value).  Hidden regime x_w in {active, dormant}, a Markov chain per account:
P(active -> dormant) = h (1-10%/week), P(dormant -> active) = r (1-3.5%/week); P(order in
week w) = pa (0.25-0.9) if active, 0.005 if dormant (a stray order).  pa, h, r are functions of
the account's custom columns (``_purchase_params``): loyalty members and field-sales / referral
accounts order more often, lapse less and come back more; card payers lapse more; bigger first
orders and more locations order more.  Orders and revenue per order week depend on the account
only (no regime information beyond "ordered").
About half the accounts that go 26 weeks without an order order again later.

Churn label (the rule the training-set builder implements too): observation times are week ends
on one global 4-week grid counted back from E, t_k = E - 28 x k days (k = 0, 1, ...); t is
observed only when t + 182 d <= as_of.  An account is observed at t when it has an order week
before t and one with week_start >= t - 182 d (26 weeks).  label = 1 when it has no order week
with week_start in [t, t + 182 d).  Reactivated accounts are observed again from their next
order on.  p_true = P(label = 1 | attributes, order history up to t), computed exactly: the
forward (HMM) filter over the hidden regime gives a = P(x_{t-1 week} | orders so far), then
p_true = a' (T D)^26 1 with T the transition matrix and D = diag(1 - pa, 1 - 0.005) -- the best
any model can know, with no Monte Carlo.  truth: account_id, event_timestamp = t, p_true, label.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

DAY = pd.Timedelta(days=1)
HORIZON = pd.Timedelta(days=182)
SNAPSHOT_AT = pd.Timestamp("2025-12-29", tz="UTC")  # (a) the snapshot S, a Monday
LEADS_FROM = pd.Timestamp("2024-12-02", tz="UTC")  # (b) first lead creation
EXPORT_END = pd.Timestamp("2026-06-29", tz="UTC")  # (c) E: Monday after the last week_start
WEEKS = 156  # (c) weeks of order history
INACTIVE_WEEKS = 26  # (c) churn = 26 weeks without an order
DORMANT_ORDER_P = 0.005  # (c) a dormant account still orders now and then

NAICS = {"NAICS-5112": 0.22, "NAICS-5182": 0.12, "NAICS-5415": 0.16, "NAICS-5221": 0.10, "NAICS-5241": 0.08,
         "NAICS-4541": 0.10, "NAICS-6221": 0.07, "NAICS-3254": 0.06, "NAICS-4841": 0.05, "NAICS-6113": 0.04}
REGIONS_A = {"EMEA-DACH": ["DE", "AT", "CH"], "EMEA-UKI": ["GB", "IE"], "EMEA-Nordics": ["SE", "NO", "DK", "FI"],
             "NA-East": ["US", "CA"], "NA-West": ["US"], "LATAM": ["BR", "MX", "AR"], "APAC-ANZ": ["AU", "NZ"],
             "APAC-JP": ["JP"]}
PLANS = ["Starter", "Growth", "Scale", "Enterprise+"]

_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(32)
_GH_W = _GH_W / _GH_W.sum()  # E[f(e)], e ~ N(0, 1) = sum(w * f(x))


# ---------------------------------------------------------------------------------------- helpers
def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=float)))


def _mean_sigmoid(z, sigma: float) -> np.ndarray:
    """E[sigmoid(z + sigma * e)], e ~ N(0, 1): P(event | what the export shows)."""
    z = np.asarray(z, dtype=float)
    return _sigmoid(z[:, None] + sigma * _GH_X[None, :]) @ _GH_W


def _intercept(z, target: float, sigma: float = 0.0) -> float:
    """b0 with mean P = target (bisection), so the base rate holds at any n."""
    lo, hi = -15.0, 15.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _mean_sigmoid(z + mid, sigma).mean() < target else (lo, mid)
    return (lo + hi) / 2


def auc(p, y) -> float:
    """ROC-AUC by ranks (ties averaged)."""
    y = np.asarray(y, dtype=bool)
    ranks = pd.Series(np.asarray(p, dtype=float)).rank().to_numpy()
    n1, n0 = y.sum(), (~y).sum()
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _pick(rng, values, probs, n: int) -> np.ndarray:
    probs = np.asarray(probs, dtype=float)
    return np.asarray(values, dtype=object)[rng.choice(len(values), size=n, p=probs / probs.sum())]


def _pick_rows(rng, values, probs_by_row: np.ndarray) -> np.ndarray:
    """One draw per row from that row's probabilities (rows of ``probs_by_row``)."""
    cum = np.cumsum(probs_by_row / probs_by_row.sum(axis=1, keepdims=True), axis=1)
    idx = np.minimum((rng.random(len(cum))[:, None] > cum).sum(axis=1), len(values) - 1)
    return np.asarray(values, dtype=object)[idx]


def _seconds(rng, lo: pd.Timedelta, hi: pd.Timedelta, n: int) -> pd.TimedeltaIndex:
    """Uniform offsets in [lo, hi), whole seconds."""
    return pd.to_timedelta(rng.integers(int(lo.total_seconds()), int(hi.total_seconds()), n), unit="s")


def _nulls(rng, values, share: float) -> pd.Series:
    s = pd.Series(values)
    return s.mask(rng.random(len(s)) < share)


def _csv_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Timestamps as ISO-8601 ``Z`` text, booleans as true/false, NULL stays empty."""
    out = df.copy()
    for c in out.columns:
        s = out[c]
        if isinstance(s.dtype, pd.DatetimeTZDtype):
            out[c] = s.dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        elif pd.api.types.is_bool_dtype(s.dtype):
            out[c] = s.astype(object).map({True: "true", False: "false"})
    return out


def _spec(kind: str, **kw) -> dict:
    """One ``custom_columns`` entry of salesml.yaml (unset keys left out)."""
    return {"type": kind, **{k: v for k, v in kw.items() if v is not None}}


def _num(**kw) -> dict:
    return _spec("numeric", **kw)


def _cat(values: list[str] | None = None, nullable: bool | None = None) -> dict:
    return _spec("categorical", values=values, nullable=nullable)


def _flag(nullable: bool | None = None) -> dict:
    return _spec("boolean", nullable=nullable)


def _write(out_dir: Path, tables: dict[str, pd.DataFrame], config: dict, truth: pd.DataFrame) -> dict:
    out_dir = Path(out_dir)
    (out_dir / "truth").mkdir(parents=True, exist_ok=True)
    for table, cols in config["custom_columns"].items():  # the config only names columns that exist
        missing = set(cols) - set(tables[table].columns)
        assert not missing, f"{table}: declared but not written: {sorted(missing)}"
    for name, df in tables.items():
        _csv_frame(df).to_csv(out_dir / f"{name}.csv", index=False)
    (out_dir / "salesml.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    truth = truth.assign(p_true=truth["p_true"].round(6))
    _csv_frame(truth).to_csv(out_dir / "truth" / "truth.csv", index=False)
    y = truth["label"].to_numpy(dtype=bool)
    return {"tables": {k: len(v) for k, v in tables.items()}, "label_rate": float(y.mean()),
            "truth_auc": auc(truth["p_true"], y)}


def _iso(ts: pd.Timestamp) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------- (a) subscription, one snapshot
def _snapshot_logit(a: pd.DataFrame, c: pd.DataFrame, snapshot: pd.Timestamp) -> np.ndarray:
    """The planted churn-or-downgrade logit (before b0 and the latent), from exported columns only."""
    util = (a["active_seats_30d"] / a["seats"]).to_numpy(dtype=float)
    z = np.where(np.isnan(util), 0.3, 3.0 * np.maximum(0.0, 0.6 - np.nan_to_num(util)))
    z = z + 0.7 * (np.log1p(a["days_since_admin_login"]) - np.log1p(7))
    monthly = (a["billing_cycle"] == "monthly").to_numpy()
    z = z + a["billing_cycle"].map({"monthly": 0.4, "annual": 0.0, "multi_year": -0.5}).to_numpy()
    z = z + (0.02 + 0.09 * monthly) * a["list_price_change_pct"].to_numpy()  # interaction
    csat = a["csat_last_90d"].to_numpy(dtype=float)
    low_csat = np.nan_to_num(csat, nan=5.0) < 3.0  # tickets only hurt when they went badly
    z = z + 0.6 * np.log1p(a["support_tickets_90d"].to_numpy()) * low_csat
    z = z - 0.25 * (np.nan_to_num(csat, nan=3.5) - 3.5)
    z = z + 0.9 * ~a["onboarding_completed"].to_numpy() - 0.6 * a["exec_sponsor_assigned"].to_numpy()
    z = z + 0.45 * np.minimum(a["payment_failures_12m"].to_numpy(), 3)
    z = z - 0.35 * np.log1p(a["integrations_connected"].to_numpy())
    z = z - 0.3 * a["addon_api_access"].to_numpy() - 0.2 * a["addon_analytics_pro"].to_numpy()
    z = z - 0.15 * a["addon_premium_support"].to_numpy() - 0.25 * a["has_sso"].to_numpy()
    z = z + a["plan_name"].map({"Starter": 0.2, "Growth": 0.1, "Scale": 0.0, "Enterprise+": -0.2}).to_numpy()
    z = z + a["billing_channel"].map({"card_self_serve": 0.0, "invoice": 0.0, "aws_marketplace": -0.2,
                                      "reseller": 0.3}).to_numpy()
    # contract layer: deliberately small next to the custom columns
    z = z + c["tier"].map({"basic": 0.15, "pro": 0.0, "enterprise": -0.15}).to_numpy()
    z = z - 0.12 * np.log(c["annual_value"].to_numpy() / 10_000)
    z = z + 0.35 * ((c["end_date"] - snapshot) <= HORIZON).to_numpy()
    shortfall = ((c["sla_target"] - c["sla_attainment"]) * 100).clip(0, 1).fillna(0).to_numpy()
    return z + 0.6 * shortfall


def snapshot_subscription(out_dir: Path, n: int = 4000, seed: int = 0) -> dict:
    """A subscription business exported as one snapshot: accounts, contracts, churn_events."""
    rng = np.random.default_rng(seed)
    s = SNAPSHOT_AT
    as_of = s + HORIZON + 14 * DAY
    plan_i = rng.choice(4, size=n, p=[0.36, 0.30, 0.21, 0.13])
    plan = np.asarray(PLANS, dtype=object)[plan_i]
    region = _pick(rng, list(REGIONS_A), [14, 12, 7, 20, 15, 10, 8, 6], n)
    country = np.array([REGIONS_A[r][k % len(REGIONS_A[r])] for r, k in zip(region, rng.integers(0, 12, n))])
    cycle = _pick_rows(rng, ["monthly", "annual", "multi_year"],
                       np.array([[0.70, 0.28, 0.02], [0.35, 0.55, 0.10], [0.10, 0.65, 0.25],
                                 [0.02, 0.48, 0.50]])[plan_i])
    channel = _pick_rows(rng, ["card_self_serve", "invoice", "aws_marketplace", "reseller"],
                         np.array([[0.80, 0.05, 0.07, 0.08], [0.35, 0.40, 0.12, 0.13],
                                   [0.05, 0.65, 0.15, 0.15], [0.0, 0.75, 0.12, 0.13]])[plan_i])
    seats = np.maximum(1, np.round(np.array([3, 15, 60, 300])[plan_i] * rng.lognormal(0, 0.6, n)))
    active = np.round(seats * rng.beta(4, 2.2, n))
    no_seats = rng.random(n) < 0.07  # legacy usage-priced plans have no seat licence
    tickets = rng.poisson(0.8 * (1 + plan_i) * rng.gamma(2, 0.5, n))
    csat = np.where((tickets > 0) & (rng.random(n) < 0.75), np.clip(rng.normal(3.9, 0.9, n), 1, 5).round(1), np.nan)
    by_plan = lambda probs: rng.random(n) < np.asarray(probs)[plan_i]  # noqa: E731
    a = pd.DataFrame({
        "account_id": [f"CUST-{i:05d}" for i in range(1, n + 1)],
        "industry": _pick(rng, list(NAICS), list(NAICS.values()), n),
        "region": region,
        "created_at": s - _seconds(rng, 60 * DAY, 2400 * DAY, n),
        "plan_name": plan,
        "billing_cycle": cycle,
        "billing_channel": channel,
        "country": country,
        "seats": pd.array(np.where(no_seats, np.nan, seats), dtype="Int64"),
        "active_seats_30d": pd.array(np.where(no_seats, np.nan, active), dtype="Int64"),
        "has_sso": by_plan([0.05, 0.25, 0.6, 0.95]),
        "addon_analytics_pro": by_plan([0.10, 0.30, 0.45, 0.60]),
        "addon_api_access": by_plan([0.15, 0.35, 0.55, 0.75]),
        "addon_premium_support": by_plan([0.02, 0.10, 0.30, 0.70]),
        "integrations_connected": rng.poisson(1 + 1.5 * plan_i),
        "days_since_admin_login": np.minimum(365, np.round(rng.lognormal(np.log(5), 1.1, n))).astype(int),
        "support_tickets_90d": tickets,
        "csat_last_90d": csat,
        "onboarding_completed": rng.random(n) < 0.82,
        "exec_sponsor_assigned": by_plan([0.0, 0.10, 0.35, 0.75]),
        "payment_failures_12m": rng.poisson(0.25 + 0.4 * (channel == "card_self_serve")),
        "list_price_change_pct": _pick(rng, [0, 3, 5, 8, 12], [40, 15, 20, 15, 10], n).astype(int),
        # noise: columns a company exports that carry no signal
        "account_owner_pod": _pick(rng, ["pod-atlas", "pod-borealis", "pod-cobalt", "pod-delta"], [1, 1, 1, 1], n),
        "signup_promo_code": _nulls(rng, _pick(rng, ["SPRING22", "BFCM23", "PARTNER10", "WEBINAR15"],
                                               [3, 2, 2, 1], n), 0.7),
        "crm_health_legacy": np.clip(rng.normal(62, 15, n), 0, 100).round(1),
        "marketing_opt_in": rng.random(n) < 0.55,
        "dunning_email_variant": _pick(rng, ["A", "B", "C"], [1, 1, 1], n),
    })
    tier = np.array(["basic", "pro", "pro", "enterprise"], dtype=object)[plan_i]
    seat_factor = np.where(no_seats, 1.0, (seats / np.array([3, 15, 60, 300])[plan_i]) ** 0.6)
    term = np.select([cycle == "monthly", cycle == "annual"], [30, 365], rng.choice([730, 1095], n))
    end = s + pd.to_timedelta(rng.integers(1, term + 1), unit="D")
    target = pd.Series(tier).map({"basic": 0.99, "pro": 0.995, "enterprise": 0.999}).to_numpy()
    shortfall = np.abs(rng.normal(0, 0.0015, n)) + (rng.random(n) < 0.08) * rng.uniform(0.002, 0.01, n)
    reported = (tier != "basic") & (rng.random(n) >= 0.15)  # basic plans get no SLA report
    c = pd.DataFrame({
        "contract_id": [f"SUB-{i:06d}" for i in range(1, n + 1)],
        "account_id": a["account_id"],
        "tier": tier,
        "annual_value": (np.array([1200, 9000, 30000, 120000])[plan_i] * seat_factor
                         * rng.lognormal(0, 0.3, n)).round(2),
        "start_date": end - pd.to_timedelta(term, unit="D"),
        "end_date": end,
        "sla_target": target,
        "sla_attainment": np.where(reported, np.clip(target - shortfall, 0, 1).round(5), np.nan),
        "snapshot_at": s,
    })
    # the CRM record predates the current term
    before_term = c["start_date"] - _seconds(rng, DAY, 45 * DAY, n)
    a["created_at"] = a["created_at"].where(a["created_at"] <= before_term, before_term)

    sigma = 0.7
    z = _snapshot_logit(a, c, s)
    z = z + _intercept(z, 0.22, sigma)
    p_true = _mean_sigmoid(z, sigma)
    label = rng.random(n) < _sigmoid(z + sigma * rng.normal(size=n))

    at = s + _seconds(rng, pd.Timedelta(seconds=1), HORIZON + pd.Timedelta(seconds=1), n)
    kind = np.where(rng.random(n) < 0.45, "churn", "downgrade")
    later = at + _seconds(rng, 14 * DAY, 120 * DAY, n)
    then_churn = label & (kind == "downgrade") & (rng.random(n) < 0.2) & (later <= as_of)
    late = ~label & (rng.random(n) < 0.03)  # an outcome after the horizon: not a label
    late_at = s + _seconds(rng, HORIZON + pd.Timedelta(seconds=1), HORIZON + 14 * DAY, n)
    ids = a["account_id"].to_numpy()
    events = pd.concat([
        pd.DataFrame({"account_id": ids[label], "occurred_at": at[label], "kind": kind[label]}),
        pd.DataFrame({"account_id": ids[then_churn], "occurred_at": later[then_churn], "kind": "churn"}),
        pd.DataFrame({"account_id": ids[late], "occurred_at": late_at[late], "kind": kind[late]}),
    ]).sort_values(["occurred_at", "account_id"], kind="stable").reset_index(drop=True)

    num, cat, flag = _num, _cat, _flag()
    custom = {
        "plan_name": cat(PLANS), "billing_cycle": cat(["monthly", "annual", "multi_year"]),
        "billing_channel": cat(["card_self_serve", "invoice", "aws_marketplace", "reseller"]),
        "country": cat(), "seats": num(min=0, nullable=True),
        "active_seats_30d": num(min=0, nullable=True), "has_sso": flag, "addon_analytics_pro": flag,
        "addon_api_access": flag, "addon_premium_support": flag, "integrations_connected": num(min=0),
        "days_since_admin_login": num(min=0), "support_tickets_90d": num(min=0),
        "csat_last_90d": num(min=1, max=5, nullable=True), "onboarding_completed": flag,
        "exec_sponsor_assigned": flag, "payment_failures_12m": num(min=0), "list_price_change_pct": num(),
        "account_owner_pod": cat(), "signup_promo_code": cat(nullable=True),
        "crm_health_legacy": num(min=0, max=100), "marketing_opt_in": flag,
        "dunning_email_variant": cat(["A", "B", "C"]),
    }
    config = {"export": {"as_of": _iso(as_of)}, "custom_columns": {"accounts": custom},
              "models": {"chs": {"horizon_days": 182}}}
    truth = pd.DataFrame({"account_id": ids, "event_timestamp": s, "p_true": p_true, "label": label.astype(int)})
    return _write(out_dir, {"accounts": a, "contracts": c, "churn_events": events}, config, truth)


# -------------------------------------------------------------------- (b) prospect list, no reps
BANDS = ["1-10", "11-50", "51-200", "201-500", "501-1000", "1001-5000", "5000+"]
FUNDING = ["bootstrapped", "seed", "series_a", "series_b", "series_c_plus", "pe_backed", "public"]
TITLES = {  # title: (share, seniority, department, planted effect)
    "CFO": (8, "c_level", "finance", 0.7), "VP Finance": (8, "vp", "finance", 0.7),
    "Controller": (12, "director", "finance", 0.5), "Head of FP&A": (8, "director", "finance", 0.5),
    "Accounts Payable Manager": (14, "manager", "finance", 0.3), "Finance Analyst": (16, "ic", "finance", 0.0),
    "IT Director": (8, "director", "it", -0.2), "Procurement Manager": (8, "manager", "procurement", 0.1),
    "Office Manager": (12, "manager", "operations", -0.4), "Student": (6, "ic", "other", -2.0),
}
TECH = {  # flag: (logit at 100 employees, slope per decade of employees)
    "uses_salesforce": (-0.6, 0.9), "uses_hubspot": (-0.5, -0.3), "uses_snowflake": (-2.0, 0.9),
    "uses_aws": (0.2, 0.4), "uses_azure": (-0.6, 0.6), "uses_gcp": (-1.4, 0.2), "uses_okta": (-1.5, 1.0),
    "uses_workday": (-2.8, 1.3), "uses_coupa": (-3.2, 1.2), "uses_bill_com": (-1.8, -0.2),
    "uses_slack": (0.5, 0.1), "uses_ms_teams": (0.0, 0.5), "uses_tableau": (-1.8, 0.7), "uses_power_bi": (-0.8, 0.5),
    "uses_zendesk": (-1.3, 0.2), "uses_jira": (-0.5, 0.4), "uses_shopify": (-1.8, -0.4), "uses_stripe": (-0.8, -0.1),
}
ERPS = ["uses_quickbooks", "uses_xero", "uses_netsuite", "uses_sap_s4", None]
REGIONS_B = {"AMER-N": ["US", "US", "US", "CA"], "EMEA": ["GB", "DE", "FR", "NL", "SE", "ES", "IE"],
             "APAC": ["AU", "SG", "JP", "IN"], "LATAM": ["BR", "MX", "CO", "CL"]}


def _prospect_logit(leads: pd.DataFrame) -> np.ndarray:
    """The planted conversion logit (before b0), from exported lead columns only."""
    band = leads["employees_band"]
    z = band.map(dict(zip(BANDS, [-1.0, -0.3, 0.4, 0.9, 0.9, 0.6, -0.1]))).to_numpy()
    z = z + 0.6 * leads["uses_netsuite"].to_numpy() - 0.1 * leads["uses_sap_s4"].to_numpy()
    grown = band.isin(BANDS[2:]).to_numpy()  # QuickBooks at 51+ employees: outgrowing it
    z = z + leads["uses_quickbooks"].to_numpy() * np.where(grown, 0.5, -0.2)
    competitor = (leads["uses_coupa"] | leads["uses_bill_com"]).to_numpy()
    funded = leads["funding_stage"].isin(["series_b", "series_c_plus"]).to_numpy()
    z = z + competitor * np.where(funded, 0.6, -0.5)  # funded competitor users replace it
    z = z + leads["contact_title"].map({t: v[3] for t, v in TITLES.items()}).to_numpy()
    z = z - 0.9 * (leads["email_domain_type"] == "free_mail").to_numpy()
    intent = leads["intent_topic_score"].to_numpy(dtype=float, na_value=np.nan)
    z = z + np.select([intent >= 70, intent >= 40], [1.1, 0.35], 0.0)  # NaN compares False: no effect
    growth = leads["yoy_headcount_growth"].to_numpy(dtype=float)
    z = z + 1.8 * np.clip(np.nan_to_num(growth), -0.2, 0.4)
    z = z + 0.3 * np.log1p(leads["open_finance_job_postings"].to_numpy()) + 0.3 * leads["uses_snowflake"].to_numpy()
    return z + leads["source"].map({"referral": 0.5, "partner": 0.3, "event": 0.1, "outbound": -0.4,
                                    "web": 0.0}).to_numpy()


def prospect_list(out_dir: Path, n: int = 6000, seed: int = 0) -> dict:
    """A B2B prospect list (leads + lead_assignments), rich firmographics, no web events, no reps."""
    rng = np.random.default_rng(seed)
    emp = np.clip(np.round(rng.lognormal(np.log(180), 1.6, n)), 1, 200_000)
    band_i = np.searchsorted([10, 50, 200, 500, 1000, 5000], emp, side="left")
    size_grp = np.searchsorted([50, 1000], emp, side="left")
    decade = np.log10(emp) - 2
    region = _pick(rng, list(REGIONS_B), [45, 30, 15, 10], n)
    title = _pick(rng, list(TITLES), [v[0] for v in TITLES.values()], n)
    funding = _pick_rows(rng, FUNDING, np.array([[45, 25, 18, 7, 2, 2, 1], [25, 8, 17, 20, 15, 10, 5],
                                                 [10, 0, 3, 10, 20, 25, 32]], dtype=float)[size_grp])
    erp = _pick_rows(rng, ERPS, np.array([[45, 25, 5, 0, 25], [20, 8, 35, 7, 30], [2, 1, 25, 45, 27]],
                                         dtype=float)[size_grp])
    leads = pd.DataFrame({
        "lead_id": [f"PL-{i:06d}" for i in range(1, n + 1)],
        "industry": _pick(rng, list(NAICS), list(NAICS.values()), n),
        "region": region,
        "source": _pick(rng, ["web", "event", "referral", "outbound", "partner"], [30, 15, 12, 33, 10], n),
        "product_interest": _pick(rng, ["Ledgerly AP Automation", "Ledgerly Spend", "Ledgerly Close",
                                        "Ledgerly Treasury"], [40, 25, 20, 15], n),
        "created_at": LEADS_FROM + _seconds(rng, 0 * DAY, 548 * DAY, n),
        "employees_band": np.asarray(BANDS, dtype=object)[band_i],
        "employees_exact": pd.array(_nulls(rng, emp, 0.35), dtype="Int64"),
        "annual_revenue_usd": pd.array(_nulls(rng, (emp * rng.lognormal(np.log(180_000), 0.5, n)).round(-3), 0.25),
                                       dtype="Int64"),
        "funding_stage": _nulls(rng, funding, 0.12),
        "hq_country": [REGIONS_B[r][k % len(REGIONS_B[r])] for r, k in zip(region, rng.integers(0, 28, n))],
        "company_age_years": (1 + rng.gamma(2, 7, n)).round(1),
        "yoy_headcount_growth": _nulls(rng, rng.normal(0.08, 0.15, n).round(3), 0.30),
        "open_finance_job_postings": rng.poisson(np.exp(-1 + 0.3 * np.log(emp)) * rng.gamma(2, 0.5, n)),
        "num_legal_entities": 1 + rng.poisson(0.02 * np.sqrt(emp)),
        "is_subsidiary": rng.random(n) < 0.12 + 0.1 * (emp > 1000),
    })
    leads["publicly_traded"] = (leads["funding_stage"] == "public").to_numpy()
    for e in ERPS[:-1]:
        leads[e] = erp == e
    for flag, (a0, slope) in TECH.items():
        leads[flag] = rng.random(n) < _sigmoid(a0 + slope * decade)
    flags = [*ERPS[:-1], *TECH]
    leads["tech_stack_size"] = leads[flags].sum(axis=1) + rng.poisson(3 + 2 * np.maximum(decade + 2, 0))
    free_mail_p = 0.08 + 0.15 * (band_i <= 1) + 0.4 * (title == "Student")
    free_mail = rng.random(n) < free_mail_p
    leads = leads.assign(
        contact_title=title,
        contact_seniority=[TITLES[t][1] for t in title],
        contact_department=[TITLES[t][2] for t in title],
        email_domain_type=np.where(free_mail, "free_mail", "corporate"),
        contact_linkedin_connections=pd.array(_nulls(rng, rng.poisson(rng.gamma(2, 250, n)), 0.4), dtype="Int64"),
        phone_verified=rng.random(n) < 0.4,
        gdpr_consent=pd.array(np.where(region == "EMEA", rng.random(n) < 0.7, None), dtype="boolean"),
        intent_topic_score=pd.array(_nulls(rng, np.round(100 * rng.beta(2, 3, n)), 0.35), dtype="Int64"),
        # noise: exported with the list, no bearing on conversion
        web_traffic_rank=pd.array(_nulls(rng, np.round(rng.lognormal(12, 1.5, n)), 0.3), dtype="Int64"),
        g2_reviews_written=rng.poisson(0.5, n),
        marketing_list=_pick(rng, ["FY25-Q1-webinar", "G2-intent-import", "trade-show-Money2020",
                                   "purchased-list-ZI", "newsletter"], [2, 1, 1, 2, 3], n),
        enrichment_vendor=_pick(rng, ["zoominfo", "clearbit", "apollo", "manual"], [4, 3, 2, 1], n),
        data_quality_score=rng.random(n).round(2),
        crm_owner_team=_pick(rng, ["sdr-east", "sdr-west", "sdr-intl"], [1, 1, 1], n),
        campaign_code=_nulls(rng, _pick(rng, ["CMP-2401", "CMP-2407", "CMP-2502", "CMP-2509"], [1, 1, 1, 1], n), 0.5),
    )
    z = _prospect_logit(leads)
    p_true = _sigmoid(z + _intercept(z, 0.17))
    label = rng.random(n) < p_true

    assigned = leads["created_at"] + _seconds(rng, 3 * DAY, 20 * DAY, n)
    as_of = assigned.max() + 97 * DAY
    won_at = assigned + pd.to_timedelta(np.clip(rng.gamma(2, 15, n), 0.05, 89.9) * 86400, unit="s").round("s")
    late = ~label & (rng.random(n) < 0.06)  # closes after the 90-day window: not a conversion for the label
    room = (as_of - assigned - 90 * DAY).clip(upper=120 * DAY).dt.total_seconds().to_numpy()
    late_at = assigned + 90 * DAY + pd.to_timedelta(np.floor(1 + rng.random(n) * (room - 1)), unit="s")
    assignments = pd.DataFrame({
        "assignment_id": [f"ASG-{i:06d}" for i in range(1, n + 1)],
        "lead_id": leads["lead_id"],
        "assigned_at": assigned,
        "converted": label | late,
        "converted_at": won_at.where(label, late_at.where(late)),
    }).sort_values("assigned_at", kind="stable").reset_index(drop=True)

    num, cat, flag = _num, _cat, _flag()
    custom = {
        "employees_band": cat(BANDS), "employees_exact": num(min=1, nullable=True),
        "annual_revenue_usd": num(min=0, nullable=True), "funding_stage": cat(FUNDING, nullable=True),
        "hq_country": cat(), "company_age_years": num(min=0), "yoy_headcount_growth": num(nullable=True),
        "open_finance_job_postings": num(min=0), "num_legal_entities": num(min=1), "is_subsidiary": flag,
        "publicly_traded": flag, **{f: flag for f in flags}, "tech_stack_size": num(min=0),
        "contact_title": cat(list(TITLES)), "contact_seniority": cat(["c_level", "vp", "director", "manager", "ic"]),
        "contact_department": cat(), "email_domain_type": cat(["corporate", "free_mail"]),
        "contact_linkedin_connections": num(min=0, nullable=True), "phone_verified": flag,
        "gdpr_consent": _flag(nullable=True), "intent_topic_score": num(min=0, max=100, nullable=True),
        "web_traffic_rank": num(min=1, nullable=True), "g2_reviews_written": num(min=0), "marketing_list": cat(),
        "enrichment_vendor": cat(), "data_quality_score": num(min=0, max=1), "crm_owner_team": cat(),
        "campaign_code": cat(nullable=True),
    }
    config = {"export": {"as_of": _iso(as_of)}, "custom_columns": {"leads": custom},
              "models": {"intent": {"horizon_days": 90}}}
    truth = pd.DataFrame({"lead_id": leads["lead_id"], "event_timestamp": assigned, "p_true": p_true,
                          "label": label.astype(int)})
    return _write(out_dir, {"leads": leads, "lead_assignments": assignments}, config, truth)


# -------------------------------------------------------------- (c) purchases only, weekly orders
CHANNELS = {"field_sales": (0.3, -0.4, 0.5), "referral": (0.2, -0.3, 0.3), "trade_show": (0.0, 0.0, 0.0),
            "paid_search": (-0.3, 0.35, -0.2), "marketplace": (-0.5, 0.5, -0.3)}  # (pa, h, r) logit effects


def _purchase_params(acc: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-account weekly order probability when active, lapse and return probabilities."""
    ch = acc["acquisition_channel"]
    eff = {k: ch.map({c: v[i] for c, v in CHANNELS.items()}).to_numpy() for i, k in enumerate("phr")}
    loyal = acc["loyalty_member"].to_numpy()
    basket = np.log(acc["first_order_value"].to_numpy() / 180)
    locations = np.log(acc["locations_count"].to_numpy(dtype=float, na_value=1.0))
    card = (acc["payment_terms"] == "card").to_numpy()
    pa = _sigmoid(0.1 + 0.9 * loyal + eff["p"] + 0.35 * basket + 0.4 * locations)
    h = _sigmoid(-3.4 - 0.7 * loyal + eff["h"] + 0.4 * card - 0.2 * basket)
    r = _sigmoid(-4.4 + 0.6 * loyal + eff["r"])
    return pa, h, r


def purchases_only(out_dir: Path, n: int = 3000, seed: int = 0) -> dict:
    """A purchases-only business: accounts + sparse weekly orders, churn = 26 weeks without an order."""
    rng = np.random.default_rng(seed)
    week_starts = EXPORT_END - pd.to_timedelta(7 * np.arange(WEEKS, 0, -1), unit="D")
    start = rng.integers(0, WEEKS - 30, n)  # staggered first-order week
    industry = _pick(rng, ["NAICS-7225", "NAICS-7223", "NAICS-7211", "NAICS-4451", "NAICS-6111", "NAICS-6231"],
                     [45, 10, 12, 15, 8, 10], n)
    acc = pd.DataFrame({
        "account_id": [f"BUYER-{i:05d}" for i in range(1, n + 1)],
        "industry": industry,
        "region": _pick(rng, ["zone-metro", "zone-north", "zone-south", "zone-coast"], [40, 20, 25, 15], n),
        "created_at": week_starts[start] - _seconds(rng, 0 * DAY, 6 * DAY, n),
        "acquisition_channel": _pick(rng, list(CHANNELS), [20, 15, 10, 30, 25], n),
        "first_order_value": rng.lognormal(np.log(180), 0.6, n).round(2),
        "loyalty_member": rng.random(n) < 0.35,
        "payment_terms": _pick(rng, ["card", "net15", "net30", "prepaid"], [40, 20, 30, 10], n),
        "locations_count": pd.array(_nulls(rng, 1 + rng.poisson(0.4, n), 0.10), dtype="Int64"),
        "delivery_slot_pref": _nulls(rng, _pick(rng, ["early_morning", "morning", "afternoon"], [3, 4, 2], n), 0.2),
        "signup_device": _pick(rng, ["web", "app", "phone"], [5, 3, 2], n),
    })
    pa, h, r = _purchase_params(acc)
    emit = np.column_stack([pa, np.full(n, DORMANT_ORDER_P)])  # P(order | active), P(order | dormant)

    def step(v: np.ndarray) -> np.ndarray:  # one week of the regime chain: v -> v T
        return np.column_stack([v[:, 0] * (1 - h) + v[:, 1] * r, v[:, 0] * h + v[:, 1] * (1 - r)])

    # the observed grid as week indices: t_k = week_starts[WEEKS - 4k] (E itself for k = 0); k >= 7 <=> t + 182 d <= E
    grid = [WEEKS - 4 * k for k in range(WEEKS // 4, 6, -1) if WEEKS - 4 * k >= 1]
    dormant = np.zeros(n, dtype=bool)
    alpha = np.zeros((n, 2))  # forward filter: P(active), P(dormant) this week given the orders so far
    bought = np.zeros((n, WEEKS), dtype=bool)
    belief = {}
    for w in range(WEEKS):  # simulate week by week, filtering alongside
        u_move, u_buy = rng.random(n), rng.random(n)
        new, alive = start == w, start < w
        dormant = np.where(dormant, u_move >= r, u_move < h) & alive
        y = new | (alive & (u_buy < np.where(dormant, emit[:, 1], pa)))
        bought[:, w] = y
        post = step(alpha) * np.where(y[:, None], emit, 1 - emit)
        post /= np.where(alive, post.sum(axis=1), 1.0)[:, None]
        alpha = np.where(new[:, None], [1.0, 0.0], np.where(alive[:, None], post, 0.0))
        if w + 1 in grid:
            belief[w + 1] = alpha  # over the last week before t
    cum = np.concatenate([np.zeros((n, 1), dtype=int), bought.cumsum(axis=1)], axis=1)  # order weeks before j
    rows = []
    for wt in grid:
        v = belief[wt]
        for _ in range(INACTIVE_WEEKS):  # P(no order in weeks wt .. wt + 25): v <- (v T) D, summed
            v = step(v) * (1 - emit)
        recent = cum[:, wt] - cum[:, max(wt - INACTIVE_WEEKS, 0)]  # order weeks with week_start >= t - 182 d
        future = cum[:, wt + INACTIVE_WEEKS] - cum[:, wt]  # ... in [t, t + 182 d)
        seen = (start < wt) & (recent > 0)
        rows.append(pd.DataFrame({"account_id": acc["account_id"].to_numpy()[seen],
                                  "event_timestamp": EXPORT_END - pd.Timedelta(days=7 * (WEEKS - wt)),
                                  "p_true": v.sum(axis=1)[seen], "label": (future[seen] == 0).astype(int)}))
    truth = pd.concat(rows).sort_values(["event_timestamp", "account_id"], kind="stable").reset_index(drop=True)

    i, w = np.nonzero(bought)  # sparse: a row only for weeks with orders
    locations = acc["locations_count"].to_numpy(dtype=float, na_value=1.0)
    orders = 1 + rng.poisson(0.2 + 0.5 * (locations[i] - 1))
    revenue = orders * acc["first_order_value"].to_numpy()[i] * rng.lognormal(0, 0.25, len(i))
    first = w == start[i]  # the first order week is the first order
    usage = pd.DataFrame({
        "account_id": acc["account_id"].to_numpy()[i],
        "week_start": week_starts[w],
        "orders": np.where(first, 1, orders),
        "revenue": np.where(first, acc["first_order_value"].to_numpy()[i], revenue).round(2),
    })
    num = _num
    custom = {
        "accounts": {
            "acquisition_channel": _cat(list(CHANNELS)),
            "first_order_value": num(min=0), "loyalty_member": _flag(),
            "payment_terms": _cat(["card", "net15", "net30", "prepaid"]),
            "locations_count": num(min=1, nullable=True),
            "delivery_slot_pref": _cat(nullable=True), "signup_device": _cat(),
        },
        "usage_weekly": {
            "orders": num(min=0, aggregations=[{"fn": "sum", "days": 182}, {"fn": "count", "days": 364},
                                               {"fn": "sum", "days": 28}]),
            "revenue": num(min=0, aggregations=[{"fn": "sum", "days": 182}, {"fn": "mean", "days": 182}]),
        },
    }
    config = {"export": {"as_of": _iso(EXPORT_END)}, "custom_columns": custom,
              "models": {"chs": {"horizon_days": 182, "churn": {"inactive_weeks": INACTIVE_WEEKS, "activity": "orders",
                                                                "reactivation": True}}}}
    return _write(out_dir, {"accounts": acc, "usage_weekly": usage}, config, truth)


SHAPES = {"snapshot": snapshot_subscription, "prospects": prospect_list, "purchases": purchases_only}
