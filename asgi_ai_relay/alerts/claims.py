"""Who raises an alert: the first process to claim its key, in the store every worker shares.

- the budget store, when it has ``claim`` (Redis: ``SET key NX PX ttl``);
- else the ledger's database: a table ``relay_alerts`` in its SQLite file, or
  ``<table>_alerts`` in its PostgreSQL database (``INSERT ... ON CONFLICT DO NOTHING``; expired
  claims are deleted by the next claim);
- else (a memory ledger) this process's memory: once per process.

The SQLite and PostgreSQL claims connect for each claim: a claim is made once per process per
caller, period and threshold, so a pooled connection would sit idle.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..relay import Relay

__all__ = ["Claims", "MemoryClaims", "PostgresClaims", "SQLiteClaims", "claims_for"]


class Claims(Protocol):
    async def claim(self, key: str, ttl: float) -> bool:
        """``True`` for the first claim of ``key`` within ``ttl`` seconds, ``False`` after.

        :raises Exception: when the store cannot be reached (the alert is sent anyway).
        """


class MemoryClaims:
    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    async def claim(self, key: str, ttl: float) -> bool:
        now = time.time()
        if self._until.get(key, 0.0) > now:
            return False
        self._until[key] = now + ttl
        return True


class SQLiteClaims:
    """Claims in the ledger's SQLite file (a table of their own; each claim one transaction)."""

    def __init__(self, path: str, table: str = "relay_alerts") -> None:
        self.path, self.table = path, table

    def _claim(self, key: str, ttl: float) -> bool:
        now = time.time()
        conn = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        try:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {self.table} (key TEXT PRIMARY KEY, expires REAL NOT NULL)")
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(f"DELETE FROM {self.table} WHERE expires <= ?", (now,))
            taken = conn.execute(f"INSERT OR IGNORE INTO {self.table} (key, expires) VALUES (?, ?)", (key, now + ttl)).rowcount
            conn.execute("COMMIT")
            return bool(taken)
        finally:
            conn.close()

    async def claim(self, key: str, ttl: float) -> bool:
        return await asyncio.to_thread(self._claim, key, ttl)


class PostgresClaims:
    """Claims in the ledger's PostgreSQL database, table ``<ledger table>_alerts``."""

    def __init__(self, dsn: str, table: str) -> None:
        self.dsn, self.table = dsn, table

    def _claim(self, key: str, ttl: float) -> bool:
        import psycopg

        now = time.time()
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {self.table} (key TEXT PRIMARY KEY, expires DOUBLE PRECISION NOT NULL)")
            conn.execute(f"DELETE FROM {self.table} WHERE expires <= %s", (now,))
            cursor = conn.execute(f"INSERT INTO {self.table} (key, expires) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING",
                                  (key, now + ttl))
            return bool(cursor.rowcount)

    async def claim(self, key: str, ttl: float) -> bool:
        return await asyncio.to_thread(self._claim, key, ttl)


def claims_for(relay: Relay, memory: MemoryClaims) -> Claims:
    """The claim store of ``relay``: its budget store's, else its ledger's, else ``memory``."""
    store: Any = relay.spend.bind(relay) if relay.spend is not None else None
    if store is not None and hasattr(store, "claim"):
        return store  # type: ignore[no-any-return]
    ledger: Any = relay.ledger
    path, dsn = getattr(ledger, "path", None), getattr(ledger, "dsn", None)
    if isinstance(path, str) and path != ":memory:":
        return SQLiteClaims(path)
    if isinstance(dsn, str):
        return PostgresClaims(dsn, f"{getattr(ledger, 'table', 'relay_usage')}_alerts")
    return memory
