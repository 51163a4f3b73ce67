"""Feast's DuckDB offline store with a native ``ASOF JOIN`` fast path for historical retrieval.

Feast's own duckdb store plans point-in-time joins through ibis (window + filter per view),
which measured ~15x slower than a plain DuckDB ``ASOF JOIN`` on 200k labels x 1M feature
rows.  This store keeps every Feast definition and API (``get_historical_features``, feature
services, on-demand views, TTLs, full feature names) and only replaces the join for parquet
file sources; anything else falls back to the stock implementation.

Semantics (the same as Feast's): for each entity row, the latest feature row of the same
entity with ``feature.event_timestamp <= entity.event_timestamp``; older than the view's TTL
(when TTL > 0) -> missing.  Entity rows are kept one for one, in input order, duplicates
included.

``SALESML_FEAST_STOCK_JOIN=1`` (``Settings.feast_stock_join``) sends every join through Feast's own.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import List, Optional, Union

import duckdb
import pandas as pd
import pyarrow
from feast.feature_view import FeatureView
from feast.infra.offline_stores import duckdb as feast_duckdb
from feast.infra.offline_stores.duckdb import DuckDBOfflineStore, DuckDBOfflineStoreConfig
from feast.infra.offline_stores.file_source import FileSource
from feast.infra.offline_stores.ibis import (
    get_historical_features_ibis,
    pull_all_from_table_or_query_ibis,
    pull_latest_from_table_or_query_ibis,
)
from feast.infra.offline_stores.offline_store import RetrievalJob, RetrievalMetadata
from feast.infra.offline_stores.offline_utils import infer_event_timestamp_from_entity_df
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.repo_config import RepoConfig
from pydantic import StrictStr

from salesml.settings import Settings

ROW = "__salesml_row"


class AsofDuckDBOfflineStoreConfig(DuckDBOfflineStoreConfig):
    type: StrictStr = "features.offline_store.AsofDuckDBOfflineStore"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class AsofRetrievalJob(RetrievalJob):
    def __init__(self, build, odfvs, full_feature_names, metadata):
        self._build = build
        self._odfvs = odfvs
        self._full = full_feature_names
        self._metadata = metadata

    def _to_arrow_internal(self, timeout: Optional[int] = None) -> pyarrow.Table:
        return self._build()

    def _to_df_internal(self, timeout: Optional[int] = None) -> pd.DataFrame:
        return self._build().to_pandas()

    @property
    def full_feature_names(self) -> bool:
        return self._full

    @property
    def on_demand_feature_views(self) -> List[OnDemandFeatureView]:
        return self._odfvs

    @property
    def metadata(self) -> Optional[RetrievalMetadata]:
        return self._metadata

    def persist(self, storage, allow_overwrite: bool = False, timeout: Optional[int] = None):
        raise NotImplementedError("persist the data frame from to_df() instead")


def _read_relative(data_source, repo_path: str):
    """Feast's duckdb reader ignores repo_path for parquet; resolve relative paths first."""
    if isinstance(data_source, FileSource) and not Path(data_source.path).is_absolute():
        data_source = copy.copy(data_source)
        data_source.file_options = copy.copy(data_source.file_options)
        data_source.file_options.uri = FileSource.get_uri_for_file_path(repo_path, data_source.path)
    return feast_duckdb._read_data_source(data_source, repo_path)


def _stock_kwargs(config: RepoConfig) -> dict:
    return dict(
        data_source_reader=_read_relative,
        data_source_writer=feast_duckdb._write_data_source,
        staging_location=config.offline_store.staging_location,
        staging_location_endpoint_override=config.offline_store.staging_location_endpoint_override,
    )


def _parquet_sources(feature_views: List[FeatureView]) -> Optional[List[FileSource]]:
    """Each view's parquet file source, in order, when every view has one the fast path can read."""
    sources = [fv.batch_source for fv in feature_views]
    files = [s for s in sources if isinstance(s, FileSource) and s.path.endswith(".parquet")
             and not s.field_mapping]
    return files if len(files) == len(sources) else None


def asof_join_sql(entity_cols: list[str], ts_col: str, views: list[dict]) -> str:
    """SQL joining ``entity`` to each view's parquet as of the entity timestamp.

    ``views``: dicts with path, alias, keys (entity column -> feature column), ts, ttl_seconds,
    columns (feature column -> output name).
    """
    select = [f"e.{_q(c)}" for c in entity_cols]
    joins = []
    for i, v in enumerate(views):
        a = f"f{i}"
        cols = ", ".join(
            [f"{_q(fk)} AS {_q(f'{a}_k{j}')}" for j, fk in enumerate(v["keys"].values())]
            + [f"{_q(v['ts'])} AS {_q(f'{a}_ts')}"]
            + [f"{_q(src)} AS {_q(f'{a}_c{j}')}" for j, src in enumerate(v["columns"])]
        )
        on = " AND ".join(
            f"e.{_q(ek)} = {a}.{_q(f'{a}_k{j}')}" for j, ek in enumerate(v["keys"])
        )
        joins.append(
            f"ASOF LEFT JOIN (SELECT {cols} FROM read_parquet('{v['path']}')) {a} "
            f"ON {on} AND e.{_q(ts_col)} >= {a}.{_q(f'{a}_ts')}"
        )
        fresh = (
            f"{a}.{_q(f'{a}_ts')} >= e.{_q(ts_col)} - INTERVAL {int(v['ttl_seconds'])} SECOND"
            if v["ttl_seconds"] else "TRUE"
        )
        for j, out in enumerate(v["columns"].values()):
            select.append(f"CASE WHEN {fresh} THEN {a}.{_q(f'{a}_c{j}')} END AS {_q(out)}")
    return (
        f"SELECT {', '.join(select)} FROM entity e {' '.join(joins)} ORDER BY e.{_q(ROW)}"
    )


class AsofDuckDBOfflineStore(DuckDBOfflineStore):
    @staticmethod
    def pull_latest_from_table_or_query(config, data_source, join_key_columns, feature_name_columns,
                                        timestamp_field, created_timestamp_column, start_date, end_date):
        return pull_latest_from_table_or_query_ibis(
            config=config, data_source=data_source, join_key_columns=join_key_columns,
            feature_name_columns=feature_name_columns, timestamp_field=timestamp_field,
            created_timestamp_column=created_timestamp_column, start_date=start_date,
            end_date=end_date, **_stock_kwargs(config),
        )

    @staticmethod
    def pull_all_from_table_or_query(config, data_source, join_key_columns, feature_name_columns,
                                     timestamp_field, created_timestamp_column=None,
                                     start_date=None, end_date=None):
        return pull_all_from_table_or_query_ibis(
            config=config, data_source=data_source, join_key_columns=join_key_columns,
            feature_name_columns=feature_name_columns, timestamp_field=timestamp_field,
            created_timestamp_column=created_timestamp_column, start_date=start_date,
            end_date=end_date, **_stock_kwargs(config),
        )

    @staticmethod
    def stock_historical_features(config, feature_views, feature_refs, entity_df, registry,
                                  project, full_feature_names=False,
                                  filter_by_created_timestamp=False) -> RetrievalJob:
        """Feast's own ibis point-in-time join (used as fallback and as the reference in tests)."""
        return get_historical_features_ibis(
            config=config, feature_views=feature_views, feature_refs=feature_refs,
            entity_df=entity_df, registry=registry, project=project,
            full_feature_names=full_feature_names,
            filter_by_created_timestamp=filter_by_created_timestamp, **_stock_kwargs(config),
        )

    @staticmethod
    def get_historical_features(
        config: RepoConfig,
        feature_views: List[FeatureView],
        feature_refs: List[str],
        entity_df: Union[pd.DataFrame, str],
        registry,
        project: str,
        full_feature_names: bool = False,
        filter_by_created_timestamp: bool = False,
    ) -> RetrievalJob:
        sources = _parquet_sources(feature_views)
        if not isinstance(entity_df, pd.DataFrame) or sources is None or Settings().feast_stock_join:
            return AsofDuckDBOfflineStore.stock_historical_features(
                config, feature_views, feature_refs, entity_df, registry, project,
                full_feature_names, filter_by_created_timestamp,
            )
        ts_col = infer_event_timestamp_from_entity_df(
            dict(zip(entity_df.columns, entity_df.dtypes))
        )
        entity = entity_df.copy()
        ts = pd.to_datetime(entity[ts_col], utc=True)
        entity[ts_col] = ts.astype(pd.DatetimeTZDtype("us", "UTC"))
        entity[ROW] = range(len(entity))

        views = []
        for fv, source in zip(feature_views, sources):
            prefix = fv.projection.name_to_use()
            base = fv.projection.name_alias or fv.name
            names = [r.split(":", 1)[1] for r in feature_refs if r.startswith(f"{prefix}:")]
            keys = fv.projection.join_key_map or {c.name: c.name for c in fv.entity_columns}
            # join_key_map maps feature-view key -> entity-df column
            key_map = {keys.get(c.name, c.name): c.name for c in fv.entity_columns}
            views.append({
                "path": FileSource.get_uri_for_file_path(config.repo_path, source.path),
                "keys": key_map,
                "ts": source.timestamp_field,
                "ttl_seconds": fv.ttl.total_seconds() if fv.ttl else 0,
                "columns": {n: (f"{base}__{n}" if full_feature_names else n) for n in names},
            })
        entity_cols = [c for c in entity.columns if c != ROW]
        sql = asof_join_sql(entity_cols, ts_col, views)

        def build() -> pyarrow.Table:
            con = duckdb.connect()
            try:
                con.execute("SET TimeZone='UTC'")
                con.register("entity", entity)
                return con.sql(sql).to_arrow_table()
            finally:
                con.close()

        odfvs = OnDemandFeatureView.get_requested_odfvs(feature_refs, project, registry)
        metadata = RetrievalMetadata(
            features=feature_refs,
            keys=[c for c in entity_cols if c != ts_col],
            min_event_timestamp=ts.min(),
            max_event_timestamp=ts.max(),
        )
        return AsofRetrievalJob(build, odfvs, full_feature_names, metadata)
