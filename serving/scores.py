"""The score store: every scheduled run's scores, one parquet file per model and as-of date.

Layout: ``<scores_dir>/<model>/<YYYY-MM-DD>.parquet`` (the history: one file per run date, kept),
and ``<scores_dir>/chs/latest.parquet``, the latest CHS run in the shape of the ``chs_scores``
Feast view (features/definitions.py ``SCORE_VIEWS``). A file is written to a temporary name in
the same folder and renamed over the old one (``os.replace`` is atomic on one filesystem): a
reader sees the old run or the new one, never half of either, and a run that fails while writing
leaves the old file as it was. Re-running a date replaces that date's file; nothing else moves.

``history`` reads one account's timeline across the runs together with the events that fell in
each interval (contract start and renewal dates, churn events, CSM interactions, usage rows
pushed live); ``plot_timeline`` draws it for the account report.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import pandas as pd

from salesml.settings import Settings

MODELS = ("chs", "intent")  # the models a scheduled run scores
LEVEL_ORDER = ("green", "yellow", "orange", "red")  # better to worse
_DATED = re.compile(r"^(\d{4}-\d{2}-\d{2})\.parquet$")
# Events before the first run shown with it: about one scoring interval.
LOOKBACK = pd.Timedelta(days=28)


def _model(model: str) -> str:
    if model not in MODELS:
        raise ValueError(f"no score history for model '{model}': expected one of {', '.join(MODELS)}")
    return model


def model_dir(settings: Settings, model: str) -> Path:
    return settings.scores_dir / _model(model)


def path_for(settings: Settings, model: str, as_of: date) -> Path:
    return model_dir(settings, model) / f"{as_of:%Y-%m-%d}.parquet"


def latest_path(settings: Settings) -> Path:
    """The file behind the ``chs_scores`` Feast view (its source path, resolved for these settings)."""
    from features.definitions import SCORE_VIEWS

    return (settings.feature_data_dir / SCORE_VIEWS["chs_scores"][1]).resolve()


def write_atomic(frame: pd.DataFrame, path: Path) -> Path:
    """Write ``frame`` to ``path`` through a temporary file renamed over it; on any failure the old
    file stays and the temporary one is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write(settings: Settings, model: str, as_of: date, frame: pd.DataFrame) -> Path:
    """Store a run's scores for ``as_of``, replacing an earlier run of the same date."""
    return write_atomic(frame, path_for(settings, model, as_of))


def runs(settings: Settings, model: str) -> list[date]:
    """Dates of the stored runs of ``model``, oldest first."""
    folder = model_dir(settings, model)
    if not folder.exists():
        return []
    found = (_DATED.match(p.name) for p in folder.iterdir())
    return sorted(date.fromisoformat(m.group(1)) for m in found if m)


def read(settings: Settings, model: str, as_of: date, columns: list[str] | None = None) -> pd.DataFrame:
    path = path_for(settings, model, as_of)
    if not path.exists():
        have = ", ".join(f"{d}" for d in runs(settings, model)) or "none"
        raise FileNotFoundError(f"no {model} scores for {as_of} in {path.parent} (runs stored: {have})")
    return pd.read_parquet(path, columns=columns)


def latest(settings: Settings, model: str) -> date | None:
    dates = runs(settings, model)
    return dates[-1] if dates else None


def previous(settings: Settings, model: str, as_of: date) -> date | None:
    """The latest stored run strictly before ``as_of``."""
    earlier = [d for d in runs(settings, model) if d < as_of]
    return earlier[-1] if earlier else None


def level_counts(settings: Settings) -> pd.DataFrame:
    """Accounts per CHS level in every stored run (rows: as_of; columns: levels, better to worse)."""
    rows = {d: read(settings, "chs", d, ["level"])["level"].value_counts() for d in runs(settings, "chs")}
    table = pd.DataFrame(rows).T.reindex(columns=list(LEVEL_ORDER)).fillna(0).astype(int)
    table.index.name = "as_of"
    return table


# --- one account's timeline --------------------------------------------------------------------
TIMELINE = ["as_of", "score", "level", "churn_probability", "early_warning", "change_points", "change_contract",
            "change_behaviour", "change_relationship", "change_text", "previous_as_of", "previous_score", "restated",
            "model_version", "weights_version", "run_id"]


@dataclass
class History:
    account_id: str
    timeline: pd.DataFrame  # one row per stored run that scored the account, oldest first
    events: pd.DataFrame  # at, kind, source, detail, as_of (the run whose interval holds it; NaT: later)
    sources: dict[str, str] = field(default_factory=dict)  # event source -> rows found, or why it has none
    thresholds: dict[str, float] = field(default_factory=dict)


def history(settings: Settings, account_id: str) -> History:
    """``account_id``'s CHS timeline: per run its score, level and the attributed change since the
    run before, and the events of each interval (previous run, this run]. Event tables the export
    lacks are absent from ``events`` and named in ``sources`` with the reason."""
    import pyarrow.parquet as pq

    parts = []
    for d in runs(settings, "chs"):
        path = path_for(settings, "chs", d)
        names = set(pq.read_schema(path).names)
        t = pq.read_table(path, columns=[c for c in ["account_id", *TIMELINE] if c in names],
                          filters=[("account_id", "=", account_id)]).to_pandas()
        parts.append(t)
    timeline = (pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts)
                else pd.DataFrame(columns=["account_id", *TIMELINE]))
    timeline = timeline.reindex(columns=TIMELINE).sort_values("as_of").reset_index(drop=True)
    events, sources = account_events(settings, account_id)
    if len(timeline):
        ends = pd.to_datetime(timeline["as_of"]).dt.tz_localize("UTC") + pd.Timedelta(days=1)
        first = ends.iloc[0] - pd.Timedelta(days=1) - LOOKBACK
        events = events[(events["at"] >= first)].reset_index(drop=True)
        slot = ends.searchsorted(events["at"], side="right")  # the first run whose day ends after the event
        events["as_of"] = [timeline["as_of"].iloc[i] if i < len(timeline) else pd.NaT for i in slot]
    else:
        events = events.assign(as_of=pd.NaT)
    return History(account_id, timeline, events, sources, dict(settings.chs_levels))


def account_events(settings: Settings, account_id: str) -> tuple[pd.DataFrame, dict[str, str]]:
    """(events of one account, oldest first; per source the rows found or why there are none)."""
    from features.live import live_path, open_live
    from features.store import exported_history
    from salesml.validation import find_table_file

    raw = settings.export_dir
    found, sources = [], {}

    def table(name: str, cols: list[str]) -> pd.DataFrame | None:
        if find_table_file(raw, name) is None:
            sources[name] = f"absent: the export has no {name} table"
            return None
        rows = exported_history(raw, name, "account_id", {account_id})
        missing = [c for c in cols if c not in rows.columns]
        if missing and len(rows):
            sources[name] = f"absent: {name} has no column {', '.join(missing)}"
            return None
        sources[name] = f"{len(rows)} row(s)"
        return rows

    contracts = table("contracts", ["contract_id"])
    if contracts is not None and len(contracts):
        for col, kind in (("start_date", "contract start"), ("end_date", "renewal")):
            if col in contracts:
                one = contracts.dropna(subset=[col]).drop_duplicates(["contract_id", col])
                found.append(pd.DataFrame({"at": one[col], "kind": kind, "source": "contracts",
                                           "detail": one["contract_id"].astype(str)
                                           + (" " + one["tier"].astype(str) if "tier" in one else "")}))
    churn = table("churn_events", ["occurred_at", "kind"])
    if churn is not None and len(churn):
        found.append(pd.DataFrame({"at": churn["occurred_at"], "kind": churn["kind"].astype(str),
                                   "source": "churn_events", "detail": ""}))
    touches = table("interactions", ["occurred_at"])
    if touches is not None and len(touches):  # never the notes: they need a stronger role than a report
        detail = touches["channel"].astype(str) if "channel" in touches else ""
        found.append(pd.DataFrame({"at": touches["occurred_at"], "kind": "interaction",
                                   "source": "interactions", "detail": detail}))
    if live_path(settings).exists():
        with open_live(settings) as live:
            pushed = live.rows("usage_weekly", [account_id])
        sources["live usage"] = f"{len(pushed)} row(s) pushed since the export"
        if len(pushed):
            found.append(pd.DataFrame({"at": pushed["week_start"] + pd.Timedelta(days=7), "kind": "usage pushed",
                                       "source": "live usage", "detail": "week of " + pushed["week_start"]
                                       .dt.strftime("%Y-%m-%d")}))
    else:
        sources["live usage"] = "absent: nothing has been pushed live yet"
    if not found:
        return pd.DataFrame({"at": pd.Series(dtype="datetime64[us, UTC]"), "kind": pd.Series(dtype=object),
                             "source": pd.Series(dtype=object), "detail": pd.Series(dtype=object)}), sources
    events = pd.concat(found, ignore_index=True)
    events["at"] = pd.to_datetime(events["at"], utc=True)
    return events.sort_values("at", kind="stable").reset_index(drop=True), sources


# --- figures -----------------------------------------------------------------------------------
LEVEL_COLOURS = {"green": "#4caf50", "yellow": "#fdd835", "orange": "#fb8c00", "red": "#e53935"}
EVENT_MARKERS = {"renewal": ("v", "#6a1b9a"), "contract start": ("^", "#6a1b9a"), "churn": ("X", "black"),
                 "downgrade": ("x", "black"), "interaction": ("o", "#1e88e5"), "usage pushed": ("s", "#00897b")}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_timeline(h: History):
    """The account's CHS over the runs on its level bands, with the interval events marked below."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 4.2))
    t = h.thresholds or {"green": 65.0, "yellow": 50.0, "orange": 35.0}
    bands = [("red", 0, t["orange"]), ("orange", t["orange"], t["yellow"]), ("yellow", t["yellow"], t["green"]),
             ("green", t["green"], 100)]
    for level, lo, hi in bands:
        ax.axhspan(lo, hi, color=LEVEL_COLOURS[level], alpha=0.15, lw=0)
    if len(h.timeline):
        when = pd.to_datetime(h.timeline["as_of"])
        ax.plot(when, h.timeline["score"], color="#37474f", lw=1.5, zorder=2)
        ax.scatter(when, h.timeline["score"], c=[LEVEL_COLOURS.get(v, "grey") for v in h.timeline["level"]],
                   edgecolors="#37474f", s=45, zorder=3)
    shown = h.events.dropna(subset=["as_of"]) if len(h.events) else h.events
    for kind, rows in shown.groupby("kind") if len(shown) else []:
        marker, colour = EVENT_MARKERS.get(kind, ("d", "grey"))
        ax.scatter(pd.to_datetime(rows["at"]).dt.tz_localize(None), [3] * len(rows), marker=marker, color=colour,
                   label=f"{kind} ({len(rows)})", zorder=4)
    ax.set(ylim=(0, 100), ylabel="CHS", title=f"Customer health of {h.account_id}")
    if len(shown):
        ax.legend(loc="upper left", fontsize=8, ncol=3)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def plot_levels(counts: pd.DataFrame):
    """Accounts per level in each stored run, stacked (``level_counts``)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 4))
    labels = [f"{d:%Y-%m-%d}" if hasattr(d, "strftime") else str(d) for d in counts.index]
    bottom = pd.Series(0, index=counts.index)
    for level in LEVEL_ORDER:
        if level in counts:
            ax.bar(labels, counts[level], bottom=bottom, color=LEVEL_COLOURS[level], label=level)
            bottom = bottom + counts[level]
    ax.set(ylabel="accounts", title="CHS levels per scoring run")
    ax.legend(loc="upper left", fontsize=8)
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right")
    fig.tight_layout()
    return fig
