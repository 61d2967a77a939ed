"""Small protocols for the relay's state, one per capability, each behind a URI-chosen backend."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..limits import Bucket, Decision

__all__ = ["LEDGER_COLUMNS", "Ledger", "LedgerRow", "RateLimitStore"]


@dataclass(slots=True)
class LedgerRow:
    """One answered request (or one upstream attempt of it)."""

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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


LEDGER_COLUMNS = tuple(f.name for f in fields(LedgerRow))


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
