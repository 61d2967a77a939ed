"""Concurrency slots shared by every worker: ``storage.slots = "redis://..."``.

The per-process :class:`~asgi_ai_relay.scheduler.Gate` always applies; with shared slots an
attempt also takes a Redis lease (:class:`~asgi_ai_relay.storage.redis_leases.RedisLeases`)
for the global cap (``queue.max_in_flight``) and its provider's (``queue.per_provider``), so
the caps hold across processes and hosts. A full cap is polled (with backoff, up to the
attempt's deadline, leaving at once if the client goes); there is no cross-process fair queue.
Leases last ``timeouts.total`` (plus a margin), so a worker that dies gives its slots back
then. When Redis cannot be reached, ``queue.fail_mode`` decides: ``open`` falls back to the
per-process gate alone, ``closed`` answers 503.

Leases given back go to Redis in the background (a release runs from the synchronous end of
a request); :meth:`SharedSlots.aclose` waits for them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import secrets
from typing import TYPE_CHECKING

from .errors import ServiceUnavailable, StorageError

if TYPE_CHECKING:
    from .config import RelayConfig
    from .storage.redis_leases import RedisLeases

__all__ = ["FIRST_POLL", "MAX_POLL", "SharedSlots", "shared_slots"]

logger = logging.getLogger("asgi_ai_relay")

_HOLDER = itertools.count(1)
#: The first and the longest pause between two tries of a full cap (seconds).
FIRST_POLL = 0.01
MAX_POLL = 0.25


class SharedSlots:
    def __init__(self, leases: RedisLeases, config: RelayConfig) -> None:
        self.leases = leases
        self.queue = config.queue
        self.ttl = config.timeouts.total + 30.0
        self.ttl_ms = max(1, math.ceil(self.ttl * 1000))
        self._holder_prefix = secrets.token_hex(6)
        self._pending: set[asyncio.Task[None]] = set()

    def caps(self, provider: str) -> list[tuple[str, int]]:
        caps = []
        if self.queue.max_in_flight:
            caps.append(("all", self.queue.max_in_flight))
        if self.queue.per_provider:
            caps.append((f"provider:{provider}", self.queue.per_provider))
        return caps

    def holder(self) -> str:
        """A new holder id: one per attempt, unique across processes."""
        return f"{self._holder_prefix}:{next(_HOLDER)}"

    async def take(self, provider: str, held: list[tuple[str, str]]) -> None:
        """Take every shared cap ``provider`` needs, polling while one is full; each lease taken
        goes into ``held`` at once, so whoever gives ``held`` back gives back all of them.
        Cancel it to give up (the caller bounds the wait and watches the client).

        :raises ServiceUnavailable: when Redis is down and ``fail_mode`` is closed.
        """
        holder = self.holder()
        try:
            for name, limit in self.caps(provider):
                poll = FIRST_POLL
                # In ``held`` before the call: cancelled while Redis grants it, it is still
                # given back (a release of a lease not held changes nothing).
                held.append((name, holder))
                while not await self.leases.acquire(name, limit, holder, self.ttl):
                    await asyncio.sleep(poll)
                    poll = min(poll * 2, MAX_POLL)
        except StorageError as exc:
            self.give_back(held)
            if self.queue.fail_mode == "closed":
                raise ServiceUnavailable("Shared concurrency slots cannot be checked right now.",
                                         retry_after=1.0) from exc
            logger.debug("shared slots skipped (fail open): %s", exc)

    def give_back(self, held: list[tuple[str, str]]) -> None:
        """Release the leases in ``held`` (in the background; each also runs out on its own)."""
        if not held:
            return
        task = asyncio.get_running_loop().create_task(self._release(list(held)))
        held.clear()
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _release(self, held: list[tuple[str, str]]) -> None:
        for name, holder in held:
            try:
                await self.leases.release(name, holder)
            except StorageError as exc:
                logger.debug("shared slot not released (it expires): %s", exc)

    async def aclose(self) -> None:
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
        await self.leases.aclose()


def shared_slots(config: RelayConfig) -> SharedSlots | None:
    """The shared slots ``storage.slots`` names, or ``None`` for the per-process gate alone.

    :raises ConfigurationError: for a scheme no backend serves.
    """
    uri = config.storage.slots
    if uri.startswith("memory:"):
        return None
    from .storage import pick_backend
    from .storage.redis_leases import RedisLeases

    def make(uri: str) -> SharedSlots:
        return SharedSlots(RedisLeases(uri), config)

    schemes = ("redis", "rediss", "redis+cluster", "rediss+cluster")  # one key per lease script
    return pick_backend("storage.slots", dict.fromkeys(schemes, make), uri)
