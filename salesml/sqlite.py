"""The project's SQLite stores (the live-event store, the prediction log, the warnings store) open and
write the same way: WAL mode, explicit ``BEGIN IMMEDIATE`` transactions, a busy timeout.

WAL lets readers go on while one writer writes; ``BEGIN IMMEDIATE`` takes the write lock up front,
so a second writer (another thread or process) waits up to the busy timeout instead of failing
when it upgrades a read lock. Base layer: ``features`` and ``serving`` both keep such stores.

A store is created readable by its owner only (mode 0600, whatever the umask): it holds scores,
account ids, who intervened and the access log. SQLite gives the ``-wal`` and ``-shm`` files the
database file's mode. A store that already exists keeps the mode it has (an operator may have
opened it to a group on purpose).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
MODE = 0o600  # a new store's file mode


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
    create(path)
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


def create(path: Path | str) -> None:
    """Create ``path`` empty with mode ``MODE`` unless it exists (SQLite then writes its header into it)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, MODE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, MODE)  # the umask may have taken bits away, never added: this is exact
    finally:
        os.close(fd)


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
