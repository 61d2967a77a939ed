"""Rows waiting for a ledger database that cannot be reached: a local SQLite file, oldest first.

Written and read by the ledger's writer thread only (several processes may share one file: WAL
and a busy timeout; two replaying the same rows is harmless, the database ignores a row id it
already holds). Bounded by ``max_rows``: past it, new rows are dropped and counted.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

__all__ = ["Spool"]

logger = logging.getLogger("asgi_ai_relay")

_SCHEMA = "CREATE TABLE IF NOT EXISTS spool (seq INTEGER PRIMARY KEY AUTOINCREMENT, row BLOB NOT NULL)"


def _default(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot spool a {type(value).__name__}")


class Spool:
    """:param money: positions in a row that hold :class:`~decimal.Decimal` (stored as text).
    :param defaults: a whole row of default values: a row spooled by an older version, with
        fewer columns, is completed from it (newer columns come last)."""

    def __init__(self, path: str, *, max_rows: int = 1_000_000, money: tuple[int, ...] = (),
                 defaults: tuple[Any, ...] = ()) -> None:
        self.path = path
        self.max_rows = max_rows
        self.money = money
        self.defaults = defaults
        #: Rows refused because the spool was full or could not be written.
        self.dropped = 0
        self._count = 0
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._full = False
        self._failing = False

    def _open(self) -> sqlite3.Connection:
        if self._conn is None:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=5.0, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(_SCHEMA)
            self._conn = conn
            self._count = conn.execute("SELECT COUNT(*) FROM spool").fetchone()[0]
        return self._conn

    def __len__(self) -> int:
        """Rows spooled (as this process last counted them)."""
        return self._count

    def count(self) -> int:
        """Rows in the file now, every process's."""
        with self._lock:
            if self._conn is None and not Path(self.path).exists():
                return 0  # nothing ever spooled: no file to make
            try:
                self._count = self._open().execute("SELECT COUNT(*) FROM spool").fetchone()[0]
            except sqlite3.Error:
                pass
            return self._count

    def add(self, rows: list[tuple[Any, ...]]) -> None:
        """Append ``rows``; those past ``max_rows``, or all when the file cannot be written, are
        dropped (one log line each time the spool fills)."""
        with self._lock:
            try:
                conn = self._open()
                room = max(0, self.max_rows - self._count)
                keep = rows[:room]
                with conn:
                    conn.execute("BEGIN IMMEDIATE")
                    conn.executemany("INSERT INTO spool (row) VALUES (?)",
                                     [(orjson.dumps(row, default=_default),) for row in keep])
                self._count += len(keep)
            except (sqlite3.Error, OSError, TypeError) as exc:
                self.dropped += len(rows)
                if not self._failing:  # one line until the spool works again, not one per batch
                    logger.error("ledger: cannot spool rows to %s (dropping them until it can): %s", self.path, exc)
                self._failing = True
                return
            self._failing = False
            lost = len(rows) - len(keep)
            if lost:
                self.dropped += lost
                if not self._full:
                    logger.error("ledger: spool %s is full (%d rows); dropping new rows", self.path, self.max_rows)
            self._full = bool(lost)

    def oldest(self, limit: int) -> list[tuple[int, tuple[Any, ...]]]:
        """Up to ``limit`` spooled rows, oldest first, with their sequence numbers."""
        with self._lock:
            found = self._open().execute("SELECT seq, row FROM spool ORDER BY seq LIMIT ?", (limit,)).fetchall()
        out = []
        for seq, blob in found:
            values = orjson.loads(blob)
            if len(values) < len(self.defaults):
                values.extend(self.defaults[len(values):])
            for i in self.money:
                values[i] = Decimal(values[i]) if values[i] is not None else None
            out.append((seq, tuple(values)))
        return out

    def remove(self, seqs: list[int]) -> None:
        """Forget rows the database now holds (the oldest, as :meth:`oldest` gave them)."""
        if not seqs:
            return
        with self._lock:
            conn = self._open()
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("DELETE FROM spool WHERE seq <= ?", (max(seqs),))  # the oldest, read in order
            self._count = max(0, self._count - len(seqs))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
