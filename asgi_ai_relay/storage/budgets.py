"""Where budget spend is counted: USD spent and held per caller, per UTC day and per UTC month.

    storage.budgets = "limits"        (default) the store ``storage.limits`` names: memory, or its Redis
    storage.budgets = "memory://"     this process only, seeded from the ledger at start-up
    storage.budgets = "redis://host:6379/0?prefix=relay"   every worker and host on one Redis

A request *holds* its estimated cost when it is admitted (refused if the hold would cross a
limit) and *settles* to its real cost when it ends. :class:`MemoryBudgets` keeps exact
:class:`~decimal.Decimal` totals; :mod:`.redis_budgets` keeps them in Redis, one Lua script each
for hold and settle.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal

from . import pick_backend
from .budget_state import BudgetStore, Held, Seeder, Window

__all__ = ["BUDGET_SCHEMES", "BudgetStore", "Held", "MemoryBudgets", "Seeder", "Window", "budgets_from_uri"]

_ZERO = Decimal(0)


def _over(spent: Decimal, limit: Decimal | None, amount: Decimal) -> bool:
    return limit is not None and (spent >= limit or spent + amount > limit)


class MemoryBudgets:
    """Totals of this process, exact; seeded from the ledger rows at start-up."""

    def __init__(self) -> None:
        self._totals: dict[tuple[str, str], Decimal] = {}
        self._lock = threading.Lock()

    def add(self, caller: str, period: str, usd: Decimal) -> None:
        key = (caller, period)
        self._totals[key] = self._totals.get(key, _ZERO) + usd

    def spent(self, caller: str, period: str) -> Decimal:
        return self._totals.get((caller, period), _ZERO)

    def hold_now(self, window: Window, amount: Decimal) -> Held:
        caller = window.caller
        with self._lock:
            day, month = self.spent(caller, window.day), self.spent(caller, window.month)
            if _over(day, window.daily, amount) or _over(month, window.monthly, amount):
                return Held(False, day, month)
            self.add(caller, window.day, amount)
            self.add(caller, window.month, amount)
            return Held(True, day + amount, month + amount)

    def settle_now(self, window: Window, held: Held, amount: Decimal, cost: Decimal) -> tuple[Decimal, Decimal]:
        caller, delta = window.caller, cost - amount
        with self._lock:
            if delta:
                self.add(caller, window.day, delta)
                self.add(caller, window.month, delta)
            return self.spent(caller, window.day), self.spent(caller, window.month)

    async def hold(self, window: Window, amount: Decimal) -> Held:
        return self.hold_now(window, amount)

    async def settle(self, window: Window, held: Held, amount: Decimal, cost: Decimal) -> tuple[Decimal, Decimal]:
        return self.settle_now(window, held, amount, cost)

    async def aclose(self) -> None:
        return None


def _redis(uri: str, seeder: Seeder) -> BudgetStore:
    from .redis_budgets import RedisBudgets

    return RedisBudgets(uri, seeder)


BUDGET_SCHEMES: dict[str, Callable[[str, Seeder], BudgetStore]] = {
    "memory": lambda uri, seeder: MemoryBudgets(),
    "redis": _redis,
    "rediss": _redis,
    "redis+cluster": _redis,
    "rediss+cluster": _redis,
}


def budgets_from_uri(uri: str, limits_uri: str, seeder: Seeder) -> BudgetStore:
    """The budget store ``storage.budgets`` names (``"limits"``: the scheme and server of
    ``storage.limits``).

    :param seeder: reads what the ledger holds for a caller, for counters that are missing.
    :raises ConfigurationError: for a scheme no backend serves.
    """
    chosen = limits_uri if uri == "limits" else uri

    def bound(make: Callable[[str, Seeder], BudgetStore]) -> Callable[[str], BudgetStore]:
        return lambda given: make(given, seeder)

    return pick_backend("storage.budgets", {scheme: bound(make) for scheme, make in BUDGET_SCHEMES.items()}, chosen)
