"""Single-flight for cache misses: identical requests in flight make one upstream call.

In one process, the first miss for a key leads: it lists a :class:`Flight` in ``relay.flights``
(:func:`lead`), and the cache's finishing step (:func:`~asgi_ai_relay.stages.cache.complete`,
which ``Relay.finish`` runs however the request leaves: answer, error, cancellation at any
await, disconnect) ends it. Identical requests that arrive meanwhile follow it, each for at most
its request's deadline (the model's ``retry.deadline``, within ``timeouts.total``), then go
upstream alone:

- the leader's answer is complete and came from the model the key names: every follower is
  answered with it (a hit), and it is stored (unless larger than ``cache.max_entry_bytes``);
- the leader fell back to another model: the followers, who asked for the same model and would
  have walked the same chain, are answered with the fallback's answer, but it is not stored;
  the next request after the flight goes to the model it asked for again;
- the leader has no answer to give (an error, a cancellation, a disconnect, an incomplete
  stream): the first follower to wake takes the lead and goes upstream, the others follow it in
  turn, so a failure that repeats is sent one request at a time, never to all at once.

Streams are not coalesced: an identical stream in flight is not waited for (its followers would
get their first byte at its last); each goes upstream at once, and a complete one is stored.

Across processes, with a cache that has :class:`~asgi_ai_relay.storage.base.FlightLocks` (Redis),
the local leader of a whole answer also takes the key's lock there, renewed while it is held. A
process that finds the lock taken polls for the entry with backoff (5 ms doubling to 100 ms, up
to the same deadline) and takes the lock when it is freed or has expired, so a crashed worker
holds its followers for at most ``lock_ttl``. The leader stores its answer and
frees its lock in one script; a leader with nothing to store frees its lock at once. Within a
process the local flight comes first: one poller per key per process.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import TYPE_CHECKING, Any, cast

from ..errors import StorageError
from ..storage.base import FlightLocks
from ..timers import within_at

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..call import Call
    from ..relay import Relay

__all__ = ["Flight", "find", "follow", "lead"]

logger = logging.getLogger("asgi_ai_relay")

_FIRST_POLL, _LAST_POLL = 0.005, 0.1


class Flight(asyncio.Future[bytes | None]):
    """A miss going upstream: resolves to its answer's stored form (or ``None``: no answer), and
    holds the cross-process lock its request took, if any. Made by :func:`lead`, without an
    ``__init__`` of its own: a lead that no one follows (most of them) costs little."""

    #: The entry's key, and how long the answer is stored.
    key = ""
    ttl = 0.0
    #: The alias of the model the key names: an answer of another (a fallback's) is not stored.
    model = ""
    #: The cross-process lock this flight holds, and its token (see :meth:`lead_across`).
    locks: FlightLocks | None = None
    token = ""
    renewal: asyncio.Task[None] | None = None

    def answer(self, relay: Relay, call: Call, raw: bytes) -> None:
        """Answered before going upstream (another process stored the entry meanwhile)."""
        call.flight = None
        self.leave(relay)
        if not self.done():
            self.set_result(raw)

    def leave(self, relay: Relay) -> None:
        """Unlist the flight and free its cross-process lock."""
        self.land(relay.flights)
        locks, self.locks = self.locks, None
        if locks is not None:
            relay.spawn(_unclaim(locks, self.key, self.token))

    def land(self, flights: dict[str, asyncio.Future[bytes | None]]) -> None:
        """Close the flight once its answer is in the cache, so no newcomer misses in between."""
        if flights.get(self.key) is self:
            del flights[self.key]

    def store_later(self, relay: Relay, raw: bytes) -> None:
        """Store the answer in a cache that awaits (and free the lock with it), then land."""
        task = asyncio.get_running_loop().create_task(_store(relay, self, raw))
        relay.background.add(task)
        task.add_done_callback(lambda t: _landed(relay, t, self))

    def stop_renewal(self) -> None:
        renewal, self.renewal = self.renewal, None
        if renewal is not None:
            renewal.cancel()

    # -- across processes ----------------------------------------------------------------

    async def lead_across(self, relay: Relay, call: Call, deadline: float) -> bytes | None:
        """Take the key's lock in the shared cache, or wait for the process that holds it.

        :returns: the entry another process stored meanwhile (the flight is then answered), or
            ``None``: go upstream (this request holds the lock, or there is no lock to take, or
            the deadline passed).
        """
        shared = relay.cache
        if not _has_locks(shared) or relay.flights.get(self.key) is not self:
            return None
        cache = cast(FlightLocks, shared)
        token = secrets.token_hex(16)
        loop, pause = self.get_loop(), _FIRST_POLL
        while True:
            try:
                won, raw = await cache.claim(self.key, token, cache.lock_ttl)
            except StorageError as error:
                logger.debug("cache lock failed, going upstream without it: %s", error.message)
                return None
            except asyncio.CancelledError:  # the lock may have been taken on the way
                relay.spawn(_unclaim(cache, self.key, token))
                raise
            if raw is not None:
                self.answer(relay, call, raw)
                return raw
            if won:
                if self.done():  # ended while the claim was on its way
                    relay.spawn(_unclaim(cache, self.key, token))
                    return None
                self.locks, self.token = cache, token
                self.renewal = loop.create_task(_renew(cache, self.key, token))
                return None
            wait = min(pause, deadline - loop.time())
            if wait <= 0:
                return None
            await asyncio.sleep(wait)
            pause = min(pause * 2, _LAST_POLL)


def lead(flights: dict[str, asyncio.Future[bytes | None]], call: Call, key: str, ttl: float) -> Flight:
    """The flight of a miss that will go upstream and be stored for ``ttl`` seconds; listed
    (identical requests follow it) when no other flight holds the key. The cache's finishing
    step ends it (:func:`~asgi_ai_relay.stages.cache.complete`)."""
    assert call.model is not None
    call.flight = flight = Flight()
    flight.key, flight.ttl, flight.model = key, ttl, call.model.alias
    flights.setdefault(key, flight)
    return flight


async def find(relay: Relay, call: Call, key: str, ttl: float) -> bytes | None:
    """The answer of an identical request (in flight, just answered, or stored), or ``None`` to
    go upstream, then holding a :class:`Flight` when the answer may be stored (``ttl > 0``).
    (:func:`~asgi_ai_relay.stages.cache.lookup` does the common case itself: an in-process cache
    without locks, see ``GET_NOW``, and nothing in flight.)"""
    flights, cache = relay.flights, relay.cache
    loop = asyncio.get_running_loop()
    started = loop.time()  # the deadline counts from here; worked out when first needed (rarely)
    deadline = -1.0
    woken = False  # a flight this request followed ended with no answer: the lead is free
    while True:
        flight = flights.get(key)
        if flight is None and not woken:
            try:
                get = getattr(cache, "get_now", None)  # an in-process cache: no coroutine each
                raw: bytes | None
                if get is not None:
                    raw = get(key)
                else:
                    raw = await cache.get(key)
                    flight = flights.get(key)  # another request may have led meanwhile
            except StorageError as error:
                logger.debug("cache lookup failed, answering without the cache: %s", error.message)
                raw = None
                flight = flights.get(key)
            if raw is not None:
                return raw
        if flight is None:
            if ttl <= 0:
                return None
            first = lead(flights, call, key, ttl)
            if call.stream or not _has_locks(cache):
                return None
            return await first.lead_across(relay, call, _deadline(relay, call, started))
        if flight.done():  # answered, its entry on the way to the cache
            raw = flight.result()
            if raw is not None:
                return raw
            break
        if call.stream:
            break
        if deadline < 0:
            deadline = _deadline(relay, call, started)
        if loop.time() >= deadline:
            break
        raw = await follow(flight, deadline)
        if raw is not None:
            return raw
        woken = True
    if ttl > 0:
        lead(flights, call, key, ttl)
    return None


def _deadline(relay: Relay, call: Call, started: float) -> float:
    assert call.model is not None
    return started + min(relay.router.policy(call.model).deadline, relay.config.timeouts.total)


async def follow(flight: asyncio.Future[bytes | None], deadline: float) -> bytes | None:
    """The answer of the identical request in flight; ``None`` if it had none to give or the
    deadline came first."""
    try:
        # a timeout scope, not wait_for: on Python 3.11 wait_for can lose a cancellation that
        # races the flight's end, and the follower would go on for a caller that has left.
        with within_at(deadline):
            return await asyncio.shield(flight)
    except TimeoutError:
        return None


async def _store(relay: Relay, flight: Flight, raw: bytes) -> None:
    locks, flight.locks = flight.locks, None
    try:
        if locks is not None:  # the entry and the lock's release in one step
            await locks.publish(flight.key, raw, flight.ttl, flight.token)
        else:
            await relay.cache.set(flight.key, raw, flight.ttl)
    except StorageError as error:  # a lock left behind expires on its own
        logger.debug("cache store failed: %s", error.message)


def _landed(relay: Relay, task: asyncio.Task[None], flight: Flight) -> None:
    relay.background.discard(task)
    flight.land(relay.flights)


async def _renew(locks: FlightLocks, key: str, token: str) -> None:
    """Keep the lock while its holder is in flight (cancelled when the holder ends)."""
    ttl = locks.lock_ttl
    while True:
        await asyncio.sleep(ttl / 3)
        try:
            if not await locks.renew(key, token, ttl):
                return
        except StorageError as error:
            logger.debug("cache lock renewal failed: %s", error.message)


async def _unclaim(locks: FlightLocks, key: str, token: str) -> None:
    try:
        await locks.unclaim(key, token)
    except StorageError as error:  # the lock expires on its own
        logger.debug("cache lock release failed: %s", error.message)


_LOCKS: dict[type, bool] = {}


def _has_locks(cache: object) -> bool:
    """Whether ``cache`` can lock a key across processes, decided once per cache type (an
    ``isinstance`` check against a runtime protocol costs microseconds on every request)."""
    kind = type(cache)
    known = _LOCKS.get(kind)
    if known is None:
        known = _LOCKS[kind] = isinstance(cache, FlightLocks)
    return known


#: Per cache type: its ``get_now`` when it is an in-process cache without cross-process locks
#: (a miss is then looked up and led in one step, with nothing to await), else ``None``.
GET_NOW: dict[type, Callable[[Any, str], bytes | None] | None] = {}


def get_now_of(cache: object) -> Callable[[Any, str], bytes | None] | None:
    """``GET_NOW`` for a cache type not met before."""
    kind = type(cache)
    get_now = GET_NOW[kind] = None if _has_locks(cache) else getattr(kind, "get_now", None)
    return get_now
