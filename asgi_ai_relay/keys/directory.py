"""Key lookups as a relay does them: by digest, cached for ``keys.cache_ttl`` seconds.

A presented key is hashed (:class:`~.record.Hasher`) and looked up once per TTL per worker,
with the limits of its owner and its team; a miss is cached the same way, so guessing keys
costs the store nothing. A change made through this relay (its admin API) drops the entry at
once here; other workers see it within the TTL, or at once when the store pushes changes
(Redis pub/sub: :meth:`KeyDirectory.invalidate` runs on every message). When the store cannot
be reached, the last entry read is used, however old; with none, the request gets 503.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..errors import AuthenticationError, ServiceUnavailable, StorageError
from ..policy import CallerLimits, Quota, Subject, limits_of
from ..types import Caller
from .record import KEY_PREFIX, Hasher, KeyRecord, SubjectLimits
from .store import KeyStore, Watching

__all__ = ["KeyDirectory", "key_caller"]

logger = logging.getLogger("asgi_ai_relay")

#: Cached lookups kept at most (hits and misses); the cache starts over past it.
_MAX_ENTRIES = 100_000

Entry = tuple[KeyRecord, SubjectLimits | None, SubjectLimits | None]


def key_caller(record: KeyRecord, owner: SubjectLimits | None = None, team: SubjectLimits | None = None,
               **extra: Any) -> Caller:
    """The caller a key stands for: its owner (so the owner's limits, budget and ledger rows
    are shared with the owner's other keys and sessions), with the key's, the owner's and the
    team's limits attached (:class:`~asgi_ai_relay.policy.CallerLimits`)."""
    subjects = [Subject("key", f"key:{record.id}", record.quota),
                Subject("owner", record.owner, owner.quota if owner is not None else Quota())]
    if record.team:
        subjects.append(Subject("team", f"team:{record.team}", team.quota if team is not None else Quota()))
    limits = CallerLimits(tuple(subjects), (record.models,) if record.models else (), record.id)
    return Caller(id=record.owner, extra={**extra, "limits": limits, "key_id": record.id, "team": record.team})


def refuse(record: KeyRecord, now: float | None = None) -> None:
    """:raises AuthenticationError: for a revoked or expired key."""
    state = record.state(now)
    if state != "active":
        raise AuthenticationError(f"The API key {record.prefix}... is {state}.", code=f"key_{state}")


class KeyDirectory:
    """:param clock: monotonic seconds (a test may drive it)."""

    def __init__(self, store: KeyStore, hasher: Hasher, ttl: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.hasher = hasher
        self.ttl = ttl
        self.clock = clock
        self._entries: dict[str, tuple[float, Entry | None]] = {}
        self._owners: dict[str, tuple[float, SubjectLimits | None]] = {}
        self._watcher: asyncio.Task[None] | None = None
        #: Set once the store's change feed is subscribed (stores that push changes).
        self.listening = asyncio.Event()
        #: Changes pushed by the store so far.
        self.pushed = 0

    async def caller(self, key: str) -> Caller | None:
        """The caller ``key`` stands for, ``None`` when the store has no such key.

        :raises AuthenticationError: the key is revoked or expired.
        :raises ServiceUnavailable: the store cannot be reached and nothing is cached.
        """
        if not key.startswith(KEY_PREFIX):  # a host's own token: not the store's to know
            return None
        entry = await self.entry(self.hasher.digest(key))
        if entry is None:
            return None
        record, owner, team = entry
        refuse(record)
        return key_caller(record, owner, team)

    async def entry(self, digest: str) -> Entry | None:
        self._watch()
        now = self.clock()
        cached = self._entries.get(digest)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        try:
            entry = await self._read(digest)
        except StorageError as exc:
            if cached is not None:
                logger.warning("key store unreachable (%s); using the lookup cached %.0fs ago", exc, now - cached[0])
                return cached[1]
            raise ServiceUnavailable("API keys cannot be checked right now.", retry_after=1.0) from exc
        if len(self._entries) >= _MAX_ENTRIES:
            self._entries.clear()
        self._entries[digest] = (now, entry)
        return entry

    async def _read(self, digest: str) -> Entry | None:
        record = await self.store.by_digest(digest)
        if record is None:
            return None
        owner = await self.store.limits(f"owner:{record.owner}")
        team = await self.store.limits(f"team:{record.team}") if record.team else None
        return record, owner, team

    async def with_owner_limits(self, caller: Caller) -> Caller:
        """``caller`` (from the host's own auth) with the store's limits for ``owner:<its id>``,
        so its session and its keys answer to the same owner limits and budget.

        :raises ServiceUnavailable: the store cannot be reached and nothing is cached.
        """
        now = self.clock()
        cached = self._owners.get(caller.id)
        if cached is not None and now - cached[0] < self.ttl:
            found = cached[1]
        else:
            try:
                found = await self.store.limits(f"owner:{caller.id}")
            except StorageError as exc:
                if cached is None:
                    raise ServiceUnavailable("API key limits cannot be checked right now.", retry_after=1.0) from exc
                found = cached[1]
            else:
                if len(self._owners) >= _MAX_ENTRIES:
                    self._owners.clear()
                self._owners[caller.id] = (now, found)
        if found is None or not found.quota:
            return caller
        own = limits_of(caller) or CallerLimits()
        limits = replace(own, subjects=(*own.subjects, Subject("owner", caller.id, found.quota)))
        return replace(caller, extra={**caller.extra, "limits": limits})

    def invalidate(self, digest: str = "*") -> None:
        """Forget the cached lookup of ``digest`` (``"*"``: all of them, and every owner's limits)."""
        if digest == "*":
            self._entries.clear()
            self._owners.clear()
        else:
            self._entries.pop(digest, None)

    def _pushed(self, digest: str) -> None:
        self.pushed += 1
        self.invalidate(digest)

    def _watch(self) -> None:
        if self._watcher is None and isinstance(self.store, Watching):
            self._watcher = asyncio.get_running_loop().create_task(self.store.watch(self._pushed, self.listening.set))

    async def start(self) -> None:
        """Subscribe to the store's changes now (a store that pushes them), rather than on the
        first lookup."""
        self._watch()
        if self._watcher is not None:
            listening = asyncio.ensure_future(self.listening.wait())
            await asyncio.wait({listening, self._watcher}, return_when=asyncio.FIRST_COMPLETED, timeout=5.0)
            listening.cancel()

    async def aclose(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        self.listening = asyncio.Event()
        await self.store.aclose()
