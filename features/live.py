"""The live-event store: every row accepted by a push since the export, in one SQLite file.

``features.store.push_events`` appends here and reads an entity's earlier pushes from here;
``features build`` reads all of it, so a rebuild loses no pushed event.

File
    ``<home>/data/live/live.db`` (``live_path``, the one place that names it). WAL journal, so
    readers (a rebuild, another worker's history read) never wait for a writer;
    ``synchronous=NORMAL`` (in WAL a commit survives a crash of the process; a power cut may undo
    the last commits; pass ``synchronous="FULL"`` to trade an fsync per commit for that too);
    ``busy_timeout``, so concurrent writers queue instead of failing at once.

Schema, per pushable table ``T`` with entity column ``E`` (``ENTITY_KEYS``)
    ``T(seq INTEGER PRIMARY KEY AUTOINCREMENT, E TEXT NOT NULL, schema_id INTEGER NOT NULL,
    row TEXT NOT NULL)`` with an index on ``(E, seq)``: an entity's rows cost in proportion to
    that entity's rows, not to all pushes. ``seq`` is the arrival order (a later row wins on
    de-duplication). ``live_schemas(id, tbl, columns)`` holds each distinct column layout once;
    ``live_migrated(part, ...)`` the legacy parquet parts already folded in.
    ``live_keys(tbl, key, entity)``: for a table whose key does not contain its entity
    (``lead_events``: ``event_id``), the entity that key belongs to, so a push cannot give another
    lead's event id to its own lead (``key_owners``, ``features.store.push_events``) and an entity's
    rows leave out those whose key a later row gave another entity (rows stored before that rule).
    ``live_meta(name, value)``: ``included:<table>``, the last ``seq`` the offline feature files
    include (``set_included``, written by ``features build``): ``features materialize`` writes the
    rows after it back online (``entities_after``), so a rebuild never rolls a push back.

Encoding
    ``row`` is a JSON array of the values in the order of its schema's ``columns``, a JSON list
    of ``[name, dtype]`` with the contract's dtype names (str, int, float, bool, ts). Reading
    re-types each column from that list (``string``, ``Int64``, ``Float64``, ``boolean``, UTC
    microsecond timestamps). Lossless: JSON keeps Python ints exactly and floats by their
    shortest round-tripping repr; timestamps are ISO-8601 UTC with microseconds, the contract's
    precision; nulls are ``null``. The store describes itself, so reading needs neither the
    project configuration nor the export (a custom column declared at push time keeps its type
    even if the configuration changes later), and a row stays readable with ``sqlite3`` and
    ``json_extract`` for inspection.

Locking
    ``LiveStore.transaction()`` is ``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any
    exception). A push holds it across: read the entities' earlier rows, compute, append,
    push online. Two pushes (any processes) for the same entity are therefore serialized and
    the second sees the first's rows; a failed online push rolls the append back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from salesml import sqlite
from salesml.contract import TABLES, TS

if TYPE_CHECKING:
    from salesml.settings import Settings

# Pushable tables and the entity column each is indexed by.
ENTITY_KEYS = {"lead_events": "lead_id", "usage_weekly": "account_id"}
# Tables whose (one-column) key does not name the entity: the key's owner is recorded (live_keys).
OWNED_KEYS = {t: TABLES[t].key[0] for t, e in ENTITY_KEYS.items()
              if e not in TABLES[t].key and len(TABLES[t].key) == 1}
_PANDAS = {"str": "string", "int": "Int64", "float": "Float64", "bool": "boolean"}
_TS_TEXT = "%Y-%m-%dT%H:%M:%S.%fZ"
_CHUNK = 500  # ids per IN (...) query, well under SQLite's bound-parameter limit


def live_path(settings: Settings) -> Path:
    """Where the live events of this working folder are (the single place that names it)."""
    return settings.root / "data" / "live" / "live.db"


def legacy_parts_dir(settings: Settings, table: str) -> Path:
    """The old layout, one parquet part per push: read only to migrate it (``migrate_parts``)."""
    return live_path(settings).parent / table


def open_live(settings: Settings, **kwargs) -> LiveStore:
    """The live store of ``settings``, created if absent, with any legacy parquet parts folded in."""
    kwargs.setdefault("synchronous", settings.log_synchronous)  # as durable as the prediction log
    live = LiveStore(live_path(settings), **kwargs)
    try:
        migrate_parts(settings, live)
    except BaseException:
        live.close()
        raise
    return live


def migrate_parts(settings: Settings, live: LiveStore) -> dict[str, int]:
    """Fold ``data/live/<table>/part-*.parquet`` into ``live`` in one transaction, then remove them.

    Parts are appended in name (= arrival) order and recorded in ``live_migrated`` in the same
    transaction, so a part is folded in exactly once even when several processes start at once
    or one dies between the commit and the removal. Files are removed only after the commit.
    Returns the rows folded in per table.
    """
    found = {t: sorted(legacy_parts_dir(settings, t).glob("part-*.parquet")) for t in ENTITY_KEYS}
    if not any(found.values()):
        return {}
    done: dict[str, int] = {}
    with live.transaction():
        for table, parts in found.items():
            for part in parts:
                name = f"{table}/{part.name}"
                if live._con.execute("SELECT 1 FROM live_migrated WHERE part = ?", (name,)).fetchone():
                    continue
                n = live.append(table, pd.read_parquet(part))
                live._con.execute("INSERT INTO live_migrated(part, tbl, rows, at) VALUES (?, ?, ?, ?)",
                                  (name, table, n, pd.Timestamp.now(tz="UTC").isoformat()))
                done[table] = done.get(table, 0) + n
    for table, parts in found.items():
        for part in parts:
            part.unlink(missing_ok=True)
        try:
            legacy_parts_dir(settings, table).rmdir()
        except OSError:  # not empty (a stray temporary file): left for a person to look at
            pass
    return done


class LiveStore:
    """Append-only rows per pushable table, indexed by entity. One connection; not shared across threads."""

    def __init__(self, path: Path | str, *, timeout_s: float = 30.0, synchronous: str = "NORMAL"):
        self.path = Path(path)
        self._con = sqlite.connect(self.path, _SCHEMA, synchronous=synchronous, timeout_s=timeout_s)
        try:
            self._index_keys()
        except BaseException:
            self._con.close()
            raise

    def _index_keys(self) -> None:
        """Fill ``live_keys`` from the rows of a store written before it existed (once, last row wins)."""
        name = "keys_indexed"
        if self._meta(name) is not None:
            return
        with self.transaction():
            if self._meta(name) is not None:  # another process did it meanwhile
                return
            for table in OWNED_KEYS:
                rows = self._rows(table, self._con.execute(f'SELECT seq, schema_id, row FROM "{table}"').fetchall())
                if len(rows):
                    self._own(table, rows)
            self._con.execute("INSERT INTO live_meta(name, value) VALUES (?, '1')", (name,))

    def _meta(self, name: str) -> str | None:
        found = self._con.execute("SELECT value FROM live_meta WHERE name = ?", (name,)).fetchone()
        return None if found is None else str(found[0])

    # --- lifetime ---------------------------------------------------------------------------
    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> LiveStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[LiveStore]:
        """``BEGIN IMMEDIATE`` (the write lock, waiting up to the busy timeout) ... ``COMMIT``;
        ``ROLLBACK`` when the block raises. Reads inside see this transaction's own appends."""
        if self._con.in_transaction:
            raise RuntimeError("a live-store transaction is already open on this connection")
        with sqlite.immediate(self._con):
            yield self

    # --- writing ----------------------------------------------------------------------------
    def append(self, table: str, df: pd.DataFrame) -> int:
        """Append the typed rows of ``df`` in order (one transaction unless one is open); returns how many."""
        entity = _entity(table)
        if entity not in df.columns:
            raise ValueError(f"{table}: rows to append have no {entity} column")
        if df[entity].isna().any():
            raise ValueError(f"{table}: rows to append have an empty {entity}")
        if df.columns.duplicated().any():
            raise ValueError(f"{table}: duplicate column names")
        if not len(df):
            return 0
        layout = [[str(c), _dtype_name(table, str(c), df[c])] for c in df.columns]
        values = [_encode(df[c], kind) for c, (_, kind) in zip(df.columns, layout)]
        encoded = [json.dumps(list(r), separators=(",", ":")) for r in zip(*values)]
        entities = df[entity].astype(str).tolist()
        if self._con.in_transaction:
            self._insert(table, entity, json.dumps(layout, separators=(",", ":")), entities, encoded)
            self._own(table, df)
        else:
            with self.transaction():
                self._insert(table, entity, json.dumps(layout, separators=(",", ":")), entities, encoded)
                self._own(table, df)
        return len(encoded)

    def _insert(self, table: str, entity: str, layout: str, entities: list[str], encoded: list[str]) -> None:
        self._con.execute("INSERT OR IGNORE INTO live_schemas(tbl, columns) VALUES (?, ?)", (table, layout))
        (schema_id,) = self._con.execute("SELECT id FROM live_schemas WHERE tbl = ? AND columns = ?",
                                         (table, layout)).fetchone()
        self._con.executemany(f'INSERT INTO "{table}"("{entity}", schema_id, row) VALUES (?, ?, ?)',
                              [(e, schema_id, r) for e, r in zip(entities, encoded)])

    def _own(self, table: str, df: pd.DataFrame) -> None:
        """Record each row's key as its entity's (a later row wins): inside the caller's transaction."""
        if table not in OWNED_KEYS:
            return
        pairs = zip(df[OWNED_KEYS[table]].astype(str), df[_entity(table)].astype(str))
        self._con.executemany("INSERT INTO live_keys(tbl, key, entity) VALUES (?, ?, ?) "
                              "ON CONFLICT(tbl, key) DO UPDATE SET entity = excluded.entity",
                              [(table, k, e) for k, e in pairs])

    def key_owners(self, table: str, keys: Iterable[str]) -> dict[str, str]:
        """The entity each of ``keys`` belongs to in this store (keys it has not seen are left out).
        Empty for a table whose key contains its entity (no key can move to another entity there)."""
        if table not in OWNED_KEYS:
            return {}
        keys = sorted({str(k) for k in keys})
        out: dict[str, str] = {}
        for i in range(0, len(keys), _CHUNK):
            chunk = keys[i:i + _CHUNK]
            out.update(self._con.execute(f'SELECT key, entity FROM live_keys WHERE tbl = ? AND key IN '
                                         f'({",".join("?" * len(chunk))})', [table, *chunk]).fetchall())
        return out

    # --- what the offline feature files include ----------------------------------------------
    def last_seq(self, table: str) -> int:
        """The ``seq`` of the last committed row of ``table`` (0 when it has none)."""
        _entity(table)
        return int(self._con.execute(f'SELECT coalesce(max(seq), 0) FROM "{table}"').fetchone()[0])

    def included(self, table: str) -> int:
        """The last ``seq`` of ``table`` that the offline feature files include (0: none recorded)."""
        _entity(table)
        found = self._meta(f"included:{table}")
        return 0 if found is None else int(found)

    def set_included(self, table: str, seq: int) -> None:
        """Record that the offline feature files now include the rows of ``table`` up to ``seq``."""
        _entity(table)
        self._con.execute("INSERT INTO live_meta(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET "
                          "value = excluded.value", (f"included:{table}", str(int(seq))))

    def entities_after(self, table: str, seq: int) -> list[str]:
        """The entities with rows of ``table`` after ``seq`` (a range scan of the primary key)."""
        entity = _entity(table)
        return [e for (e,) in self._con.execute(f'SELECT DISTINCT "{entity}" FROM "{table}" WHERE seq > ? '
                                                f'ORDER BY 1', (int(seq),)).fetchall()]

    # --- reading ----------------------------------------------------------------------------
    def rows(self, table: str, ids: Iterable[str] | None = None, *, upto: int | None = None) -> pd.DataFrame:
        """The rows of ``table`` in arrival order: all of them, or only those of the entities ``ids``
        (index lookups: the cost follows those entities' rows, not the table's); with ``upto``, only
        rows with ``seq <= upto``. An entity's rows leave out those whose key a later row gave another
        entity (``key_owners``; only rows stored before pushes were refused such keys can be so)."""
        entity = _entity(table)
        below = "" if upto is None else f" AND seq <= {int(upto)}"
        if ids is None:
            fetched = self._con.execute(f'SELECT seq, schema_id, row FROM "{table}" WHERE TRUE{below}').fetchall()
            return self._rows(table, fetched)
        ids = sorted({str(i) for i in ids})
        fetched = []
        for i in range(0, len(ids), _CHUNK):
            chunk = ids[i:i + _CHUNK]
            fetched += self._con.execute(
                f'SELECT seq, schema_id, row FROM "{table}" WHERE "{entity}" IN '
                f'({",".join("?" * len(chunk))}){below}', chunk).fetchall()
        out = self._rows(table, fetched)
        if table in OWNED_KEYS and len(out):
            key = out[OWNED_KEYS[table]].astype(str)
            owner = key.map(self.key_owners(table, key))
            out = out[owner.isna() | owner.eq(out[entity].astype(str))].reset_index(drop=True)
        return out

    def _rows(self, table: str, fetched: list[tuple[int, int, str]]) -> pd.DataFrame:
        if not fetched:
            return pd.DataFrame()
        layouts = dict(self._con.execute("SELECT id, columns FROM live_schemas WHERE tbl = ?", (table,)).fetchall())
        groups: dict[int, list[tuple[int, str]]] = {}
        for seq, schema_id, row in fetched:
            groups.setdefault(schema_id, []).append((seq, row))
        frames = []
        for schema_id, items in groups.items():
            frames.append(_decode(json.loads(layouts[schema_id]), items))
        out = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
        return out.sort_values("_seq", kind="stable").drop(columns="_seq").reset_index(drop=True)

    def count(self, table: str, ids: Iterable[str] | None = None) -> int:
        """How many rows ``table`` holds (of the entities ``ids``, when given)."""
        entity = _entity(table)
        if ids is None:
            return self._con.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
        ids = sorted({str(i) for i in ids})
        return sum(self._con.execute(f'SELECT count(*) FROM "{table}" WHERE "{entity}" IN '
                                     f'({",".join("?" * len(ids[i:i + _CHUNK]))})',
                                     ids[i:i + _CHUNK]).fetchone()[0] for i in range(0, len(ids), _CHUNK))


_SCHEMA = "\n".join(
    [
        "CREATE TABLE IF NOT EXISTS live_schemas (id INTEGER PRIMARY KEY, tbl TEXT NOT NULL, "
        "columns TEXT NOT NULL, UNIQUE (tbl, columns));",
        "CREATE TABLE IF NOT EXISTS live_migrated (part TEXT PRIMARY KEY, tbl TEXT NOT NULL, "
        "rows INTEGER NOT NULL, at TEXT NOT NULL);",
        "CREATE TABLE IF NOT EXISTS live_keys (tbl TEXT NOT NULL, key TEXT NOT NULL, entity TEXT NOT NULL, "
        "PRIMARY KEY (tbl, key)) WITHOUT ROWID;",
        "CREATE TABLE IF NOT EXISTS live_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);",
    ]
    + [
        f'CREATE TABLE IF NOT EXISTS "{t}" (seq INTEGER PRIMARY KEY AUTOINCREMENT, "{e}" TEXT NOT NULL, '
        f'schema_id INTEGER NOT NULL REFERENCES live_schemas(id), row TEXT NOT NULL);\n'
        f'CREATE INDEX IF NOT EXISTS "{t}_{e}" ON "{t}"("{e}", seq);'
        for t, e in ENTITY_KEYS.items()
    ]
)


def _entity(table: str) -> str:
    try:
        return ENTITY_KEYS[table]
    except KeyError:
        raise ValueError(f"no live table '{table}': expected one of {', '.join(ENTITY_KEYS)}") from None


def _dtype_name(table: str, column: str, s: pd.Series) -> str:
    """The contract dtype name of a typed column; refuses what could not come back the same."""
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        if s.dt.nanosecond.fillna(0).any():
            raise ValueError(f"{table}.{column}: timestamps finer than microseconds")
        return "ts"
    if pd.api.types.is_datetime64_dtype(s.dtype):
        raise ValueError(f"{table}.{column}: naive timestamps (zone unknown)")
    if pd.api.types.is_bool_dtype(s.dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(s.dtype):
        return "int"
    if pd.api.types.is_float_dtype(s.dtype):
        return "float"
    if pd.api.types.is_string_dtype(s.dtype) and s.dropna().map(type).eq(str).all():
        return "str"
    raise ValueError(f"{table}.{column}: cannot store dtype {s.dtype} losslessly")


def _encode(s: pd.Series, kind: str) -> list:
    if kind == "ts":
        text = s.dt.tz_convert("UTC").dt.strftime(_TS_TEXT)
        return [None if pd.isna(v) else v for v in text]
    if kind == "str":
        return [None if pd.isna(v) else v for v in s]
    cast = {"int": int, "float": float, "bool": bool}[kind]
    return [None if pd.isna(v) else cast(v) for v in s.astype(object)]


def _decode(layout: list[list[str]], items: list[tuple[int, str]]) -> pd.DataFrame:
    names = [name for name, _ in layout]
    values = [json.loads(r) for _, r in items]
    cols = list(zip(*values)) if values else [()] * len(names)
    data = {}
    for (name, kind), col in zip(layout, cols):
        if kind == "ts":
            data[name] = pd.to_datetime(pd.Series(col, dtype=object), utc=True, format="ISO8601").astype(TS)
        else:
            data[name] = pd.array(list(col), dtype=_PANDAS[kind])
    df = pd.DataFrame(data, columns=names)
    df["_seq"] = [seq for seq, _ in items]
    return df
