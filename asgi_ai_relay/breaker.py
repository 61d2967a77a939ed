"""Circuit breakers, one per deployment, so a failing provider is left alone for a while.

    closed --(failure_threshold failures in window, or failure_rate)--> open
    open --(cooldown elapsed: computed on read, no timers)--> half-open
    half-open --(a probe succeeds)--> closed        half-open --(a probe fails)--> open

Half-open admits ``half_open_probes`` calls at once; everything else is refused with
:class:`CircuitOpen`, which names the breaker and the seconds it has left. Time is always
passed in (``now``), so a test drives the breaker with its own clock.

State lives behind :class:`BreakerStore`: :class:`MemoryBreakers` (per process, the default) or
``RedisBreakers`` (``storage.breakers = "redis://..."``, shared by every worker), chosen by
:func:`breakers_from_uri`. Failures are counted in ``BUCKETS`` slices of the window.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from .config import BreakerSettings
from .errors import ServiceUnavailable
from .storage import pick_backend

__all__ = [
    "BUCKETS",
    "BreakerState",
    "BreakerStore",
    "BreakerView",
    "CircuitOpen",
    "MemoryBreakers",
    "Ticket",
    "breakers_from_uri",
]

BUCKETS = 10


class BreakerState(str, enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitOpen(ServiceUnavailable):
    """A deployment's breaker refused the call; nothing was sent upstream."""

    code = "circuit_open"

    def __init__(self, name: str, seconds_left: float) -> None:
        if seconds_left > 0:
            message = f"Circuit breaker {name!r} is open; it lets a call through again in {seconds_left:.1f}s."
        else:
            message = f"Circuit breaker {name!r} is half-open and its probe calls are in flight."
        super().__init__(message, retry_after=max(seconds_left, 1.0))
        self.breaker = name
        self.seconds_left = seconds_left


@dataclass(frozen=True, slots=True)
class Ticket:
    """Leave to make one call through breaker ``name``; ``probe`` when it is a half-open probe."""

    name: str
    probe: bool = False


@dataclass(frozen=True, slots=True)
class BreakerView:
    name: str
    state: BreakerState
    retry_in: float
    requests: int
    failures: int

    @property
    def error_rate(self) -> float | None:
        return round(self.failures / self.requests, 4) if self.requests else None


class BreakerStore(Protocol):
    async def allow(self, name: str, now: float) -> Ticket:
        """:raises CircuitOpen: while the breaker is open or its probes are all taken."""

    async def record(self, ticket: Ticket, ok: bool, now: float) -> None:
        """The outcome of a call made with ``ticket`` (``ok``: the provider did its job)."""

    async def release(self, ticket: Ticket) -> None:
        """The call ended without an outcome (cancelled): give a probe slot back."""

    async def view(self, name: str, now: float) -> BreakerView: ...

    async def aclose(self) -> None: ...


class Circuit:
    """One breaker's state, the same fields the Redis backend keeps in a hash."""

    __slots__ = ("buckets", "opened", "probes")

    def __init__(self) -> None:
        self.opened: float | None = None
        self.probes = 0
        self.buckets = [[-1, 0, 0] for _ in range(BUCKETS)]  # [bucket id, requests, failures]

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> Circuit:
        circuit = cls()
        circuit.opened = float(fields["opened"]) if fields.get("opened") else None
        circuit.probes = int(fields.get("probes") or 0)
        for i in range(BUCKETS):
            if f"t{i}" in fields:
                circuit.buckets[i] = [int(fields[f"t{i}"]), int(fields.get(f"r{i}", 0)), int(fields.get(f"f{i}", 0))]
        return circuit

    def tally(self, now: float, settings: BreakerSettings) -> tuple[int, int]:
        """Requests and failures within the window ending at ``now``."""
        current = math.floor(now / (settings.window / BUCKETS))
        requests = failures = 0
        for bucket_id, req, fail in self.buckets:
            if bucket_id > current - BUCKETS:
                requests += req
                failures += fail
        return requests, failures

    def count(self, now: float, ok: bool, settings: BreakerSettings) -> None:
        current = math.floor(now / (settings.window / BUCKETS))
        bucket = self.buckets[current % BUCKETS]
        if bucket[0] != current:
            bucket[:] = [current, 0, 0]
        bucket[1] += 1
        bucket[2] += 0 if ok else 1

    def view(self, name: str, now: float, settings: BreakerSettings) -> BreakerView:
        requests, failures = self.tally(now, settings)
        if self.opened is None:
            return BreakerView(name, BreakerState.CLOSED, 0.0, requests, failures)
        left = self.opened + settings.cooldown - now
        state = BreakerState.OPEN if left > 0 else BreakerState.HALF_OPEN
        return BreakerView(name, state, max(0.0, left), requests, failures)


def tripped(requests: int, failures: int, settings: BreakerSettings) -> bool:
    """Whether a closed breaker with this window should open."""
    if failures >= settings.failure_threshold:
        return True
    rate = settings.failure_rate
    return rate > 0 and requests >= settings.min_requests and failures >= rate * requests


class MemoryBreakers:
    """Breakers of this process only: nothing to install, nothing shared."""

    def __init__(self, settings: BreakerSettings) -> None:
        self.settings = settings
        self._circuits: dict[str, Circuit] = {}

    def _circuit(self, name: str) -> Circuit:
        circuit = self._circuits.get(name)
        if circuit is None:
            circuit = self._circuits[name] = Circuit()
        return circuit

    async def allow(self, name: str, now: float) -> Ticket:
        circuit = self._circuits.get(name)
        if circuit is None or circuit.opened is None:
            return Ticket(name)
        left = circuit.opened + self.settings.cooldown - now
        if left > 0:
            raise CircuitOpen(name, left)
        if circuit.probes < self.settings.half_open_probes:
            circuit.probes += 1
            return Ticket(name, probe=True)
        raise CircuitOpen(name, 0.0)

    async def record(self, ticket: Ticket, ok: bool, now: float) -> None:
        circuit = self._circuit(ticket.name)
        settings = self.settings
        circuit.count(now, ok, settings)
        if ticket.probe:
            circuit.probes = max(0, circuit.probes - 1)
            if ok:
                self._circuits[ticket.name] = Circuit()
            else:
                circuit.opened = now
        elif not ok and circuit.opened is None and tripped(*circuit.tally(now, settings), settings):
            circuit.opened = now
            circuit.probes = 0

    async def release(self, ticket: Ticket) -> None:
        if ticket.probe:
            circuit = self._circuit(ticket.name)
            circuit.probes = max(0, circuit.probes - 1)

    async def view(self, name: str, now: float) -> BreakerView:
        return self._circuit(name).view(name, now, self.settings)

    async def aclose(self) -> None:
        return None


def _redis(uri: str, settings: BreakerSettings) -> BreakerStore:
    from .storage.redis_breakers import RedisBreakers

    return RedisBreakers(uri, settings)


BREAKER_SCHEMES: dict[str, Callable[[str, BreakerSettings], BreakerStore]] = {
    "memory": lambda uri, settings: MemoryBreakers(settings),
    "redis": _redis,
    "rediss": _redis,
}


def breakers_from_uri(uri: str, settings: BreakerSettings) -> BreakerStore:
    """The breaker store ``storage.breakers`` names.

    :raises ConfigurationError: for a scheme no backend serves.
    """

    def bound(make: Callable[[str, BreakerSettings], BreakerStore]) -> Callable[[str], BreakerStore]:
        return lambda uri: make(uri, settings)

    return pick_backend("storage.breakers", {scheme: bound(make) for scheme, make in BREAKER_SCHEMES.items()}, uri)
