"""Circuit breakers, one per deployment, so a failing provider is left alone for a while.

    closed --(failure_threshold failures in window, or failure_rate)--> open
    open --(cooldown elapsed: computed on read, no timers)--> half-open
    half-open --(a probe succeeds)--> closed        half-open --(a probe fails)--> open

Half-open admits ``half_open_probes`` calls at once; everything else is refused with
:class:`CircuitOpen`, which names the breaker and the seconds it has left. A probe slot that
is neither recorded nor released within one cool-down (a lost call) is free again, in memory as
in Redis, so no lost probe keeps a breaker half-open for good. Time is always
passed in (``now``), so a test drives the breaker with its own clock.

State lives behind :class:`BreakerStore`: :class:`MemoryBreakers` (per process, the default) or
``RedisBreakers`` (``storage.breakers = "redis://..."``, shared by every worker), chosen by
:func:`breakers_from_uri`. Failures are counted in ``BUCKETS`` slices of the window. The types
both stores share live in :mod:`.breaker_state`, so neither store module imports the other.
"""

from __future__ import annotations

from collections.abc import Callable

from .breaker_state import (
    BUCKETS,
    BreakerPass,
    BreakerState,
    BreakerStore,
    BreakerView,
    Circuit,
    CircuitOpen,
    Ticket,
    tripped,
)
from .config import BreakerSettings
from .storage import pick_backend

__all__ = [
    "BUCKETS",
    "BreakerPass",
    "BreakerState",
    "BreakerStore",
    "BreakerView",
    "Circuit",
    "CircuitOpen",
    "MemoryBreakers",
    "Ticket",
    "breakers_from_uri",
]


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

    async def allow(self, name: str, now: float) -> BreakerPass:
        circuit = self._circuits.get(name)
        if circuit is None or circuit.opened is None:
            return BreakerPass(name)
        left = circuit.opened + self.settings.cooldown - now
        if left > 0:
            raise CircuitOpen(name, left)
        if circuit.take_probe(now, self.settings):
            return BreakerPass(name, probe=True)
        raise CircuitOpen(name, 0.0)

    async def record(self, ticket: BreakerPass, ok: bool, now: float) -> None:
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

    async def release(self, ticket: BreakerPass) -> None:
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
    "redis+cluster": _redis,
    "rediss+cluster": _redis,
}


def breakers_from_uri(uri: str, settings: BreakerSettings) -> BreakerStore:
    """The breaker store ``storage.breakers`` names.

    :raises ConfigurationError: for a scheme no backend serves.
    """

    def bound(make: Callable[[str, BreakerSettings], BreakerStore]) -> Callable[[str], BreakerStore]:
        return lambda uri: make(uri, settings)

    return pick_backend("storage.breakers", {scheme: bound(make) for scheme, make in BREAKER_SCHEMES.items()}, uri)
