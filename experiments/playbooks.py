"""Does a playbook work? Each playbook's effect on churn, measured against a random holdout of warnings.

Estimand (intent to treat). For one playbook: among the warnings that would offer it,

    effect = P(churn within ``horizon_days`` after raised_at | prompted) - P(same | held out)

where "prompted" means the warning was raised with the playbook's prompt, whatever the CSM then did
(applied it, marked it not applicable, or nothing): that is the effect of *offering* the playbook, the
decision the product takes. Negative = less churn when prompted (helpful); positive = harmful.

Assumptions the interval rests on:
* the holdout is drawn at random per warning (``holdout`` True = raised without the prompt), with a
  chance that does not depend on the account, so held-out warnings estimate the prompted ones' churn
  had they not been prompted;
* warnings are independent units. Two warnings of one account whose windows overlap share one
  outcome; by default (``overlap="first"``) only the first warning of an account counts and the ones
  raised inside its window are dropped (counted in ``n_overlap_dropped``). Which warning is kept
  depends on raise times only, never on the holdout draw, so the comparison stays randomised;
* a window counts only once it has fully elapsed by ``as_of`` (a churn after ``as_of`` is not
  known yet; counting open windows as "no churn" would bias both rates towards 0).

Churn counts when ``raised_at < churned_at <= raised_at + horizon_days`` (any churn event of the
account in that window). Statistics: the difference of two independent proportions with Newcombe's
hybrid Wilson-score interval (method 10) and the pooled two-proportion z-test
(``experiments.stats.two_proportion_test``; statsmodels is not a dependency), Holm-adjusted p-values
over the playbooks with an estimate. ``harmful``: the interval lies entirely above 0; ``helpful``:
entirely below 0; otherwise inconclusive.

``estimate_effects`` is pure; ``log_effects`` records a table in MLflow (experiment
``salesml-playbooks``); ``render`` writes it as markdown for the command line.
"""

from __future__ import annotations

import math
import re
from typing import Literal

import numpy as np
import pandas as pd

from experiments.stats import holm, two_proportion_test
from salesml.settings import Settings

EXPERIMENT = "salesml-playbooks"
WARNING_COLUMNS = ("warning_id", "account_id", "playbook_id", "holdout", "raised_at")
OUTCOME_COLUMNS = ("account_id", "churned_at")
COLUMNS = ["playbook_id", "n_prompted", "n_holdout", "holdout_share", "churned_prompted", "churned_holdout",
           "rate_prompted", "rate_holdout", "effect", "ci_low", "ci_high", "p_value", "p_adjusted", "verdict",
           "harmful", "helpful", "n_incomplete", "n_overlap_dropped", "versions", "note"]


def _utc(values) -> pd.Series | pd.Timestamp:
    """Timestamps as tz-aware UTC (naive ones are taken to be UTC already)."""
    if isinstance(values, pd.Series):
        out = values if pd.api.types.is_datetime64_any_dtype(values) else pd.to_datetime(values)
        return out.dt.tz_localize("UTC") if out.dt.tz is None else out.dt.tz_convert("UTC")
    out = pd.Timestamp(values)
    return out.tz_localize("UTC") if out.tz is None else out.tz_convert("UTC")


def _require(frame: pd.DataFrame, cols, name: str) -> None:
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise ValueError(f"{name}: missing column(s) {', '.join(missing)} (has {', '.join(map(str, frame.columns))})")


def first_per_window(warnings: pd.DataFrame, horizon: pd.Timedelta) -> pd.Series:
    """Boolean mask (aligned on ``warnings``' index): True for the warnings kept when each account counts
    once per outcome window: an account's first warning is kept, then the next one raised at or after
    the kept one's window ends, and so on. Depends on account and raise time only."""
    order = warnings.sort_values(["account_id", "raised_at", "warning_id"], kind="stable")
    keep = np.zeros(len(order), dtype=bool)
    acc = order["account_id"].to_numpy()
    t = _utc(order["raised_at"]).dt.tz_convert(None).to_numpy("datetime64[us]").astype(np.int64).tolist()
    span, end = horizon // pd.Timedelta(microseconds=1), 0
    for i in range(len(order)):  # a greedy pass over plain ints; windows are few per account
        if i == 0 or acc[i] != acc[i - 1] or t[i] >= end:
            keep[i] = True
            end = t[i] + span
    return pd.Series(keep, index=order.index).reindex(warnings.index)


def _churned(warnings: pd.DataFrame, outcomes: pd.DataFrame, horizon: pd.Timedelta) -> pd.Series:
    """Per warning (index of ``warnings``): did its account churn inside (raised_at, raised_at + horizon]?"""
    w = warnings[["account_id", "raised_at"]].reset_index(names="_row")
    o = outcomes[["account_id", "churned_at"]]
    m = w.merge(o, on="account_id", how="inner")
    hit = (m["churned_at"] > m["raised_at"]) & (m["churned_at"] <= m["raised_at"] + horizon)
    rows = set(m.loc[hit, "_row"])
    return pd.Series([r in rows for r in w["_row"]], index=warnings.index)


def estimate_effects(warnings: pd.DataFrame, outcomes: pd.DataFrame, *, horizon_days: int, as_of,
                     alpha: float = 0.05, overlap: Literal["first", "keep"] = "first",
                     by_version: bool = False) -> pd.DataFrame:
    """One row per playbook (per playbook and version with ``by_version``): columns ``COLUMNS``.

    ``warnings``: the warnings store's frame (``WARNING_COLUMNS`` needed; ``playbook_id`` of a held-out
    warning is the playbook it would have offered). ``outcomes``: account_id, churned_at, one row per
    churn event. ``overlap``: "first" keeps one warning per account and window (see the module doc),
    "keep" counts every warning (then the interval assumes independence it does not have).
    A playbook without held-out (or without prompted) complete warnings gets no estimate: NaN effect,
    verdict "no estimate" and the reason in ``note``. The frame's ``attrs`` carry the arguments.
    """
    _require(warnings, WARNING_COLUMNS, "warnings")
    _require(outcomes, OUTCOME_COLUMNS, "outcomes")
    if horizon_days <= 0:
        raise ValueError(f"horizon_days must be > 0, got {horizon_days}")
    if overlap not in ("first", "keep"):
        raise ValueError(f"overlap must be 'first' or 'keep', got {overlap!r}")
    horizon, as_of = pd.Timedelta(days=horizon_days), _utc(as_of)
    w = warnings.copy()
    w["raised_at"] = _utc(w["raised_at"])
    w["holdout"] = w["holdout"].astype(bool)
    o = outcomes.assign(churned_at=_utc(outcomes["churned_at"])) if len(outcomes) else \
        pd.DataFrame({"account_id": pd.Series(dtype=object), "churned_at": pd.Series(dtype="datetime64[us, UTC]")})
    if "playbook_version" not in w.columns:
        w["playbook_version"] = ""
    w["playbook_version"] = w["playbook_version"].fillna("").astype(str)
    keys = ["playbook_id", "playbook_version"] if by_version else ["playbook_id"]

    kept = first_per_window(w, horizon) if overlap == "first" else pd.Series(True, index=w.index)
    complete = w["raised_at"] + horizon <= as_of
    w["dropped"], w["incomplete"] = ~kept, kept & ~complete
    counted = w[kept & complete].copy()
    counted["churned"] = _churned(counted, o, horizon)

    rows = []
    for key, g in w.groupby(keys, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        c = counted.loc[counted.index.intersection(g.index)]
        pro, hold = c[~c["holdout"]], c[c["holdout"]]
        n_p, n_h = len(pro), len(hold)
        x_p, x_h = int(pro["churned"].sum()), int(hold["churned"].sum())
        row = dict(zip(keys, key)) | {
            "n_prompted": n_p, "n_holdout": n_h, "holdout_share": n_h / (n_p + n_h) if n_p + n_h else math.nan,
            "churned_prompted": x_p, "churned_holdout": x_h,
            "rate_prompted": x_p / n_p if n_p else math.nan, "rate_holdout": x_h / n_h if n_h else math.nan,
            "effect": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan,
            "verdict": "no estimate", "harmful": False, "helpful": False,
            "n_incomplete": int(g["incomplete"].sum()), "n_overlap_dropped": int(g["dropped"].sum()),
            "versions": ",".join(sorted(set(g["playbook_version"]) - {""})), "note": ""}
        if n_p + n_h == 0:
            row["note"] = "no warning with a complete outcome window yet"
        elif n_h == 0:
            row["note"] = "no held-out warnings (holdout share 0): nothing to compare with"
        elif n_p == 0:
            row["note"] = "no prompted warnings: every complete warning was held out"
        else:
            t = two_proportion_test(x_p, n_p, x_h, n_h, alpha)
            harmful, helpful = t["ci_low"] > 0, t["ci_high"] < 0
            row |= {"effect": t["diff"], "ci_low": t["ci_low"], "ci_high": t["ci_high"], "p_value": t["p_value"],
                    "harmful": harmful, "helpful": helpful,
                    "verdict": "harmful" if harmful else "helpful" if helpful else "inconclusive"}
        rows.append(row)
    cols = [*keys, *COLUMNS[1:]]
    table = pd.DataFrame(rows, columns=cols)
    has = table["p_value"].notna()
    table["p_adjusted"] = math.nan
    if has.any():
        table.loc[has, "p_adjusted"] = holm(table.loc[has, "p_value"].tolist())
    table = table.astype({"harmful": bool, "helpful": bool})
    table.attrs = {"horizon_days": int(horizon_days), "as_of": as_of.isoformat(), "alpha": float(alpha),
                   "overlap": overlap, "by_version": bool(by_version), "n_warnings": int(len(w)),
                   "n_counted": int(len(counted))}
    return table


# --- presentation and tracking --------------------------------------------------------------
def _label(row) -> str:
    v = row.get("playbook_version", "") if hasattr(row, "get") else ""
    return f"{row['playbook_id']}@{v}" if v else str(row["playbook_id"])


def _fmt(x, spec: str = ".3f") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def render(table: pd.DataFrame) -> str:
    """Markdown: one line per playbook (effect in percentage points of churn, with its interval)."""
    a = table.attrs
    head = ["# Playbook effects vs the random holdout", ""]
    if a:
        as_of = pd.Timestamp(a["as_of"]).strftime("%Y-%m-%d %H:%M UTC") if a.get("as_of") else "?"
        head.append(f"Churn within {a.get('horizon_days')} days of the warning, windows complete by "
                    f"{as_of}; {100 * (1 - a.get('alpha', 0.05)):.0f}% intervals (Newcombe); "
                    f"effect = prompted - held out (intent to treat), negative = less churn.")
        head.append("")
    lines = ["| playbook | prompted (churned) | held out (churned) | rate prompted | rate held out "
             "| effect (pp) | interval (pp) | p (Holm) | verdict | incomplete | note |",
             "|---|---:|---:|---:|---:|---:|---|---:|---|---:|---|"]
    for _, r in table.iterrows():
        ci = f"{_fmt(100 * r['ci_low'], '+.1f')} .. {_fmt(100 * r['ci_high'], '+.1f')}" \
            if not math.isnan(r["ci_low"]) else "–"
        lines.append(f"| {_label(r)} | {r['n_prompted']} ({r['churned_prompted']}) | {r['n_holdout']} "
                     f"({r['churned_holdout']}) | {_fmt(r['rate_prompted'])} | {_fmt(r['rate_holdout'])} "
                     f"| {_fmt(100 * r['effect'], '+.1f')} | {ci} | {_fmt(r['p_adjusted'], '.3g')} "
                     f"| **{r['verdict']}** | {r['n_incomplete']} | {r['note']} |")
    dropped = int(table["n_overlap_dropped"].sum()) if len(table) else 0
    tail = ["", f"Left out: {int(table['n_incomplete'].sum()) if len(table) else 0} warning(s) whose window "
                f"has not elapsed; {dropped} raised inside an earlier warning's window of the same account."]
    return "\n".join(head + lines + tail) + "\n"


def forest_plot(table: pd.DataFrame):
    """A matplotlib figure: effect and interval per playbook (percentage points), a line at 0."""
    from training.plots import pyplot

    plt = pyplot()
    n = max(len(table), 1)
    fig, ax = plt.subplots(figsize=(6.4, 0.6 * n + 1.4))
    colour = {"harmful": "#c0392b", "helpful": "#1e8449", "inconclusive": "#555555"}
    for i, (_, r) in enumerate(table.iterrows()):
        y = n - 1 - i
        if r["verdict"] == "no estimate":
            ax.text(0, y, "no estimate", ha="center", va="center", fontsize=8, color="#888888")
            continue
        c = colour[r["verdict"]]
        ax.errorbar(100 * r["effect"], y, xerr=[[100 * (r["effect"] - r["ci_low"])],
                                                [100 * (r["ci_high"] - r["effect"])]],
                    fmt="o", color=c, capsize=4)
    ax.axvline(0, color="black", lw=0.8, ls="--")
    ax.set_yticks(range(n))
    ax.set_yticklabels([f"{_label(r)} (n={r['n_prompted']}/{r['n_holdout']})"
                        for _, r in table.iloc[::-1].iterrows()] or [""])
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlabel("churn rate, prompted - held out (pp)")
    h = table.attrs.get("horizon_days")
    ax.set_title(f"Playbook effects{f' (churn within {h} days)' if h else ''}; n = prompted/held out",
                 fontsize=9)
    fig.tight_layout()
    return fig


def _metric_key(name: str) -> str:
    """MLflow metric names allow letters, digits, _ - . / and spaces."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", name)


def log_effects(settings: Settings, table: pd.DataFrame, *, as_of, extra_params: dict | None = None) -> str:
    """One MLflow run in experiment ``salesml-playbooks``: params (as_of, horizon, alpha, overlap, extra),
    per playbook metrics ``effect__<id>``, ``ci_low__<id>``, ``ci_high__<id>``, ``n__<id>`` (complete
    warnings counted), ``n_prompted__``, ``n_holdout__``, ``p_value__`` (no-estimate playbooks log only
    their counts), the table (``effects/effects.csv``, ``effects/effects.md``) and the forest plot
    (``plots/playbook_effects.png``). Returns the run id."""
    import mlflow

    from training import tracking

    tracking.configure(settings)
    tracking.use_experiment(settings, EXPERIMENT)
    as_of = _utc(as_of)
    params = {k: v for k, v in table.attrs.items() if k != "as_of"} | {
        "as_of": as_of.isoformat(), "playbooks": ",".join(_label(r) for _, r in table.iterrows())}
    params |= dict(extra_params or {})
    with mlflow.start_run(run_name=f"playbook-effects-{as_of:%Y-%m-%d}") as run:
        mlflow.set_tags({"kind": "playbook-effects", "git_commit": tracking.git_commit(),
                         "verdicts": "; ".join(f"{_label(r)}: {r['verdict']}" for _, r in table.iterrows())})
        mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})
        metrics: dict[str, float] = {}
        for _, r in table.iterrows():
            pid = _metric_key(_label(r))
            metrics |= {f"n__{pid}": r["n_prompted"] + r["n_holdout"], f"n_prompted__{pid}": r["n_prompted"],
                        f"n_holdout__{pid}": r["n_holdout"], f"n_incomplete__{pid}": r["n_incomplete"]}
            for col in ("effect", "ci_low", "ci_high", "p_value", "rate_prompted", "rate_holdout"):
                if not math.isnan(r[col]):
                    metrics[f"{col}__{pid}"] = float(r[col])
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        mlflow.log_text(table.to_csv(index=False), "effects/effects.csv")
        mlflow.log_text(render(table), "effects/effects.md")
        tracking.save_figure(forest_plot(table), "playbook_effects")
    return run.info.run_id


def churn_outcomes(settings: Settings) -> tuple[pd.DataFrame, str]:
    """(account_id, churned_at) from the export's ``churn_events`` (the CHS label's outcome kinds)
    and from churn outcomes posted to the service (``/outcomes``); and a line that says which
    sources were found: an export without churn events is said, not silently read as "no churn"."""
    from salesml.contract import TABLES
    from salesml.validation import find_table_file, read_raw

    spec = settings.spec("chs")
    kinds = spec.label.outcome.kinds if spec.label.outcome else ["churn", "downgrade"]
    parts, said = [], []
    path = find_table_file(settings.export_dir, "churn_events")
    if path is not None:
        events = read_raw(path, TABLES["churn_events"])
        events = events[events["kind"].isin(kinds)]
        parts.append(pd.DataFrame({"account_id": events["account_id"].astype(str),
                                   "churned_at": _utc(events["occurred_at"])}))
        said.append(f"{len(events):,} churn events ({', '.join(kinds)}) from the export")
    else:
        said.append("the export has no churn_events table")
    if settings.prediction_log_path.exists():
        from serving.predlog import PredictionLog

        posted = PredictionLog(settings.prediction_log_path).outcomes("account")
        posted = posted[(posted["outcome"] == "churned") & (posted["value"].astype(bool))]
        parts.append(pd.DataFrame({"account_id": posted["entity_id"].astype(str),
                                   "churned_at": _utc(posted["occurred_at"])}))
        said.append(f"{len(posted):,} churn outcomes posted to /outcomes")
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(OUTCOME_COLUMNS))
    return frame.drop_duplicates(), "; ".join(said)
