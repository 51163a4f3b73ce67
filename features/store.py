"""Thin layer over Feast: open the store, build feature files, apply, materialize, push.

Nothing here runs at import.  Offline feature files are written only by ``build_feature_files``,
which validates the export first and swaps files in atomically, so a bad export leaves the store
exactly as it was.  Live rows are written only by ``push_events``, which validates them (contract,
known entities, ids) and appends them to the live-event store (``features.live``) in the same
transaction as the online push.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd

from features.feast_store import open_store
from features.training_sets import export_end, optional_columns
from salesml.settings import Settings

Progress = Callable[[str], None]


@dataclass
class FeatureContext:
    """What the transforms need beyond the rows: the project's custom columns, where weekly behaviour
    runs to (the export end), which accounts are gone (terminal churn: not silent) and which usage
    column makes a week active. All of it from the project configuration and the chs spec."""

    custom: dict = field(default_factory=dict)
    extra_columns: dict = field(default_factory=dict)
    until: pd.Timestamp | None = None
    stops: pd.Series | None = None
    activity: str | None = None

    @classmethod
    def of(cls, settings: Settings, raw_dir: Path, frames: dict[str, pd.DataFrame] | None = None) -> FeatureContext:
        from features.custom import custom_features

        project = settings.project(raw_dir)
        label = settings.spec("chs", raw_dir).label
        ctx = cls(custom_features(project), project.extra_columns(),
                  activity=label.churn.activity if label.churn is not None else None)
        if frames is not None:
            ctx.until = export_end(frames, project.export.as_of).at
            events = frames.get("churn_events")
            if events is not None and label.outcome is not None and not label.reactivation:
                gone = events[events["kind"].isin(label.outcome.terminal)]
                ctx.stops = gone.groupby("account_id")["occurred_at"].min()
        return ctx


def empty_features(tables: dict[str, pd.DataFrame]) -> dict[str, list[str]]:
    """Feature columns with no value in any row, per view (what an export cannot feed)."""
    out = {}
    for name, df in tables.items():
        cols = [c for c in df.columns if c not in ("event_timestamp",) and not c.endswith("_id") and
                df[c].isna().all()]
        if cols:
            out[name] = cols
    return out


def build_feature_files(settings: Settings, raw_dir: Path, progress: Progress = print) -> dict[str, int]:
    """Validate ``raw_dir`` against the contract and (re)write the offline feature files.

    Reads every contract table the folder has (a business without contracts or web events
    builds the views its tables allow) plus the project's custom columns. Raises ContractError,
    before anything is written, when the export is invalid. Views the export cannot fill any more
    lose their files, so no stale view outlives a rebuild.
    """
    from features.transforms import build_all
    from salesml.validation import ContractError, read_export

    raw_dir = Path(raw_dir)
    progress(f"validating export {raw_dir}")
    ctx = FeatureContext.of(settings, raw_dir)
    report = read_export(raw_dir, required_tables=[], extra=ctx.extra_columns, optional=_optional_for_any(settings,
                                                                                                      raw_dir))
    if report.violations:
        raise ContractError(report.violations)
    if not report.frames:
        raise ContractError(report.violations or [_no_tables(raw_dir)])
    frames, included = _with_live_rows(settings, report.frames)
    for table, cols in report.ignored.items():
        if not cols:
            continue
        progress(f"  ignored: {table}.{', '.join(cols)} (not in the contract; declare them under "
                 f"custom_columns.{table} in salesml.yaml to use them)")
    if report.missing:
        progress(f"  not in this export: {', '.join(report.missing)}")
    ctx = FeatureContext.of(settings, raw_dir, frames)
    progress("computing feature tables")
    tables = build_all(frames, ctx.custom, ctx.until, ctx.stops, ctx.activity)
    settings.ensure_dirs()
    staging = Path(tempfile.mkdtemp(dir=settings.feature_data_dir.parent, prefix=".staging-"))
    try:
        for name, df in tables.items():
            df.to_parquet(staging / f"{name}.parquet", index=False)
        for name in tables:  # rename is atomic within one filesystem
            os.replace(staging / f"{name}.parquet", settings.feature_data_dir / f"{name}.parquet")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for stale in settings.feature_data_dir.glob("*.parquet"):
        if stale.stem not in tables:
            stale.unlink()
    settings.record_export_dir(raw_dir)
    _record_included(settings, included)  # after the files: a crash in between only re-pushes more
    for name, df in tables.items():
        progress(f"  {name:<15} {len(df):>10,} rows")
    for name, cols in empty_features(tables).items():
        progress(f"  empty for every row: {name}.{', '.join(cols)}")
    return {name: len(df) for name, df in tables.items()}


def _optional_for_any(settings: Settings, raw_dir: Path) -> dict[str, set[str]]:
    """Contract columns some model can do without: the build reads every table any model might use."""
    from salesml.modelspec import MODEL_NAMES

    out: dict[str, set[str]] = {}
    for name in MODEL_NAMES:
        for table, cols in optional_columns(settings.spec(name, raw_dir)).items():
            out.setdefault(table, set()).update(cols)
    return out


def _no_tables(raw_dir: Path):
    from salesml.validation import Violation

    return Violation("(export)", None, [], f"at least one contract table file in {raw_dir}", "none found")


def _with_live_rows(settings: Settings, frames: dict[str, pd.DataFrame]
                    ) -> tuple[dict[str, pd.DataFrame], dict[str, int]]:
    """The export plus every row pushed live since (``features.live``): a rebuild loses no pushed
    event (``merge_live``). Also the last live ``seq`` read per table: rows pushed after it (while
    this build runs) are not in the files, and ``materialize`` writes them back online."""
    from features.live import open_live

    out = dict(frames)
    included: dict[str, int] = {}
    with open_live(settings) as live:
        for table in PUSHABLE:
            if table not in frames:
                continue
            included[table] = upto = live.last_seq(table)  # rows up to it are committed: one writer at a time
            rows = live.rows(table, upto=upto)
            if not len(rows):
                continue
            rows = rows[[c for c in rows.columns if c in frames[table].columns]]
            out[table] = merge_live(table, frames[table], rows)
    return out, included


def _record_included(settings: Settings, included: dict[str, int]) -> None:
    from features.live import open_live

    if not included:
        return
    with open_live(settings) as live, live.transaction():
        for table, seq in included.items():
            live.set_included(table, seq)


def merge_live(table: str, exported: pd.DataFrame, pushed: pd.DataFrame,
               owners: dict[str, str] | None = None) -> pd.DataFrame:
    """Exported rows, then pushed rows in arrival order, one row per key: a pushed row replaces an
    exported one of the same entity with the same key, a later push an earlier one. A pushed row
    never takes a key the export gives another entity (``owners``: key -> entity in the export,
    read from ``exported`` when not given): such a row is dropped, so the export's event stays with
    its entity offline and online alike (pushes are refused such keys; rows stored before that are not).
    """
    from features.live import ENTITY_KEYS, OWNED_KEYS
    from salesml.contract import TABLES

    key = list(TABLES[table].key)
    if not len(pushed):
        return exported.drop_duplicates(key, keep="last").reset_index(drop=True)
    if table in OWNED_KEYS:
        entity = ENTITY_KEYS[table]
        if owners is None:
            owners = dict(zip(exported[key[0]].astype(str), exported[entity].astype(str))) if len(exported) else {}
        owner = pushed[key[0]].astype(str).map(owners)
        pushed = pushed[owner.isna() | owner.eq(pushed[entity].astype(str))]
    both = pd.concat([p for p in (exported, pushed) if len(p)], ignore_index=True)
    return both.drop_duplicates(key, keep="last").reset_index(drop=True)


def present_views(settings: Settings) -> set[str]:
    """Views whose file exists: the feature files, and the score views the scoring job has written."""
    from features.definitions import SCORE_VIEWS

    found = {p.stem for p in settings.feature_data_dir.glob("*.parquet")}
    return found | {name for name, (_, path, _) in SCORE_VIEWS.items() if (settings.feature_data_dir / path).exists()}


def project_repo(settings: Settings, raw_dir: Path | None = None):
    """This project's Feast objects for the views whose feature files exist."""
    from features.custom import custom_features
    from features.definitions import repo

    return repo(custom_features(settings.project(raw_dir)), present_views(settings))


def apply(settings: Settings, progress: Progress = print) -> list[str]:
    """Register this project's entities, views and services; remove the ones it no longer has."""
    r = project_repo(settings)
    store = open_store(settings)
    keep = {o.name for o in r.objects}
    stale = [o for o in [*store.list_feature_services(), *store.list_on_demand_feature_views(),
                         *store.list_feature_views()] if o.name not in keep]
    store.apply(r.objects, objects_to_delete=stale, partial=False)
    names = [getattr(o, "name", "?") for o in r.objects]
    progress(f"applied {len(names)} Feast objects to project '{store.project}'"
             + (f"; removed {', '.join(o.name for o in stale)}" if stale else ""))
    return names


def feature_time_range(settings: Settings) -> tuple[datetime, datetime]:
    import duckdb

    files = sorted(settings.feature_data_dir.glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no feature files in {settings.feature_data_dir}: run `salesml features build`")
    with duckdb.connect() as con:
        found = con.execute(
            "SELECT min(event_timestamp), max(event_timestamp) FROM read_parquet(?, union_by_name=true)",
            [[str(f) for f in files]],
        ).fetchone()
    if found is None or found[0] is None:
        raise FileNotFoundError(f"no feature rows in {settings.feature_data_dir}: run `salesml features build`")
    return found[0], found[1]


def materialize(settings: Settings, end: datetime | None = None,
                progress: Callable[[str, int, int], None] | None = None) -> dict[str, int]:
    """Load the latest value per entity up to ``end`` into the online store, view by view."""
    store = open_store(settings)
    start, last = feature_time_range(settings)
    end = end or last
    r = project_repo(settings)
    views = [r.views[name] for name in r.materialized]
    counts = {}
    for i, view in enumerate(views):
        if progress:
            progress(view.name, i, len(views))
        path = settings.feature_data_dir / view.batch_source.path
        if not path.exists():
            continue
        with contextlib.redirect_stdout(io.StringIO()):  # Feast prints its own banner per view; we report below
            store.materialize(start_date=start - pd.Timedelta(days=1), end_date=end + pd.Timedelta(seconds=1),
                              feature_views=[view.name])
        counts[view.name] = _entities_in(str(path), f"{view.entities[0]}_id", end)
    if progress:
        progress("live events", len(views), len(views))
    _live_back_online(settings, store, r.materialized)
    if progress:
        progress("done", len(views), len(views))
    return counts


def _live_back_online(settings: Settings, store, materialized: list[str]) -> dict[str, int]:
    """Write back online the entities pushed since the rows the feature files include.

    Materializing writes each entity's latest offline row, which lacks any row pushed while (or
    after) ``features build`` read the live store: without this an entity pushed meanwhile would
    lose those events online until its next push. Holds the live store's write lock, so a push
    either finished before (and is recomputed here with every row) or waits and writes after.
    Returns the entities written per table.
    """
    from features.live import open_live

    written: dict[str, int] = {}
    with open_live(settings) as live, live.transaction():
        for table, (key, _, source) in PUSHABLE.items():
            views = [v for v in _views_fed_by(source) if v in materialized]
            ids = live.entities_after(table, live.included(table)) if views else []
            if not ids:
                continue
            raw_dir = settings.export_dir
            ctx = FeatureContext.of(settings, raw_dir)
            extra = ctx.extra_columns.get(table, ())
            exported = exported_history(raw_dir, table, key, set(ids), extra)
            pushed = live.rows(table, ids)
            rows = merge_live(table, exported, pushed, exported_owners(raw_dir, table, pushed))
            latest = _latest_features(ctx, table, rows)
            for view in views:
                store.write_to_online_store(view, latest, allow_registry_cache=True)
            written[table] = len(latest)
    return written


def _entities_in(path: str, key: str, end: datetime) -> int:
    import duckdb

    with duckdb.connect() as con:
        found = con.execute(
            f'SELECT count(DISTINCT "{key}") FROM read_parquet(?) WHERE event_timestamp <= ?',
            [path, end],
        ).fetchone()
    return 0 if found is None else int(found[0])


def online_features(settings: Settings, service: str, entity_rows: list[dict], store=None) -> pd.DataFrame:
    store = store or open_store(settings)
    return store.get_online_features(
        features=store.get_feature_service(service), entity_rows=entity_rows
    ).to_df()


# Live tables that have a push source: table -> (entity key, transform, push source).
PUSHABLE = {
    "lead_events": ("lead_id", "lead_activity_features", "lead_activity_push"),
    "usage_weekly": ("account_id", "behaviour_features", "behaviour_push"),
}


def known_ids(raw_dir: Path, table: str) -> frozenset[str]:
    """The key values of the export's ``table`` (``leads`` -> its lead_ids, ``accounts`` -> account_ids).

    Read once per version of the file (path, modification time, size), so checking a push or an
    outcome against it costs a set lookup. Raises ContractError naming the table when the export
    has no such file, or the file has no key column.
    """
    from salesml.contract import TABLES
    from salesml.validation import ContractError, Violation, find_table_file

    key = TABLES[table].key[0]
    path = find_table_file(Path(raw_dir), table)
    if path is None:
        raise ContractError([Violation(table, None, [], f"{table}.parquet or {table}.csv in {raw_dir}", "missing")])
    stat = path.stat()
    ids = _read_ids(str(path.resolve()), key, stat.st_mtime_ns, stat.st_size)
    if ids is None:
        raise ContractError([Violation(table, key, [], "the required column to be present (it is missing)",
                                       path.name)])
    return ids


@functools.lru_cache(maxsize=8)
def _read_ids(path: str, key: str, mtime_ns: int, size: int) -> frozenset[str] | None:
    import pyarrow.parquet as pq

    if path.endswith(".parquet"):
        if key not in pq.read_schema(path).names:
            return None
        values = pq.read_table(path, columns=[key]).column(0).to_pylist()
    else:
        head = pd.read_csv(path, dtype=str, nrows=0)
        if key not in head.columns:
            return None
        values = pd.read_csv(path, dtype=str, usecols=[key], keep_default_na=True)[key].tolist()
    return frozenset(str(v) for v in values if v is not None and not (isinstance(v, float) and v != v))


def id_violations(raw_dir: Path, table: str, rows: pd.DataFrame) -> list:
    """What is wrong with the ids of rows sent to the service for ``table`` (a list of Violation).

    A well-formed foreign key (``lead_id``, ``account_id``...) must be a key of its parent table
    in the export (``known_ids``); an export without that table is a violation too, not a pass.
    Malformed ids (not ``ID_PATTERN``, longer than ``ID_MAX_LENGTH``) and null ids are
    ``validate_table``'s to report, for exports and pushes alike; they are skipped here. Rows are
    1-based positions in ``rows``.
    """
    from salesml.contract import TABLES
    from salesml.validation import ContractError, Violation, is_api_id

    spec = TABLES[table]
    rows = rows.reset_index(drop=True)
    out = []
    for col, parent in spec.foreign_keys.items():
        if col not in rows.columns:
            continue
        s = rows[col].astype("string")
        check = s.notna() & is_api_id(s)
        if not check.any():
            continue
        parent_key = TABLES[parent].key[0]
        try:
            known = known_ids(raw_dir, parent)
        except ContractError as exc:
            why = "; ".join(f"{v.expected} ({v.found})" if v.found else v.expected for v in exc.violations)
            out.append(Violation(table, col, _positions(check), f"a key present in {parent}.{parent_key}",
                                 f"cannot check {_show_ids(s[check])}: the export has no usable {parent} "
                                 f"table ({why})"))
            continue
        unknown = check & ~s.isin(known).fillna(False).astype(bool)
        if unknown.any():
            out.append(Violation(table, col, _positions(unknown), f"a key present in {parent}.{parent_key}",
                                 f"unknown {col} {_show_ids(s[unknown])}"))
    return out


def _positions(mask: pd.Series) -> list[int]:
    return [int(i) + 1 for i in mask.index[mask.to_numpy(dtype=bool)]]


def _show_ids(values: pd.Series, most: int = 5) -> str:
    def one(v: str) -> str:
        return repr(v) if len(v) <= 70 else f"{v[:40]!r}... ({len(v)} characters)"

    unique = list(dict.fromkeys(values.dropna().astype(str)))
    more = f" (+{len(unique) - most} more)" if len(unique) > most else ""
    return ", ".join(one(v) for v in unique[:most]) + more


def exported_history(raw_dir: Path, table: str, key: str, ids: set[str], extra=()) -> pd.DataFrame:
    """The export's rows for these entities only (a filtered scan of the one table file)."""
    import pyarrow.dataset as ds

    from salesml.validation import find_table_file

    exported = find_table_file(Path(raw_dir), table)
    if exported is None:
        return pd.DataFrame()
    if exported.suffix == ".csv":  # text: type it as validation does
        from salesml.contract import TABLES
        from salesml.validation import read_raw, validate_table

        raw = read_raw(exported, TABLES[table])
        typed, _ = validate_table(raw[raw[key].isin(ids)], TABLES[table], extra=extra)
        return typed
    return ds.dataset(exported).to_table(filter=ds.field(key).isin(sorted(ids))).to_pandas()


def exported_owners(raw_dir: Path, table: str, rows: pd.DataFrame) -> dict[str, str]:
    """For a table whose key does not name its entity (``features.live.OWNED_KEYS``): the entity the
    export gives each key of ``rows`` (keys it does not have are left out); empty for other tables."""
    import pyarrow.dataset as ds

    from features.live import ENTITY_KEYS, OWNED_KEYS
    from salesml.contract import TABLES
    from salesml.validation import find_table_file, read_raw

    if table not in OWNED_KEYS or not len(rows):
        return {}
    key, entity = OWNED_KEYS[table], ENTITY_KEYS[table]
    keys = sorted(set(rows[key].dropna().astype(str)))
    exported = find_table_file(Path(raw_dir), table)
    if exported is None or not keys:
        return {}
    if exported.suffix == ".csv":
        raw = read_raw(exported, TABLES[table])
        found = raw.loc[raw[key].astype(str).isin(keys), [key, entity]]
    else:
        found = ds.dataset(exported).to_table(columns=[key, entity], filter=ds.field(key).isin(keys)).to_pandas()
    return dict(zip(found[key].astype(str), found[entity].astype(str)))


def taken_keys(table: str, rows: pd.DataFrame, *owners: dict[str, str]) -> list:
    """Violations for rows whose key belongs to another entity in any of ``owners`` (key -> entity:
    the export's, the live store's): a push may resend an entity's own row, never take another's."""
    from features.live import ENTITY_KEYS, OWNED_KEYS
    from salesml.validation import Violation

    if table not in OWNED_KEYS:
        return []
    key, entity = OWNED_KEYS[table], ENTITY_KEYS[table]
    rows = rows.reset_index(drop=True)
    mine = rows[entity].astype(str)
    found: dict[int, str] = {}
    for own in owners:
        owner = rows[key].astype(str).map(own)
        for i in rows.index[(owner.notna() & owner.ne(mine)).to_numpy(dtype=bool)]:
            found.setdefault(int(i), owner.iloc[i])
    if not found:
        return []
    shown = [f"{rows[key].iloc[i]!r} belongs to {entity} {o!r}" for i, o in found.items()]
    more = f" (+{len(shown) - 5} more)" if len(shown) > 5 else ""
    noun = entity.removesuffix("_id")
    return [Violation(table, key, [i + 1 for i in found], f"a {key} that no other {noun} has (one {key} "
                      f"names one event of one {noun}; a push may resend its own)", "; ".join(shown[:5]) + more)]


def _latest_features(ctx: FeatureContext, table: str, rows: pd.DataFrame) -> pd.DataFrame:
    """The latest feature row per entity from all of those entities' rows (the offline transform)."""
    from features import transforms

    key, transform, _ = PUSHABLE[table]
    custom = ctx.custom.get(table, [])
    features = (transforms.behaviour_features(rows, custom, activity=ctx.activity)
                if table == "usage_weekly" else getattr(transforms, transform)(rows, custom))
    return features.sort_values("event_timestamp").groupby(key).tail(1)


def _history(settings: Settings, raw_dir: Path, table: str, key: str, ids: set[str], extra=(),
             live=None) -> pd.DataFrame:
    """The export's and earlier pushes' rows for these entities only, in that order.

    Earlier pushes come from the live store's entity index (``live``, or the settings' store
    opened for this call): the cost follows these entities' rows, not the number of pushes.
    """
    from features.live import open_live

    parts = [exported_history(raw_dir, table, key, ids, extra)]
    if live is None:
        with open_live(settings) as own:
            parts.append(own.rows(table, ids))
    else:
        parts.append(live.rows(table, ids))
    parts = [p for p in parts if len(p)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def push_events(settings: Settings, raw_dir: Path, table: str, new_rows: pd.DataFrame,
                store=None, live=None) -> pd.DataFrame:
    """Recompute feature rows for the entities in ``new_rows`` and push them to the online store.

    The rows come from the same transform as the offline files (the export's history, earlier
    pushes and the new rows), so a pushed value equals what a rebuild would produce. Invalid
    rows (the contract, malformed ids, entities the export does not know) raise ContractError
    before anything is written or pushed. Accepted rows are appended to the live store
    (``features.live``) in the same transaction that reads the entities' earlier pushes, and
    that transaction commits only once the online push succeeded: concurrent pushes for an
    entity are serialized and each sees the others' rows, and a failed push keeps nothing.

    ``store`` (Feast) and ``live`` (a ``LiveStore``) may be passed to reuse them across calls.
    """
    from features.live import open_live
    from salesml.contract import TABLES
    from salesml.validation import ContractError, Violation, ignored_columns, validate_table

    if table not in PUSHABLE:
        raise ValueError(f"no push source for table '{table}': expected one of {', '.join(PUSHABLE)}")
    key, _, source = PUSHABLE[table]
    spec = TABLES[table]
    ctx = FeatureContext.of(settings, raw_dir)
    extra = ctx.extra_columns.get(table, ())
    typed, problems = validate_table(new_rows, spec, extra=extra, optional=set(spec.omittable))
    unknown = ignored_columns(new_rows.columns, spec, extra)
    if unknown:  # an export lists the columns it ignores; a push refuses them rather than drop them unsaid
        problems.append(Violation(table, None, [], "only contract columns or declared custom_columns",
                                  f"unknown column(s) {', '.join(map(str, unknown))}"))
    problems += id_violations(raw_dir, table, typed)
    if problems:
        raise ContractError(problems)
    ids = set(typed[key].astype(str))
    exported = exported_history(raw_dir, table, key, ids, extra)  # the export does not change: no lock
    store = store or open_store(settings)
    own = live is None
    live = open_live(settings) if own else live
    try:
        with live.transaction():  # BEGIN IMMEDIATE: one push at a time, readers unaffected
            earlier = live.rows(table, ids)
            pushed = pd.concat([earlier, typed], ignore_index=True) if len(earlier) else typed
            owners = exported_owners(raw_dir, table, pushed)
            taken = taken_keys(table, typed, owners, live.key_owners(table, typed[spec.key[0]].astype(str)))
            if taken:  # another entity's event id: moving or deleting exported events is no push's right
                raise ContractError(taken)
            latest = _latest_features(ctx, table, merge_live(table, exported, pushed, owners))
            live.append(table, typed)
            # What Feast's store.push(source) does, without its registry scan: push() lists and decodes
            # every view and service of the registry on each call (~40 ms of a ~100 ms push); the views a
            # push source feeds are known from our definitions. A failure raises: the append rolls back.
            for view in _views_fed_by(source):
                store.write_to_online_store(view, latest, allow_registry_cache=True)
    finally:
        if own:
            live.close()
    return latest


def push_many(settings: Settings, raw_dir: Path, table: str, batches: Iterable[pd.DataFrame],
              store=None) -> list[float]:
    """Push each batch in turn, as ``POST /events`` would; the seconds each push took (for benchmarks).

    Opens the Feast store once, as the service does; each push opens its own live-store connection,
    as each request does.
    """
    import time

    store = store or open_store(settings)
    took = []
    for batch in batches:
        t0 = time.perf_counter()
        push_events(settings, raw_dir, table, batch, store)
        took.append(time.perf_counter() - t0)
    return took


def push_lead_events(settings: Settings, raw_dir: Path, new_events: pd.DataFrame, store=None) -> pd.DataFrame:
    return push_events(settings, raw_dir, "lead_events", new_events, store)


def _views_fed_by(source: str) -> list[str]:
    from features.definitions import PUSHED

    return [view for view, push_source in PUSHED.items() if push_source == source]
