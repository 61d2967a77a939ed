"""Small protocols for the relay's state, one per capability, each behind a URI-chosen backend."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from decimal import Decimal
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..limits import Bucket, Decision

__all__ = [
    "COUNT_COLUMNS", "LEDGER_COLUMNS", "MAX_COUNT", "ROUTE_CHARS", "Cache", "FlightLocks", "Ledger", "LedgerQuery", "LedgerRow", "QueryableLedger", "RateLimitStore",
]

#: The most characters of path a row's ``route`` keeps.
ROUTE_CHARS = 200
#: The largest token count a row holds (a signed 32-bit integer); larger counts are clamped to it.
MAX_COUNT = 2**31 - 1
_ZERO = Decimal(0)
_INF = float("inf")


def _count(value: object) -> int:
    """``value`` as a token count in ``0..MAX_COUNT``: an upstream may report ``1e30``, ``-5``
    or ``NaN``, and the ledger stores neither an overflow nor a credit."""
    if type(value) is int and 0 <= value <= MAX_COUNT:
        return value
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return 0
    if number != number or number <= 0:
        return 0
    return MAX_COUNT if number >= MAX_COUNT else int(number)


#: The token classes counted beside prompt, completion and cached tokens.
_CLASS_COUNTS = ("cache_write_5m_tokens", "cache_write_1h_tokens", "reasoning_tokens", "audio_input_tokens",
                 "image_input_tokens", "web_search_requests")
#: Every count a usage report sums, in its order.
COUNT_COLUMNS = ("prompt_tokens", "completion_tokens", "cached_tokens", *_CLASS_COUNTS)
#: Every count, then the latency and both amounts, and their types in a storable row.
_NUMBERS_OF = attrgetter(*COUNT_COLUMNS, "latency_ms", "cost_usd", "cache_saved_usd")
_STORABLE_TYPES = (*(int for _ in COUNT_COLUMNS), float, Decimal, Decimal)
_PLAIN_MONEY = frozenset({"+Normal", "+Subnormal", "+Zero"})
_NUMBER_CLASS = Decimal.number_class


def _money(value: object) -> Decimal:
    """``value`` as USD, ``0`` for anything negative or not finite (never a budget credit)."""
    if type(value) is Decimal and value.is_finite() and value > 0:
        return value
    try:
        usd = value if isinstance(value, Decimal) else Decimal(str(value))
    except ArithmeticError:
        return _ZERO
    return usd if usd.is_finite() and usd > 0 else _ZERO


def _ms(value: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return 0.0
    return number if 0 <= number < float("inf") else 0.0


@dataclass(slots=True)
class LedgerRow:
    """One answered request (or one upstream attempt of it).

    ``cost_usd`` is what the request cost (0 for a cache hit); ``cache_saved_usd`` is what a
    cache hit would have cost had it gone upstream.
    """

    ts: float
    request_id: str
    caller: str
    endpoint: str
    model: str | None = None
    provider: str | None = None
    upstream_model: str | None = None
    stream: bool = False
    status: int = 200
    error_type: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    cache_hit: bool = False
    latency_ms: float = 0.0
    ttfb_ms: float | None = None
    upstream_ms: float | None = None
    attempts: int = 0
    estimated: bool = False
    #: Every upstream attempt of the request, as JSON: ``[{"deployment", "model", "provider",
    #: "status", "ms", "error"?, "wait_s"?} | {"deployment", "model", "skipped"}, ...]``.
    attempt_log: str | None = None
    cache_saved_usd: Decimal = Decimal(0)
    #: Token classes priced apart (see :class:`~asgi_ai_relay.types.Usage`): cache writes at
    #: five minutes and at one hour (parts of the prompt), reasoning (part of the completion),
    #: audio and image input (parts of the prompt), and web searches billed per call.
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    audio_input_tokens: int = 0
    image_input_tokens: int = 0
    web_search_requests: int = 0
    #: The tier the provider says it served, and the price rule that applied
    #: (``tier:flex``, ``long_context``, ``tier:batch+long_context``; ``None``: the flat rate).
    service_tier: str | None = None
    price_rule: str | None = None
    #: The relay's own count of the prompt, when the provider's was checked against it.
    counted_prompt_tokens: int | None = None
    #: Why the provider's usage did not fit the traffic: ``prompt`` (its input tokens are
    #: beyond the tolerance of the relay's count), ``output`` (a stream claimed more output
    #: than the text it sent), or both (``prompt,output``); ``None``: it fit, or was not checked.
    usage_flag: str | None = None
    #: ``METHOD /path`` of a request no relay route matched (sanitised: printable, at most
    #: :data:`ROUTE_CHARS` characters of path, no query string); ``None`` for every routed one.
    route: str | None = None
    #: The managed key the request came with (its public id, never its secret nor digest), and
    #: that key's team (``None``: no managed key, or no team).
    key_id: str | None = None
    team: str | None = None

    def __post_init__(self) -> None:
        # The one place counts and money are made storable, whatever reported them: the whole
        # row is tested at once (every count a plain int in 0..MAX_COUNT, both amounts finite
        # and not negative, the latency a finite float), each field repaired only when it fails.
        # The types in one comparison, the amounts' signs and finiteness in one pass (neither a
        # NaN, an infinity nor -0 is "+Normal", "+Subnormal" or "+Zero"), then min and max over
        # numbers that all compare (a NaN latency, which they may pass over, fails ``< _INF``; a
        # latency or an amount above MAX_COUNT only takes the long way, which keeps it).
        numbers = _NUMBERS_OF(self)
        counted = self.counted_prompt_tokens
        if (tuple(map(type, numbers)) == _STORABLE_TYPES and _PLAIN_MONEY.issuperset(map(_NUMBER_CLASS, numbers[-2:]))
                and 0 <= min(numbers) and max(numbers) <= MAX_COUNT and self.latency_ms < _INF
                and (counted is None or type(counted) is int and 0 <= counted <= MAX_COUNT)):
            return
        self._repair()

    def _repair(self) -> None:
        for name in COUNT_COLUMNS:
            value = getattr(self, name)
            if type(value) is not int or not 0 <= value <= MAX_COUNT:
                setattr(self, name, _count(value))
        for name in ("cost_usd", "cache_saved_usd"):
            value = getattr(self, name)
            if type(value) is not Decimal or not value.is_finite() or value.is_signed():
                setattr(self, name, _money(value))
        latency = self.latency_ms
        if type(latency) is not float or not 0 <= latency < _INF:
            self.latency_ms = _ms(latency)
        if self.counted_prompt_tokens is not None:
            self.counted_prompt_tokens = _count(self.counted_prompt_tokens)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


LEDGER_COLUMNS = tuple(f.name for f in fields(LedgerRow))


@dataclass(frozen=True, slots=True)
class LedgerQuery:
    """Which rows a usage report reads: ``since <= ts < until``, any field ``None`` = all."""

    caller: str | None = None
    model: str | None = None
    since: float | None = None
    until: float | None = None
    endpoints: tuple[str, ...] | None = None
    key_id: str | None = None
    team: str | None = None

    def matches(self, row: LedgerRow) -> bool:
        return (
            (self.caller is None or row.caller == self.caller)
            and (self.model is None or row.model == self.model)
            and (self.since is None or row.ts >= self.since)
            and (self.until is None or row.ts < self.until)
            and (self.endpoints is None or row.endpoint in self.endpoints)
            and (self.key_id is None or row.key_id == self.key_id)
            and (self.team is None or row.team == self.team)
        )


@runtime_checkable
class Ledger(Protocol):
    """Where usage rows go. ``record`` must be cheap and never block the event loop."""

    def record(self, row: LedgerRow) -> None: ...

    def flush(self) -> None:
        """Block until every recorded row is stored."""

    def rows(self) -> list[LedgerRow]:
        """Every stored row, oldest first (flushes first)."""

    def close(self) -> None:
        """Flush and release the backend; safe to call twice."""


@runtime_checkable
class QueryableLedger(Ledger, Protocol):
    def query(self, query: LedgerQuery) -> list[LedgerRow]:
        """The stored rows ``query`` selects, oldest first (flushes first; may block: call it
        from a thread)."""


class Cache(Protocol):
    """Response cache entries: opaque bytes under a key, each with a time to live."""

    #: Seconds an entry lives when the request names no TTL.
    default_ttl: float

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl: float) -> None: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class FlightLocks(Protocol):
    """A cache shared between processes that also coordinates their misses: one short lock per
    key, so identical requests in several processes make one upstream call (see
    :mod:`asgi_ai_relay.stages.flight`). Tokens are the holder's own random strings; every
    operation on a lock checks it, so a holder whose lock expired cannot free another's.
    """

    #: Seconds a lock lives unless its holder renews it (how long a crashed holder blocks).
    lock_ttl: float

    async def claim(self, key: str, token: str, ttl: float) -> tuple[bool, bytes | None]:
        """In one step: the entry when there is one (``(False, entry)``), else the lock for
        ``token`` when no one holds it (``(True, None)``), else ``(False, None)``.

        :raises StorageError: when the backend cannot be reached.
        """

    async def renew(self, key: str, token: str, ttl: float) -> bool:
        """Extend the lock ``token`` holds; ``False`` when it no longer holds it.

        :raises StorageError: when the backend cannot be reached.
        """

    async def unclaim(self, key: str, token: str) -> None:
        """Free the lock if ``token`` holds it (another holder's lock is left alone).

        :raises StorageError: when the backend cannot be reached.
        """

    async def publish(self, key: str, value: bytes, ttl: float, token: str) -> None:
        """Store the entry and free ``token``'s lock in one step, so a waiting process never
        sees the lock gone before the entry is there.

        :raises StorageError: when the backend cannot be reached.
        """


class RateLimitStore(Protocol):
    """GCRA state for rate limits (see :mod:`asgi_ai_relay.limits`), shared as widely as the
    backend reaches: one process (memory) or every process on one Redis."""

    async def acquire(self, buckets: Sequence[Bucket], costs: Sequence[float]) -> Decision:
        """Charge every bucket its cost, all or none.

        :raises StorageError: when the backend cannot be reached (in bounded time).
        """

    async def adjust(self, buckets: Sequence[Bucket], deltas: Sequence[float]) -> None:
        """Charge (or refund, when negative) what an estimate got wrong.

        :raises StorageError: when the backend cannot be reached.
        """

    async def aclose(self) -> None:
        """Release connections; safe to call twice."""
