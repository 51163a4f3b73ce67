"""The project's SQLite stores (the live-event store, the prediction log, the warnings store) open and
write the same way: WAL mode, explicit ``BEGIN IMMEDIATE`` transactions, a busy timeout.

WAL lets readers go on while one writer writes; ``BEGIN IMMEDIATE`` takes the write lock up front,
so a second writer (another thread or process) waits up to the busy timeout instead of failing
when it upgrades a read lock. Base layer: ``features`` and ``serving`` both keep such stores.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


def connect(path: Path | str, schema: str, *, synchronous: str = "NORMAL", timeout_s: float = 30.0,
            threads: bool = False) -> sqlite3.Connection:
    """A connection to ``path`` (its folder created) in WAL mode with ``schema`` applied.

    Autocommit (``isolation_level=None``): transactions are explicit, see ``immediate``.
    ``synchronous``: NORMAL survives a crash of the process, FULL also a power loss. ``threads``:
    the connection may be used from several threads (the caller serialises them with a lock).
    """
    if synchronous.upper() not in SYNCHRONOUS:
        raise ValueError(f"synchronous must be {', '.join(SYNCHRONOUS[:-1])} or {SYNCHRONOUS[-1]}, "
                         f"got {synchronous!r}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, timeout=timeout_s, isolation_level=None, check_same_thread=not threads)
    try:
        con.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
        con.execute("PRAGMA journal_mode = WAL")
        con.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        con.executescript(schema)
    except BaseException:
        con.close()
        raise
    return con


@contextmanager
def immediate(con: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``: all or nothing; ``ROLLBACK`` when the block or the commit
    raises (unless SQLite already rolled back, as some errors do)."""
    con.execute("BEGIN IMMEDIATE")
    try:
        yield con
        con.execute("COMMIT")
    except BaseException:
        if con.in_transaction:
            con.execute("ROLLBACK")
        raise
