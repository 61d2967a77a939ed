"""Stage 3: per-caller spending limits in USD, per UTC day and per UTC month.

Before a request goes on, its cost is estimated (prompt text at about four characters a token,
plus ``max_tokens`` of output when given) and held against the caller's budget; the request
that would cross a limit is refused with :class:`BudgetExceeded`. Once the answer is recorded
the hold is replaced by the real cost. Holding matters: concurrent requests cannot all slip
under the same remaining budget.

Spend is counted in this process, seeded from the ledger at start-up, so a restart forgets
nothing. Several workers each count their own spend since their start on top of that seed.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from ..errors import BudgetExceeded
from ..pricing import model_cost
from ..providers.mock import estimate_tokens, text_of
from ..types import Usage

if TYPE_CHECKING:
    from ..call import Call
    from ..config import BudgetSettings
    from ..relay import Relay
    from ..storage import LedgerRow
    from ..types import RelayResponse

__all__ = ["Spend", "check", "estimate_request_usage"]

logger = logging.getLogger("asgi_ai_relay")

_ZERO = Decimal(0)


def _periods(ts: float) -> tuple[str, str]:
    day = datetime.fromtimestamp(ts, UTC)
    return day.strftime("%Y-%m-%d"), day.strftime("%Y-%m")


def seconds_to_reset(ts: float, period: str) -> float:
    now = datetime.fromtimestamp(ts, UTC)
    if period == "daily":
        reset = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        reset = (now.replace(day=28) + timedelta(days=4)).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return (reset - now).total_seconds()


def month_start(ts: float) -> float:
    now = datetime.fromtimestamp(ts, UTC)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()


class Spend:
    """USD spent (and held) per caller in the current UTC day and month."""

    def __init__(self, settings: BudgetSettings) -> None:
        self.settings = settings
        self._totals: dict[tuple[str, str], Decimal] = {}
        self._warned: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def seed(self, rows: list[LedgerRow], now: float | None = None) -> None:
        """Count what the ledger already holds for this month (and so today)."""
        day, month = _periods(now if now is not None else time.time())
        for row in rows:
            row_day, row_month = _periods(row.ts)
            if row_month == month:
                self._add(row.caller, month, row.cost_usd)
                if row_day == day:
                    self._add(row.caller, day, row.cost_usd)

    def _add(self, caller: str, period: str, usd: Decimal) -> None:
        key = (caller, period)
        self._totals[key] = self._totals.get(key, _ZERO) + usd

    def spent(self, caller: str, period: str) -> Decimal:
        return self._totals.get((caller, period), _ZERO)

    def hold(self, call: Call, estimate: Decimal) -> None:
        """:raises BudgetExceeded: when ``estimate`` on top of today's or this month's spend
        would cross the caller's limit."""
        caller = call.caller.id
        budget = self.settings.for_caller(caller)
        day, month = _periods(call.ts)
        with self._lock:
            for name, limit, period in (("daily", budget.daily, day), ("monthly", budget.monthly, month)):
                spent = self.spent(caller, period)
                if limit is not None and (spent >= limit or spent + estimate > limit):
                    raise BudgetExceeded(
                        f"The {name} budget of {limit} USD for caller {caller!r} is spent "
                        f"({spent:.6f} USD used, this request is estimated at {estimate:.6f} USD).",
                        retry_after=seconds_to_reset(call.ts, name),
                    )
            self._add(caller, day, estimate)
            self._add(caller, month, estimate)
        call.budget_hold = estimate

    def settle(self, call: Call) -> None:
        """Replace the request's hold by what it cost; warn at the soft threshold."""
        caller = call.caller.id
        delta = call.cost - call.budget_hold
        call.budget_hold = _ZERO
        if not delta:
            return
        day, month = _periods(call.ts)
        with self._lock:
            self._add(caller, day, delta)
            self._add(caller, month, delta)
        self._warn(caller, day, month)

    def _warn(self, caller: str, day: str, month: str) -> None:
        budget = self.settings.for_caller(caller)
        for name, limit, period in (("daily", budget.daily, day), ("monthly", budget.monthly, month)):
            if limit is None or (caller, period) in self._warned:
                continue
            spent = self.spent(caller, period)
            if spent >= limit * self.settings.soft_threshold:
                self._warned.add((caller, period))
                logger.warning(
                    "budget: caller %s has used %s of its %s budget of %s USD (%s)",
                    caller, f"{spent:.6f}", name, limit, period,
                )


def estimate_request_usage(body: dict[str, object]) -> Usage:
    messages = body.get("messages")
    prompt = sum(
        estimate_tokens(text_of(m.get("content"))) + 4 for m in messages if isinstance(m, dict)
    ) if isinstance(messages, list) else 0
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    return Usage(prompt_tokens=prompt, completion_tokens=limit if isinstance(limit, int) else 0, estimated=True)


async def check(relay: Relay, call: Call) -> RelayResponse | None:
    """:raises BudgetExceeded: (429, ``budget_exceeded``, ``Retry-After`` to the period reset)."""
    spend = relay.spend
    if spend is None or call.model is None:
        return None
    budget = relay.config.budgets.for_caller(call.caller.id)
    if budget.daily is None and budget.monthly is None:
        return None
    spend.hold(call, model_cost(relay.config, call.model, estimate_request_usage(call.body)))
    return None
