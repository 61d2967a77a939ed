"""Where managed keys live, chosen by ``storage.keys``:

    storage.keys = "memory://"                      this process only (tests, a single worker)
    storage.keys = "sqlite:///relay-keys.db"        a file every worker of the host shares
    storage.keys = "postgresql://user@db/relay"     every host (psycopg 3, the postgres extra)
    storage.keys = "redis://127.0.0.1:6379/0?prefix=relay"   every host, changes pushed at once

Every store has the same small async surface (:class:`KeyStore`). A store that can tell the
relays of a change (Redis, through pub/sub) also has ``watch(on_change)``; the others are read
again when a cached lookup's TTL runs out (:mod:`.directory`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from ..storage import pick_backend
from .record import KeyRecord, SubjectLimits

__all__ = ["KEY_SCHEMES", "KeyStore", "MemoryKeys", "Watching", "keys_from_uri"]


class KeyStore(Protocol):
    async def by_digest(self, digest: str) -> KeyRecord | None: ...

    async def get(self, key_id: str) -> KeyRecord | None: ...

    async def put(self, record: KeyRecord) -> None:
        """Insert ``record`` or replace the one with its id."""

    async def records(self, owner: str | None = None, team: str | None = None) -> list[KeyRecord]: ...

    async def limits(self, subject: str) -> SubjectLimits | None: ...

    async def put_limits(self, limits: SubjectLimits) -> None: ...

    async def all_limits(self) -> list[SubjectLimits]: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Watching(Protocol):
    """A store that pushes changes: ``watch`` runs until cancelled, calling ``on_change`` with
    the digest that changed (``"*"``: anything may have)."""

    async def watch(self, on_change: Callable[[str], None], ready: Callable[[], None]) -> None: ...

    async def notify(self, digest: str) -> None: ...


class MemoryKeys:
    """Keys of this process only."""

    def __init__(self) -> None:
        self._records: dict[str, KeyRecord] = {}
        self._limits: dict[str, SubjectLimits] = {}

    async def by_digest(self, digest: str) -> KeyRecord | None:
        return next((r for r in self._records.values() if r.digest == digest), None)

    async def get(self, key_id: str) -> KeyRecord | None:
        return self._records.get(key_id)

    async def put(self, record: KeyRecord) -> None:
        self._records[record.id] = record

    async def records(self, owner: str | None = None, team: str | None = None) -> list[KeyRecord]:
        return [r for r in self._records.values() if (owner is None or r.owner == owner) and (team is None or r.team == team)]

    async def limits(self, subject: str) -> SubjectLimits | None:
        return self._limits.get(subject)

    async def put_limits(self, limits: SubjectLimits) -> None:
        self._limits[limits.subject] = limits

    async def all_limits(self) -> list[SubjectLimits]:
        return list(self._limits.values())

    async def aclose(self) -> None:
        return None


def _sqlite(uri: str) -> KeyStore:
    from .sql import SQLKeys

    return SQLKeys.sqlite(uri[len("sqlite:///"):])


def _postgres(uri: str) -> KeyStore:
    from .sql import SQLKeys

    return SQLKeys.postgres(uri)


def _redis(uri: str) -> KeyStore:
    from .redis_keys import RedisKeys

    return RedisKeys(uri)


KEY_SCHEMES: dict[str, Callable[[str], KeyStore]] = {
    "memory": lambda uri: MemoryKeys(),
    "sqlite": _sqlite,
    "postgresql": _postgres,
    "postgres": _postgres,
    "redis": _redis,
    "rediss": _redis,
}


def keys_from_uri(uri: str) -> KeyStore:
    """The key store ``uri`` names.

    :raises ConfigurationError: for a scheme no backend serves.
    """
    return pick_backend("storage.keys", KEY_SCHEMES, uri)

