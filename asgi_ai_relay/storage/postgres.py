"""The multi-host ledger: PostgreSQL through psycopg 3, written in batches off the request path.

    storage.ledger = "postgresql://user@db.internal:5432/relay?table=relay_usage"

``table`` (default ``relay_usage``) is the only query parameter the relay reads; every other one
goes to libpq. Costs are ``NUMERIC``, so sums stay exact.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import ConfigurationError, StorageError
from .base import LEDGER_COLUMNS, LedgerQuery, LedgerRow
from .batch import BatchWriter
from .sqlite import row_from_values, where_clause

__all__ = ["PostgresLedger", "split_table"]

logger = logging.getLogger("asgi_ai_relay")

_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_TYPES = {
    "ts": "DOUBLE PRECISION NOT NULL", "stream": "BOOLEAN", "status": "INTEGER", "prompt_tokens": "BIGINT",
    "completion_tokens": "BIGINT", "cached_tokens": "BIGINT", "cost_usd": "NUMERIC", "cache_hit": "BOOLEAN",
    "latency_ms": "DOUBLE PRECISION", "ttfb_ms": "DOUBLE PRECISION", "upstream_ms": "DOUBLE PRECISION",
    "attempts": "INTEGER", "estimated": "BOOLEAN", "cache_saved_usd": "NUMERIC NOT NULL DEFAULT 0",
}


def split_table(uri: str) -> tuple[str, str]:
    """The libpq URI without ``table=``, and the table name.

    :raises ConfigurationError: for a table name that is not a plain SQL identifier.
    """
    parts = urlsplit(uri)
    params = parse_qsl(parts.query, keep_blank_values=True)
    table = next((v for k, v in params if k == "table"), "relay_usage")
    if not _TABLE.fullmatch(table):
        raise ConfigurationError(f"storage.ledger: table must be a plain identifier, got {table!r}")
    rest = urlencode([(k, v) for k, v in params if k != "table"])
    return urlunsplit(parts._replace(query=rest)), table


class PostgresLedger:
    def __init__(self, uri: str, *, batch: int = 500, linger: float = 0.05) -> None:
        import psycopg  # the postgres extra; imported only when this backend is named

        self._psycopg = psycopg
        self.dsn, self.table = split_table(uri)
        self._lock = threading.Lock()
        self._conn = self._connect()
        self._insert = (
            f"INSERT INTO {self.table} ({', '.join(LEDGER_COLUMNS)}) "
            f"VALUES ({', '.join('%s' for _ in LEDGER_COLUMNS)})"
        )
        self._writer: BatchWriter[tuple[Any, ...]] = BatchWriter(
            self._write, name="asgi-ai-relay-ledger-pg", batch=batch, linger=linger
        )

    def _connect(self) -> Any:
        columns = ", ".join(f"{name} {_TYPES.get(name, 'TEXT')}" for name in LEDGER_COLUMNS)
        try:
            conn = self._psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
            conn.execute(f"CREATE TABLE IF NOT EXISTS {self.table} (id BIGSERIAL PRIMARY KEY, {columns})")
            for name in LEDGER_COLUMNS:
                conn.execute(f"ALTER TABLE {self.table} ADD COLUMN IF NOT EXISTS {name} {_TYPES.get(name, 'TEXT')}")
            conn.execute(f"CREATE INDEX IF NOT EXISTS {self.table}_ts ON {self.table} (ts)")
        except self._psycopg.Error as exc:
            raise StorageError(f"cannot open the PostgreSQL ledger table {self.table}: {exc}") from exc
        return conn

    def record(self, row: LedgerRow) -> None:
        # A tuple of plain values, as the SQLite ledger queues (untracked by the collector).
        self._writer.put(tuple(getattr(row, c) for c in LEDGER_COLUMNS))

    def _write(self, values: list[tuple[Any, ...]]) -> None:
        for attempt in (1, 2):
            try:
                with self._lock, self._conn.transaction(), self._conn.cursor() as cursor:
                    cursor.executemany(self._insert, values)
                return
            except self._psycopg.OperationalError:
                if attempt == 2:
                    break
                logger.warning("ledger: PostgreSQL connection lost, reconnecting")
                self._reconnect()
            except self._psycopg.Error:
                break
        logger.exception("ledger: could not write %d rows to PostgreSQL table %s", len(values), self.table)

    def _reconnect(self) -> None:
        try:
            with self._lock:
                self._conn.close()
                self._conn = self._connect()
        except StorageError:
            logger.exception("ledger: PostgreSQL reconnect failed")

    def flush(self) -> None:
        self._writer.flush()

    def query(self, query: LedgerQuery) -> list[LedgerRow]:
        self.flush()
        where, params = where_clause(query, "%s")
        sql = f"SELECT {', '.join(LEDGER_COLUMNS)} FROM {self.table}{where} ORDER BY id"
        with self._lock:
            fetched = self._conn.execute(sql, params).fetchall()
        return [row_from_values(tuple(values)) for values in fetched]

    def rows(self) -> list[LedgerRow]:
        return self.query(LedgerQuery())

    def close(self) -> None:
        if self._writer.closed:
            return
        self._writer.close()
        with self._lock:
            self._conn.close()


