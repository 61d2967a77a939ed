"""Stored Responses API responses in SQLite or PostgreSQL, shared by every worker that names
the same file or database.

    storage.responses = "sqlite:///relay-responses.db?ttl=2592000"
    storage.responses = "postgresql://user@db.internal/relay?ttl=2592000&table=relay_responses"

One table, ``relay_responses (caller, id, expires, data)`` with ``(caller, id)`` its key: a
caller reads and deletes only its own records, whoever stored one under the same id. ``expires``
is wall-clock seconds (every host reads the same clock); an expired record is never answered,
and expired rows are deleted now and then as records are written. ``ttl`` (seconds, default 30
days) and ``table`` are the relay's parameters; for PostgreSQL every other one goes to libpq.

One connection per store, used by one worker thread at a time (the calls run in
:func:`asyncio.to_thread`); a connection that fails is dropped and made again on the next call.
Database errors become :class:`StorageError`.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

from ..errors import ConfigurationError, StorageError

__all__ = ["SQLResponseStore"]

_MONTH = 30 * 24 * 3600.0
_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
#: Writes between two sweeps of expired rows.
_SWEEP_EVERY = 200


def _options(uri: str) -> tuple[str, float, str]:
    """The URI without the relay's parameters, ``ttl`` and ``table``.

    :raises ConfigurationError: for a ttl that is not a positive number, or a table name that
        is not a plain SQL identifier.
    """
    parts = urlsplit(uri)
    params = parse_qsl(parts.query, keep_blank_values=True)
    given = dict(params)
    try:
        ttl = float(given.get("ttl", _MONTH))
    except ValueError:
        ttl = 0.0
    if not ttl > 0 or ttl == float("inf"):
        raise ConfigurationError(f"storage.responses: 'ttl' must be a number of seconds > 0, not {given.get('ttl')!r}")
    table = given.get("table", "relay_responses")
    if not _TABLE.fullmatch(table):
        raise ConfigurationError(f"storage.responses: table must be a plain identifier, got {table!r}")
    rest = urlencode([(k, v) for k, v in params if k not in ("ttl", "table")])
    return urlunsplit(parts._replace(query=rest)), ttl, table


class SQLResponseStore:
    """:param connect: opens one connection (DB-API; ``?`` or ``%s`` parameters per ``mark``)."""

    def __init__(self, connect: Callable[[], Any], mark: str, errors: tuple[type[BaseException], ...],
                 table: str, ttl: float) -> None:
        self._connect = connect
        self._errors = errors
        self.table = table
        self.ttl = ttl
        self._lock = threading.Lock()
        self._db: Any = None
        self._writes = 0
        m = mark
        self._create = (f"CREATE TABLE IF NOT EXISTS {table} (caller TEXT NOT NULL, id TEXT NOT NULL, "
                        "expires DOUBLE PRECISION NOT NULL, data TEXT NOT NULL, PRIMARY KEY (caller, id))")
        self._get = f"SELECT data FROM {table} WHERE caller = {m} AND id = {m} AND expires > {m}"
        self._put = (f"INSERT INTO {table} (caller, id, expires, data) VALUES ({m}, {m}, {m}, {m}) "
                     "ON CONFLICT (caller, id) DO UPDATE SET expires = excluded.expires, data = excluded.data")
        self._delete = f"DELETE FROM {table} WHERE caller = {m} AND id = {m} AND expires > {m}"
        self._sweep = f"DELETE FROM {table} WHERE expires <= {m}"

    @classmethod
    def sqlite(cls, uri: str) -> SQLResponseStore:
        """``sqlite:///relative.db`` or ``sqlite:////absolute/path.db``."""
        _, ttl, table = _options(uri)
        path = uri.partition("?")[0][len("sqlite:///"):]

        def connect() -> sqlite3.Connection:
            connection = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            return connection

        return cls(connect, "?", (sqlite3.Error,), table, ttl)

    @classmethod
    def postgres(cls, uri: str) -> SQLResponseStore:
        """:raises ConfigurationError: when psycopg (the ``postgres`` extra) is missing."""
        try:
            import psycopg  # the postgres extra; imported only when this backend is named
        except ImportError as exc:
            raise ConfigurationError("storage.responses: PostgreSQL needs the 'postgres' extra (psycopg)") from exc
        dsn, ttl, table = _options(uri)
        return cls(lambda: psycopg.connect(dsn, autocommit=True, connect_timeout=5), "%s", (psycopg.Error,), table, ttl)

    def _run(self, statement: str, args: tuple[Any, ...], *, fetch: bool = False) -> Any:
        with self._lock:
            try:
                if self._db is None:
                    db = self._connect()
                    try:
                        db.execute(self._create)
                    except BaseException:
                        db.close()
                        raise
                    self._db = db
                cursor = self._db.execute(statement, args)
                return cursor.fetchone() if fetch else cursor.rowcount
            except self._errors as exc:
                self._drop()
                raise StorageError(f"storage.responses: {type(exc).__name__}: {str(exc).strip()[:200]}") from exc

    def _drop(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            try:
                db.close()
            except Exception:
                pass

    async def get(self, caller: str, response_id: str) -> dict[str, Any] | None:
        row = await asyncio.to_thread(self._run, self._get, (caller, response_id, time.time()), fetch=True)
        if row is None:
            return None
        record: dict[str, Any] = orjson.loads(row[0])
        return record

    async def put(self, caller: str, response_id: str, record: dict[str, Any]) -> None:
        now = time.time()
        data = orjson.dumps(record).decode()
        await asyncio.to_thread(self._run, self._put, (caller, response_id, now + self.ttl, data))
        self._writes += 1
        if self._writes % _SWEEP_EVERY == 1:
            await asyncio.to_thread(self._run, self._sweep, (now,))

    async def delete(self, caller: str, response_id: str) -> bool:
        count = await asyncio.to_thread(self._run, self._delete, (caller, response_id, time.time()))
        return bool(count)

    def _close(self) -> None:
        with self._lock:
            self._drop()

    async def aclose(self) -> None:
        await asyncio.to_thread(self._close)
