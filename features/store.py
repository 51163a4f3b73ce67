"""Thin layer over Feast: open the store, build feature files, apply, materialize, push.

Nothing here runs at import.  Every write goes through ``build_feature_files``, which
validates the export first and swaps files in atomically, so a bad export leaves the store
exactly as it was.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Callable

import pandas as pd

from salesml.settings import Settings

Progress = Callable[[str], None]


def open_store(settings: Settings):
    from feast import FeatureStore

    settings.ensure_dirs()
    # Relative source paths in features/definitions.py resolve against repo_path.  Feast expands
    # the yaml's ${VARS} once, here.
    with settings.feast_environment():
        return FeatureStore(repo_path=str(settings.feature_data_dir), fs_yaml_file=Path(settings.feast_yaml))


def build_feature_files(settings: Settings, raw_dir: Path, progress: Progress = print) -> dict[str, int]:
    """Validate ``raw_dir`` against the contract and (re)write the offline feature files.

    Raises ContractError, before anything is written, when the export is invalid.
    """
    from features.transforms import build_all
    from salesml.validation import load_valid_export

    progress(f"validating export {raw_dir}")
    frames = load_valid_export(raw_dir)
    progress("computing feature tables")
    tables = build_all(frames)
    settings.ensure_dirs()
    staging = Path(tempfile.mkdtemp(dir=settings.feature_data_dir.parent, prefix=".staging-"))
    try:
        for name, df in tables.items():
            df.to_parquet(staging / f"{name}.parquet", index=False)
        for name in tables:  # rename is atomic within one filesystem
            os.replace(staging / f"{name}.parquet", settings.feature_data_dir / f"{name}.parquet")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for name, df in tables.items():
        progress(f"  {name:<14} {len(df):>10,} rows")
    return {name: len(df) for name, df in tables.items()}


def apply(settings: Settings, progress: Progress = print) -> list[str]:
    from features import definitions

    store = open_store(settings)
    store.apply(definitions.ALL)
    names = [getattr(o, "name", "?") for o in definitions.ALL]
    progress(f"applied {len(names)} Feast objects to project '{store.project}'")
    return names


def feature_time_range(settings: Settings) -> tuple[datetime, datetime]:
    import duckdb

    files = sorted(settings.feature_data_dir.glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no feature files in {settings.feature_data_dir}: run `salesml features build`")
    with duckdb.connect() as con:
        return con.execute(
            "SELECT min(event_timestamp), max(event_timestamp) FROM read_parquet(?, union_by_name=true)",
            [[str(f) for f in files]],
        ).fetchone()


def materialize(settings: Settings, end: datetime | None = None,
                progress: Callable[[str, int, int], None] | None = None) -> dict[str, int]:
    """Load the latest value per entity up to ``end`` into the online store, view by view."""
    from features import definitions

    store = open_store(settings)
    start, last = feature_time_range(settings)
    end = end or last
    views = [v for v in (definitions.contract, definitions.behaviour, definitions.relationship,
                         definitions.lead_activity, definitions.lead_profile, definitions.rep_state)]
    counts = {}
    for i, view in enumerate(views):
        if progress:
            progress(view.name, i, len(views))
        path = settings.feature_data_dir / view.batch_source.path
        if not path.exists():
            continue
        store.materialize(start_date=start - pd.Timedelta(days=1), end_date=end + pd.Timedelta(seconds=1),
                          feature_views=[view.name])
        counts[view.name] = _entities_in(str(path), f"{view.entities[0]}_id", end)
    if progress:
        progress("done", len(views), len(views))
    return counts


def _entities_in(path: str, key: str, end: datetime) -> int:
    import duckdb

    with duckdb.connect() as con:
        return con.execute(
            f'SELECT count(DISTINCT "{key}") FROM read_parquet(?) WHERE event_timestamp <= ?',
            [path, end],
        ).fetchone()[0]


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


def live_dir(settings: Settings, table: str) -> Path:
    """Rows that arrived through a push after the export, one parquet part per push."""
    return settings.root / "data" / "live" / table


def _history(settings: Settings, raw_dir: Path, table: str, key: str, ids: set[str]) -> pd.DataFrame:
    """The export's and earlier pushes' rows for these entities only (a filtered parquet scan)."""
    import pyarrow.dataset as ds

    sources = [p for p in (Path(raw_dir) / f"{table}.parquet",) if p.exists()]
    sources += sorted(live_dir(settings, table).glob("part-*.parquet"))
    if not sources:
        return pd.DataFrame()
    parts = [ds.dataset(p).to_table(filter=ds.field(key).isin(sorted(ids))).to_pandas() for p in sources]
    parts = [p for p in parts if len(p)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def push_events(settings: Settings, raw_dir: Path, table: str, new_rows: pd.DataFrame,
                store=None) -> pd.DataFrame:
    """Recompute feature rows for the entities in ``new_rows`` and push them to the online store.

    The rows come from the same transform as the offline files (the export's history, earlier
    pushes and the new rows), so a pushed value equals what a rebuild would produce.  Invalid
    rows raise ContractError before anything is pushed; accepted rows are kept (one atomic
    parquet part per push) so the next push and a rebuild see them.
    """
    import uuid

    from features import transforms
    from salesml.contract import TABLES
    from salesml.validation import ContractError, validate_table

    if table not in PUSHABLE:
        raise ValueError(f"no push source for table '{table}': expected one of {', '.join(PUSHABLE)}")
    key, transform, source = PUSHABLE[table]
    spec = TABLES[table]
    typed, problems = validate_table(new_rows, spec)
    if problems:
        raise ContractError(problems)
    history = _history(settings, raw_dir, table, key, set(typed[key]))
    rows = pd.concat([history, typed], ignore_index=True) if len(history) else typed
    rows = rows.drop_duplicates(list(spec.key), keep="last")  # a resent row replaces the old one
    features = getattr(transforms, transform)(rows)
    latest = features.sort_values("event_timestamp").groupby(key).tail(1)
    store = store or open_store(settings)
    store.push(source, latest, to=_push_mode("ONLINE"))
    out = live_dir(settings, table)
    out.mkdir(parents=True, exist_ok=True)
    name = f"part-{pd.Timestamp.now(tz='UTC'):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}.parquet"
    typed.to_parquet(out / f".{name}.tmp", index=False)
    (out / f".{name}.tmp").replace(out / name)
    return latest


def push_lead_events(settings: Settings, raw_dir: Path, new_events: pd.DataFrame, store=None) -> pd.DataFrame:
    return push_events(settings, raw_dir, "lead_events", new_events, store)


def _push_mode(name: str):
    from feast.data_source import PushMode

    return getattr(PushMode, name)
