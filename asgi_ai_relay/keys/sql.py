"""Managed keys in SQLite or PostgreSQL: two tables, each row's fields as one JSON text.

``relay_keys (id, digest UNIQUE, owner, team, data)`` and ``relay_key_limits (subject, data)``.
Each call opens its own short connection in a worker thread: lookups are rare (a relay caches
them, :mod:`.directory`) and management is rarer, so nothing is pooled and nothing is shared
between threads.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson

from ..errors import StorageError
from .record import KeyRecord, SubjectLimits

__all__ = ["SQLKeys"]

_TABLES = (
    "CREATE TABLE IF NOT EXISTS relay_keys (id TEXT PRIMARY KEY, digest TEXT NOT NULL UNIQUE, "
    "owner TEXT NOT NULL, team TEXT, data TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS relay_key_limits (subject TEXT PRIMARY KEY, data TEXT NOT NULL)",
)
_PUT = ("INSERT INTO relay_keys (id, digest, owner, team, data) VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE "
        "SET digest = excluded.digest, owner = excluded.owner, team = excluded.team, data = excluded.data")
_PUT_LIMITS = ("INSERT INTO relay_key_limits (subject, data) VALUES (?, ?) "
               "ON CONFLICT (subject) DO UPDATE SET data = excluded.data")


class SQLKeys:
    """:param connect: opens one connection (DB-API, ``?`` or ``%s`` parameters per ``mark``)."""

    def __init__(self, connect: Callable[[], Any], mark: str, errors: tuple[type[BaseException], ...]) -> None:
        self._connect = connect
        self._mark = mark
        self._errors = errors
        self._ready = False

    @classmethod
    def sqlite(cls, path: str) -> SQLKeys:
        return cls(lambda: sqlite3.connect(path, timeout=5.0), "?", (sqlite3.Error,))

    @classmethod
    def postgres(cls, uri: str) -> SQLKeys:
        import psycopg  # the postgres extra; imported only when this backend is named

        return cls(lambda: psycopg.connect(uri, connect_timeout=5), "%s", (psycopg.Error,))

    @contextmanager
    def _db(self) -> Iterator[Any]:
        try:
            connection = self._connect()
            try:
                if not self._ready:
                    for statement in _TABLES:
                        connection.execute(statement)
                    self._ready = True
                yield connection
                connection.commit()
            finally:
                connection.close()
        except self._errors as exc:
            raise StorageError(f"storage.keys: {type(exc).__name__}: {exc}") from exc

    def _sql(self, statement: str) -> str:
        return statement.replace("?", self._mark)

    def _rows(self, statement: str, *args: Any) -> list[Any]:
        with self._db() as db:
            return list(db.execute(self._sql(statement), args).fetchall())

    def _write(self, statement: str, *args: Any) -> None:
        with self._db() as db:
            db.execute(self._sql(statement), args)

    async def _records(self, where: str = "", *args: Any) -> list[KeyRecord]:
        rows = await asyncio.to_thread(self._rows, "SELECT data FROM relay_keys" + where + " ORDER BY id", *args)
        return [KeyRecord.from_dict(orjson.loads(data)) for (data,) in rows]

    async def by_digest(self, digest: str) -> KeyRecord | None:
        found = await self._records(" WHERE digest = ?", digest)
        return found[0] if found else None

    async def get(self, key_id: str) -> KeyRecord | None:
        found = await self._records(" WHERE id = ?", key_id)
        return found[0] if found else None

    async def put(self, record: KeyRecord) -> None:
        data = orjson.dumps(record.as_dict()).decode()
        await asyncio.to_thread(self._write, _PUT, record.id, record.digest, record.owner, record.team, data)

    async def records(self, owner: str | None = None, team: str | None = None) -> list[KeyRecord]:
        clauses = [(f"{name} = ?", value) for name, value in (("owner", owner), ("team", team)) if value is not None]
        where = " WHERE " + " AND ".join(c for c, _ in clauses) if clauses else ""
        return await self._records(where, *(v for _, v in clauses))

    async def limits(self, subject: str) -> SubjectLimits | None:
        rows = await asyncio.to_thread(self._rows, "SELECT data FROM relay_key_limits WHERE subject = ?", subject)
        return SubjectLimits.from_dict(orjson.loads(rows[0][0])) if rows else None

    async def put_limits(self, limits: SubjectLimits) -> None:
        await asyncio.to_thread(self._write, _PUT_LIMITS, limits.subject, orjson.dumps(limits.as_dict()).decode())

    async def all_limits(self) -> list[SubjectLimits]:
        rows = await asyncio.to_thread(self._rows, "SELECT data FROM relay_key_limits ORDER BY subject")
        return [SubjectLimits.from_dict(orjson.loads(data)) for (data,) in rows]

    async def aclose(self) -> None:
        return None
