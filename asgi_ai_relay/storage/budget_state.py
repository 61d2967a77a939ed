"""What every budget store shares: the moment a request is held at (:class:`Window`), the
answer to a hold (:class:`Held`), the ledger's seeder and the store protocol.
:mod:`.budgets` (memory, and the factory that picks a store) and :mod:`.redis_budgets` (Redis)
both build on this module; the Redis store never imports the factory's module."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Any, Protocol

__all__ = ["BudgetStore", "Held", "Seeder", "Window", "from_pico", "to_pico"]

#: Shared budget stores count whole picodollars (integers the store adds exactly).
_PICO = Decimal(10) ** 12


def to_pico(usd: Decimal) -> int:
    """USD as whole picodollars, rounded up."""
    return int((usd * _PICO).to_integral_value(rounding=ROUND_CEILING))


def from_pico(raw: bytes | str | int) -> Decimal:
    return Decimal(int(raw)) / _PICO

#: ``(caller, month_start, day_start) -> (spent today, spent this month)`` from the ledger.
Seeder = Callable[[str, float, float], Awaitable[tuple[Decimal, Decimal]]]


@dataclass(frozen=True, slots=True)
class Window:
    """One caller's two budget periods at one moment: their names (``2026-12-01``, ``2026-12``),
    their limits (``None``: none), when they began and how many seconds are left in each."""

    caller: str
    day: str
    month: str
    daily: Decimal | None
    monthly: Decimal | None
    day_start: float
    month_start: float
    day_left: float
    month_left: float


@dataclass(frozen=True, slots=True)
class Held:
    """The answer to a hold: spent today and this month (after the hold when ``allowed``,
    before it when refused), and what the backend needs back to settle it."""

    allowed: bool
    day: Decimal
    month: Decimal
    token: Any = None


class BudgetStore(Protocol):
    async def hold(self, window: Window, amount: Decimal) -> Held:
        """Add ``amount`` to both periods unless it would cross a limit (all or nothing).

        :raises StorageError: when the backend cannot be reached (in bounded time).
        """

    async def settle(self, window: Window, held: Held, amount: Decimal, cost: Decimal) -> tuple[Decimal, Decimal]:
        """Replace a hold of ``amount`` by ``cost``; returns spent today and this month.

        :raises StorageError: when the backend cannot be reached.
        """

    async def aclose(self) -> None: ...
