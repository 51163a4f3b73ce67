"""Durable prediction, outcome and access logs in one SQLite file.

The file is in WAL mode. With ``synchronous="NORMAL"`` (the default) a commit that returned survives a crash or kill
of the process; a power loss or OS crash may lose the last few commits. ``synchronous="FULL"`` fsyncs every commit
and also survives power loss, at the price of slower writes. Either way the file itself is never left corrupt.

One connection per ``PredictionLog``, guarded by a lock, so one instance may be shared by the threads of a process.
Several processes (e.g. BentoML workers) each open their own instance (after forking); writers queue through
SQLite's file lock, waiting up to ``busy_timeout`` (5 s).
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from salesml import sqlite

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT NOT NULL, ts TEXT NOT NULL, role TEXT NOT NULL,
    api_key_id TEXT, endpoint TEXT NOT NULL, entity_type TEXT NOT NULL, entity_id TEXT NOT NULL,
    model TEXT NOT NULL, version TEXT NOT NULL, variant TEXT NOT NULL, features TEXT NOT NULL, outputs TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS predictions_model_ts ON predictions (model, ts);
CREATE INDEX IF NOT EXISTS predictions_entity ON predictions (entity_id);
CREATE TABLE IF NOT EXISTS outcomes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, received_at TEXT NOT NULL, entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL, outcome TEXT NOT NULL, value INTEGER NOT NULL, occurred_at TEXT NOT NULL,
    source TEXT, request_id TEXT, UNIQUE (entity_type, entity_id, outcome, occurred_at));
CREATE TABLE IF NOT EXISTS access (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, ts TEXT NOT NULL, request_id TEXT, api_key_id TEXT, role TEXT,
    endpoint TEXT NOT NULL, entities TEXT NOT NULL, status INTEGER NOT NULL, detail TEXT, client TEXT);
"""
# Columns added after the first release: (table, column, type). A log written before gets them on open.
ADDED = (("access", "client", "TEXT"),)
PRED_COLS = ("request_id", "ts", "role", "api_key_id", "endpoint", "entity_type", "entity_id",
             "model", "version", "variant", "features", "outputs")
OUTCOME_COLS = ("received_at", "entity_type", "entity_id", "outcome", "value", "occurred_at", "source", "request_id")
ACCESS_COLS = ("ts", "request_id", "api_key_id", "role", "endpoint", "entities", "status", "detail", "client")
TABLES = ("predictions", "outcomes", "access")
DIRECT = "direct"  # the variant of a score computed on features given in the request (rows=)


def _iso(ts: datetime | str | pd.Timestamp) -> str:
    """ISO-8601 UTC with microseconds, so text order is time order. Naive times are taken as UTC."""
    t = datetime.fromisoformat(ts) if isinstance(ts, str) else ts
    t = t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)
    return t.isoformat(timespec="microseconds")


def now_utc() -> datetime:
    """The time now, timezone-aware UTC: what every record of the serving side is stamped with."""
    return datetime.now(timezone.utc)


def _now() -> str:
    return _iso(now_utc())


def clean(v, infinite: bool = False):
    """``v`` as plain JSON data: numpy scalars become Python ones, a missing value (None, NaN, NaT,
    ``pd.NA``) becomes null, a timestamp ISO-8601 text; dicts and lists item by item.

    An infinity becomes null as well (an answer shows no value there), unless ``infinite``: the
    prediction log keeps it, so that ``json.dumps(allow_nan=False)`` refuses the record (only NaN
    means missing there; an infinite score is an error to surface, not a gap).
    """
    if isinstance(v, dict):
        return {str(k): clean(x, infinite) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [clean(x, infinite) for x in v]
    if isinstance(v, np.datetime64):
        v = pd.Timestamp(v)
    elif isinstance(v, np.generic):
        v = v.item()
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, float):
        return None if math.isnan(v) or (math.isinf(v) and not infinite) else v
    if isinstance(v, datetime):
        return v.isoformat()
    return v


def _json(v) -> str:
    try:  # plain JSON data already (the answers' features and outputs): clean would return it unchanged
        return json.dumps(v, allow_nan=False)
    except (TypeError, ValueError):  # numpy scalars, timestamps, NaN (-> null); an infinity still refused
        return json.dumps(clean(v, infinite=True), allow_nan=False)


def _utc(s: pd.Series) -> pd.Series:
    return pd.to_datetime(s, utc=True, format="ISO8601")


class PredictionLog:
    def __init__(self, path: str | Path, synchronous: str = "NORMAL"):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._con = sqlite.connect(self.path, SCHEMA, synchronous=synchronous, timeout_s=5.0, threads=True)
        for table, column, kind in ADDED:
            have = {r[1] for r in self._con.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                try:
                    self._con.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
                except sqlite3.OperationalError:  # another process added it first
                    pass

    def _write(self, work):
        """Run ``work(con)`` in one write transaction; all or nothing. Caller holds the lock."""
        with sqlite.immediate(self._con) as con:
            return work(con)

    def _insert(self, table: str, cols: tuple[str, ...], rows: list[tuple], verb: str = "INSERT") -> int:
        sql = f"{verb} INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        with self._lock:
            self._write(lambda con: con.executemany(sql, rows))
        return len(rows)

    def append_predictions(self, records: list[dict]) -> int:
        """Write a batch of predictions in one transaction; returns rows written."""
        rows = [(r["request_id"], _iso(r["ts"]), r["role"], r["api_key_id"], r["endpoint"], r["entity_type"],
                 r["entity_id"], r["model"], r["version"], r["variant"], _json(r["features"]), _json(r["outputs"]))
                for r in records]
        return self._insert("predictions", PRED_COLS, rows)

    def append_outcomes(self, records: list[dict]) -> int:
        """Write outcomes in one transaction; a resent outcome replaces the earlier row."""
        now = _now()
        rows = [(now, r["entity_type"], r["entity_id"], r["outcome"], int(r["value"]), _iso(r["occurred_at"]),
                 r.get("source"), r.get("request_id")) for r in records]
        return self._insert("outcomes", OUTCOME_COLS, rows, verb="INSERT OR REPLACE")

    def append_access(self, record: dict) -> None:
        r = record
        row = (_iso(r.get("ts") or datetime.now(timezone.utc)), r.get("request_id"), r.get("api_key_id"),
               r.get("role"), r["endpoint"], _json(list(r.get("entities") or [])), int(r["status"]), r.get("detail"),
               r.get("client"))
        self._insert("access", ACCESS_COLS, [row])

    def _read(self, table: str, where: Mapping[str, object], ts_col: str = "ts", start=None, end=None) -> pd.DataFrame:
        clauses = [f"{k} = ?" for k in where]
        params = list(where.values())
        if start is not None:
            clauses.append(f"{ts_col} >= ?")
            params.append(_iso(start))
        if end is not None:
            clauses.append(f"{ts_col} < ?")
            params.append(_iso(end))
        sql = f"SELECT * FROM {table}" + (f" WHERE {' AND '.join(clauses)}" if clauses else "") + " ORDER BY seq"
        with self._lock:
            return pd.read_sql_query(sql, self._con, params=params)

    def predictions(self, model: str | None = None, start=None, end=None, variant: str | None = None) -> pd.DataFrame:
        """Predictions with ``start <= ts < end``; ``features`` and ``outputs`` are dict columns."""
        where = {k: v for k, v in (("model", model), ("variant", variant)) if v is not None}
        df = self._read("predictions", where, start=start, end=end)
        df["ts"] = _utc(df["ts"])
        for c in ("features", "outputs"):
            df[c] = df[c].map(json.loads)
        return df

    def feature_frame(self, model: str, start=None, end=None) -> pd.DataFrame:
        """One row per served prediction: ids, features as columns and outputs as ``out_<key>`` columns.

        Direct scores (``rows=`` requests, variant ``direct``: features the caller made up) are left out:
        they are not traffic of any entity, so drift windows must not count them."""
        df = self.predictions(model, start, end)
        df = df[df["variant"] != DIRECT].reset_index(drop=True)
        feats = pd.DataFrame(df["features"].tolist(), index=df.index)
        outs = pd.DataFrame(df["outputs"].tolist(), index=df.index).add_prefix("out_")
        ids = df[["request_id", "entity_id", "ts", "model", "version", "variant"]]
        return pd.concat([ids, feats, outs], axis=1)

    def outcomes(self, entity_type: str | None = None) -> pd.DataFrame:
        df = self._read("outcomes", {} if entity_type is None else {"entity_type": entity_type})
        for c in ("received_at", "occurred_at"):
            df[c] = _utc(df[c])
        return df

    def access(self, start=None, end=None) -> pd.DataFrame:
        df = self._read("access", {}, start=start, end=end)
        df["ts"] = _utc(df["ts"])
        df["entities"] = df["entities"].map(json.loads)
        return df

    def count(self, table: str) -> int:
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}")
        with self._lock:
            return self._con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]

    def integrity_ok(self) -> bool:
        with self._lock:
            return self._con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    def close(self) -> None:
        with self._lock:
            self._con.close()

    def __enter__(self) -> PredictionLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
