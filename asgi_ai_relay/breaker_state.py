"""What every breaker store shares: the states, the refusal, the pass a call carries, one
circuit's fields and the store protocol. :mod:`.breaker` (memory) and
:mod:`.storage.redis_breakers` (Redis) both build on this module, and neither imports the other."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from .config import BreakerSettings
from .errors import ServiceUnavailable

__all__ = [
    "BUCKETS",
    "BreakerPass",
    "BreakerState",
    "BreakerStore",
    "BreakerView",
    "Circuit",
    "CircuitOpen",
    "Ticket",
    "tripped",
]

#: Failures are counted in this many slices of the window.
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
class BreakerPass:
    """Leave to make one call through breaker ``name``; ``probe`` when it is a half-open probe
    (its outcome, or its release, gives the probe slot back)."""

    name: str
    probe: bool = False


#: The former name of :class:`BreakerPass`.
Ticket = BreakerPass


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
    async def allow(self, name: str, now: float) -> BreakerPass:
        """:raises CircuitOpen: while the breaker is open or its probes are all taken (a probe
        that never reports gives its slot back by itself after one cool-down)."""

    async def record(self, ticket: BreakerPass, ok: bool, now: float) -> None:
        """The outcome of a call made with ``ticket`` (``ok``: the provider did its job)."""

    async def release(self, ticket: BreakerPass) -> None:
        """The call ended without an outcome (cancelled): give a probe slot back."""

    async def view(self, name: str, now: float) -> BreakerView: ...

    async def aclose(self) -> None: ...


class Circuit:
    """One breaker's state, the same fields the Redis backend keeps in a hash."""

    __slots__ = ("buckets", "opened", "probe_at", "probes")

    def __init__(self) -> None:
        self.opened: float | None = None
        self.probes = 0
        #: When the latest probe slot was taken: slots older than one cool-down are lost probes.
        self.probe_at = 0.0
        self.buckets = [[-1, 0, 0] for _ in range(BUCKETS)]  # [bucket id, requests, failures]

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> Circuit:
        circuit = cls()
        circuit.opened = float(fields["opened"]) if fields.get("opened") else None
        circuit.probes = int(fields.get("probes") or 0)
        circuit.probe_at = float(fields.get("probe_at") or 0)
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

    def take_probe(self, now: float, settings: BreakerSettings) -> bool:
        """Take a half-open probe slot; the slots of probes older than one cool-down (a call
        cancelled or lost before it reported) are free again, as in the Redis script."""
        if self.probes >= settings.half_open_probes:
            if now - self.probe_at < settings.cooldown:
                return False
            self.probes = 0
        self.probes += 1
        self.probe_at = now
        return True

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


