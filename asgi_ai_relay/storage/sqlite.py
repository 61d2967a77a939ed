"""The embedded ledger: a SQLite file, written in batches by one thread off the request path.

``record`` only appends to a list, so a request never waits on disk nor makes a system call:
the first row of a batch arms a timer on the event loop (``linger`` seconds), and when it fires
the whole batch goes to the writer thread, which commits it in one transaction. Waking a thread
per row cost more than the rest of the ledger together. ``flush`` and ``close`` hand over what
is pending and wait until it is on disk, so a graceful stop loses nothing; a crash loses at most
the last ``linger`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from decimal import Decimal
from pathlib import Path

from ..errors import ConfigurationError, StorageError
from .base import LEDGER_COLUMNS, LedgerRow

__all__ = ["SQLiteLedger"]

logger = logging.getLogger("asgi_ai_relay")

_TYPES = {
    "ts": "REAL NOT NULL", "stream": "INTEGER", "status": "INTEGER", "prompt_tokens": "INTEGER",
    "completion_tokens": "INTEGER", "cached_tokens": "INTEGER", "cost_usd": "TEXT", "cache_hit": "INTEGER",
    "latency_ms": "REAL", "ttfb_ms": "REAL", "upstream_ms": "REAL", "attempts": "INTEGER", "estimated": "INTEGER",
}
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS relay_usage (id INTEGER PRIMARY KEY AUTOINCREMENT, "
    + ", ".join(f"{name} {_TYPES.get(name, 'TEXT')}" for name in LEDGER_COLUMNS)
    + ")"
)
_INSERT = f"INSERT INTO relay_usage ({', '.join(LEDGER_COLUMNS)}) VALUES ({', '.join('?' for _ in LEDGER_COLUMNS)})"
_SELECT = f"SELECT {', '.join(LEDGER_COLUMNS)} FROM relay_usage ORDER BY id"


def _values(row: LedgerRow) -> tuple[object, ...]:
    return tuple(str(v) if isinstance(v, Decimal) else v for v in (getattr(row, c) for c in LEDGER_COLUMNS))


class SQLiteLedger:
    def __init__(self, path: str, *, batch: int = 500, linger: float = 0.05) -> None:
        if not path:
            raise ConfigurationError("storage.ledger: sqlite:///PATH needs a path")
        self.path = path
        self.batch = batch
        self.linger = linger
        self._pending: list[LedgerRow] = []
        self._lock = threading.Lock()
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._queue: queue.SimpleQueue[list[LedgerRow] | threading.Event | None] = queue.SimpleQueue()
        self._conn = self._connect()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="asgi-ai-relay-ledger", daemon=True)
        self._thread.start()

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(_SCHEMA)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the SQLite ledger at {self.path}: {exc}") from exc
        return conn

    def record(self, row: LedgerRow) -> None:
        with self._lock:
            self._pending.append(row)
            first = len(self._pending) == 1
            full = len(self._pending) >= self.batch
        if full:
            self._hand_over()
        elif first:
            try:
                asyncio.get_running_loop().call_later(self.linger, self._hand_over)
            except RuntimeError:  # recorded outside an event loop: no timer to arm
                self._hand_over()

    def _hand_over(self) -> None:
        with self._lock:
            rows, self._pending = self._pending, []
        if rows:
            self._queue.put(rows)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, threading.Event):
                item.set()
            else:
                self._write(item)

    def _write(self, rows: list[LedgerRow]) -> None:
        if not rows:
            return
        try:
            with self._conn:
                self._conn.execute("BEGIN")
                self._conn.executemany(_INSERT, [_values(r) for r in rows])
        except sqlite3.Error:
            logger.exception("ledger: could not write %d rows to %s", len(rows), self.path)

    def flush(self) -> None:
        if self._closed:
            return
        self._hand_over()
        done = threading.Event()
        self._queue.put(done)
        done.wait(timeout=30)

    def rows(self) -> list[LedgerRow]:
        self.flush()
        cursor = sqlite3.connect(self.path) if self._closed else self._conn
        result = []
        for values in cursor.execute(_SELECT).fetchall():
            data = dict(zip(LEDGER_COLUMNS, values, strict=True))
            for flag in ("stream", "cache_hit", "estimated"):
                data[flag] = bool(data[flag])
            data["cost_usd"] = Decimal(data["cost_usd"])
            result.append(LedgerRow(**data))
        return result

    def close(self) -> None:
        if self._closed:
            return
        self._hand_over()
        self._queue.put(None)
        self._thread.join(timeout=30)
        self._closed = True
        self._conn.close()
