"""Who the scoring job scores at a date, and with which features: the book.

The book of a model at ``as_of`` is every entity the export or the feature store knows by the end
of that day: the parent table's rows created by then (``accounts`` / ``leads``) and every entity
with a feature row by then. Scored are the active ones; every other one is counted in ``left_out``
with its reason, so none is dropped unsaid:

* CHS: ``churned`` (a terminal churn event, ``label.outcome.terminal``, at or before as_of, when
  the spec does not let churned accounts come back), ``lapsed`` (churn defined as N weeks without
  activity: ``weeks_since_active`` at as_of has reached N), ``no features at as_of`` (no view holds
  a value still valid at that time: never used, or every value past its view's TTL).
* intent: ``converted`` (converted at or before as_of), ``lost`` (the latest assignment's outcome
  window, ``label.horizon_days``, closed unconverted before as_of), ``no features at as_of``.

Entities created after as_of are not part of the book (``not_yet_created`` counts them).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd

from salesml.settings import Settings


@dataclass
class Book:
    frame: pd.DataFrame  # the active entities with their features at as_of, RangeIndex
    left_out: pd.DataFrame  # key, reason
    not_yet_created: int

    @property
    def size(self) -> int:
        return len(self.frame) + len(self.left_out)


def end_of_day(d: date) -> pd.Timestamp:
    """The last microsecond of ``d`` in UTC: everything known during that day is in."""
    return pd.Timestamp(d, tz="UTC") + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)


def view_files(settings: Settings, service) -> list[Path]:
    return [p for p in (settings.feature_data_dir / f"{proj.name}.parquet" for proj in
                        service.feature_view_projections) if p.exists()]


def resolve_as_of(settings: Settings, spec, service, as_of: date | None) -> tuple[date, str]:
    """(the date to score, where it came from). Default: the export's declared end (``export.as_of``,
    ``SALESML_EXPORT_AS_OF``), else the latest feature time of the model's views. Not today: an
    export is a snapshot, and scoring it today would find its values past their views' TTL."""
    import duckdb

    if as_of is not None:
        return as_of, "given"
    declared = settings.project(settings.export_dir).export.as_of
    if declared is not None:
        return pd.Timestamp(declared).date(), "declared export.as_of"
    files = view_files(settings, service)
    if not files:
        raise FileNotFoundError(f"no feature files for service '{spec.feature_service}' in "
                                f"{settings.feature_data_dir}: run `salesml features build`")
    with duckdb.connect() as con:
        row = con.execute("SELECT max(event_timestamp) FROM read_parquet(?, union_by_name=true)",
                          [[str(f) for f in files]]).fetchone()
    last = row[0] if row else None
    return pd.Timestamp(last).date(), f"latest feature time of the '{spec.feature_service}' views"


def _raw(raw_dir: Path, table: str, columns: list[str]) -> pd.DataFrame | None:
    """Columns of an export table (those it has), typed as the contract says; None without the table."""
    from salesml.contract import TABLES
    from salesml.validation import find_table_file, read_raw, validate_table

    path = find_table_file(raw_dir, table)
    if path is None:
        return None
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        have = set(pq.read_schema(path).names)
        return pq.read_table(path, columns=[c for c in columns if c in have]).to_pandas()
    typed, _ = validate_table(read_raw(path, TABLES[table]), TABLES[table])
    return typed[[c for c in columns if c in typed]]


def read_book(settings: Settings, spec, store, service, as_of: date) -> Book:
    """The active entities of ``spec``'s model at ``as_of`` with their point-in-time features."""
    import duckdb

    key, when, raw = spec.key, end_of_day(as_of), settings.export_dir
    files = [str(f) for f in view_files(settings, service)]
    with duckdb.connect() as con:
        con.execute("SET TimeZone='UTC'")
        seen = set(con.execute(f'SELECT DISTINCT "{key}" FROM read_parquet(?, union_by_name=true) '
                               "WHERE event_timestamp <= ?", [files, when.to_pydatetime()]).df()[key]
                   .astype(str)) if files else set()
    parent = _raw(raw, spec.entity_table, [key, "created_at"])
    later = 0
    if parent is not None and len(parent):
        created = parent["created_at"] <= when if "created_at" in parent else pd.Series(True, index=parent.index)
        seen |= set(parent.loc[created, key].astype(str))
        later = len(set(parent.loc[~created, key].astype(str)) - seen)
    gone = gone_by(settings, spec, when)
    left = [(i, gone[i]) for i in sorted(seen & set(gone))]
    ids = sorted(seen - set(gone))
    entity = pd.DataFrame({key: ids, "event_timestamp": when})
    frame = store.get_historical_features(entity_df=entity, features=service).to_df() if ids else entity
    feats = [c for c in frame.columns if c not in (key, "event_timestamp")]
    known = frame[feats].notna().any(axis=1).to_numpy() if feats else pd.Series(False, index=frame.index).to_numpy()
    if spec.label.churn is not None and "weeks_since_active" in frame:  # the inactivity rule, as in training
        lapsed = (frame["weeks_since_active"] >= spec.label.churn.inactive_weeks).to_numpy() & known
        left += [(i, f"lapsed (no activity for {spec.label.churn.inactive_weeks} weeks)")
                 for i in frame.loc[lapsed, key]]
        known &= ~lapsed
    left += [(i, "no features at as_of") for i in frame.loc[~known & ~_isin(frame, key, left), key]]
    scored = frame[known].reset_index(drop=True)
    return Book(scored, pd.DataFrame(left, columns=[key, "reason"]), later)


def gone_by(settings: Settings, spec, when: pd.Timestamp) -> dict[str, str]:
    """Entities outside the model's population by ``when`` (the book's rules, from the export): churned
    accounts, converted or lost leads; id -> reason."""
    raw = settings.export_dir
    return _churned(spec, raw, when) if spec.entity == "account" else _closed_leads(spec, raw, when)


def _isin(frame: pd.DataFrame, key: str, left: list) -> pd.Series:
    return frame[key].isin({i for i, _ in left}).to_numpy()


def _churned(spec, raw: Path, when: pd.Timestamp) -> dict[str, str]:
    """Accounts gone for good by ``when`` (a terminal outcome), when the spec does not let them return."""
    outcome = spec.label.outcome
    if outcome is None or spec.label.reactivation:
        return {}
    events = _raw(raw, outcome.table, ["account_id", "occurred_at", "kind"])
    if events is None or not len(events):
        return {}
    gone = events[events["kind"].isin(outcome.terminal) & (events["occurred_at"] <= when)]
    return {str(a): "churned" for a in gone["account_id"].unique()}


def _closed_leads(spec, raw: Path, when: pd.Timestamp) -> dict[str, str]:
    """Leads converted by ``when``, or whose latest assignment's outcome window closed unconverted."""
    conv = spec.label.conversion
    if conv is None:
        return {}
    cols = [spec.key, conv.at, conv.flag, *([conv.converted_at] if conv.converted_at else [])]
    a = _raw(raw, conv.table, cols)
    if a is None or not len(a) or conv.at not in a:
        return {}
    a = a[a[conv.at] <= when].sort_values(conv.at)
    horizon = pd.Timedelta(days=spec.horizon_days)
    flag = a[conv.flag].fillna(False).astype(bool)
    if conv.converted_at and conv.converted_at in a:  # without the date: known once the window closed
        converted = flag & a[conv.converted_at].fillna(a[conv.at] + horizon).le(when)
    else:
        converted = flag & (a[conv.at] + horizon <= when)
    out = {str(i): "converted" for i in a.loc[converted, spec.key]}
    last = a.groupby(spec.key).tail(1)
    lost = last[(last[conv.at] + horizon < when) & ~last[spec.key].astype(str).isin(out)]
    out.update({str(i): "lost" for i in lost[spec.key]})
    return out
