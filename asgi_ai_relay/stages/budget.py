"""The budget stage: per-caller spending limits in USD, per UTC day and per UTC month.

Before a request goes on, its cost is estimated (its prompt counted by
:mod:`asgi_ai_relay.tokens`, plus ``max_tokens`` of output when given) and held against the caller's budget; the request
that would cross a limit is refused with :class:`BudgetExceeded`. The hold is registered on the
request (:meth:`Call.hold`), so however the request ends, once it is priced the hold is
replaced by the real cost. Holding matters: concurrent requests cannot all slip under the same
remaining budget.

Spend lives in the store ``storage.budgets`` names (:mod:`asgi_ai_relay.storage.budgets`):
this process's memory, seeded from the ledger at start-up, or Redis, shared by every worker and
seeded from the ledger whenever its counters are missing; a restart or a flush forgets nothing.
A caller can overspend only by what the requests in flight when its budget ran out cost beyond
their estimates (the bound is derived in :mod:`asgi_ai_relay.storage.redis_budgets`). When the
store cannot be reached, ``queue.fail_mode`` decides: ``open`` lets the request through
unheld, ``closed`` answers 503.

Each settle (and each refusal) hands the spend it saw to :class:`~asgi_ai_relay.alerts.Alerts`,
which raises a budget alert once per caller, period and threshold (``soft_threshold`` and 100 %).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .. import report
from ..errors import BudgetExceeded, ServiceUnavailable, StorageError
from ..config.settings import Budget
from ..policy import limits_of
from ..pricing import model_cost
from ..storage import LedgerQuery
from ..storage.budgets import BudgetStore, Held, MemoryBudgets, Window, budgets_from_uri
from ..tokens import request_usage
from ..types import Usage

if TYPE_CHECKING:
    from ..call import Call
    from ..config import BudgetSettings
    from ..relay import Relay
    from ..storage import Ledger
    from ..types import RelayResponse

__all__ = ["Spend", "budgets_of", "check", "guard", "estimate_request_usage", "hold_each", "ledger_spend", "month_start", "plan",
           "seconds_to_reset"]

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


def day_start(ts: float) -> float:
    now = datetime.fromtimestamp(ts, UTC)
    return now.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def ledger_spend(ledger: Ledger, caller: str, since_month: float, since_day: float) -> tuple[Decimal, Decimal]:
    """What ``caller`` spent today and this month by the ledger (blocking: call from a thread);
    a key's counter (``key:<id>``) and a team's (``team:<name>``) read the rows of that key or team.

    Uses ``report.spend_totals(ledger, month_start, day_start) -> {caller: (day, month)}`` when
    the report module has it (aggregated by the ledger), else the caller's rows.
    """
    totals = getattr(report, "spend_totals", None)
    if totals is not None:
        day, month = totals(ledger, since_month, since_day).get(caller, (_ZERO, _ZERO))
        return Decimal(day), Decimal(month)
    day = month = _ZERO
    kind, _, name = caller.partition(":")
    query = (LedgerQuery(key_id=name, since=since_month) if kind == "key" and name
             else LedgerQuery(team=name, since=since_month) if kind == "team" and name
             else LedgerQuery(caller=caller, since=since_month))
    for row in report.read_rows(ledger, query):
        month += row.cost_usd
        if row.ts >= since_day:
            day += row.cost_usd
    return day, month


class Spend:
    """The budgets of one relay: limits from ``[budgets]``, spend in its budget store.

    The store is opened on first use, from the relay's ``storage.budgets`` (memory until then).
    """

    def __init__(self, settings: BudgetSettings, store: BudgetStore | None = None) -> None:
        self.settings = settings
        self.store: BudgetStore | None = store
        #: The memory store: counts seeded at start-up wait here until the store is chosen.
        self._memory: MemoryBudgets | None = store if isinstance(store, MemoryBudgets) else MemoryBudgets()

    def bind(self, relay: Relay) -> BudgetStore:
        """The store ``storage.budgets`` names, opened once."""
        if self.store is None:
            storage = relay.config.storage

            async def seeder(caller: str, since_month: float, since_day: float) -> tuple[Decimal, Decimal]:
                return await asyncio.to_thread(ledger_spend, relay.ledger, caller, since_month, since_day)

            store = budgets_from_uri(storage.budgets, storage.limits, seeder)
            if isinstance(store, MemoryBudgets):
                assert self._memory is not None
                store = self._memory
            else:
                self._memory = None
            self.store = store
        return self.store

    def seed(self, totals: Mapping[str, tuple[Decimal, Decimal]], now: float) -> None:
        """Count what the ledger already holds (caller -> (this month, today) in USD, from
        :func:`asgi_ai_relay.storage.spend_totals`), in memory; a shared store seeds itself
        from the ledger when its counters are missing."""
        memory = self._memory
        if memory is None:
            return
        day, month = _periods(now)
        for caller, (month_usd, day_usd) in totals.items():
            memory.add(caller, month, month_usd)
            memory.add(caller, day, day_usd)

    def spent(self, caller: str, period: str) -> Decimal:
        """Spent in ``period`` by this process's memory store (0 for a shared store)."""
        return self._memory.spent(caller, period) if self._memory is not None else _ZERO

    def window(self, caller: str, ts: float, budget: Budget | None = None) -> Window:
        """``caller``'s counters for ``ts`` under ``budget`` (by default its configured one)."""
        if budget is None:
            budget = self.settings.for_caller(caller)
        day, month = _periods(ts)
        return Window(caller, day, month, budget.daily, budget.monthly, day_start(ts), month_start(ts),
                      seconds_to_reset(ts, "daily"), seconds_to_reset(ts, "monthly"))

    async def hold(self, relay: Relay, call: Call, estimate: Decimal, name: str | None = None,
                   budget: Budget | None = None) -> None:
        """Hold ``estimate`` for the request and register its settle on the request: on the
        counter ``name`` (by default the caller's) under ``budget`` (by default its configured one).

        :raises BudgetExceeded: when ``estimate`` on top of today's or this month's spend
            would cross the caller's limit.
        :raises ServiceUnavailable: the store is down and ``queue.fail_mode`` is ``closed``.
        """
        store = self.bind(relay)
        window = self.window(call.caller.id if name is None else name, call.ts, budget)
        try:
            if store is self._memory and self._memory is not None:
                held = self._memory.hold_now(window, estimate)  # no await: nothing to cancel
            else:
                held = await self._hold_shared(relay, store, window, estimate)
        except StorageError as exc:
            if relay.config.queue.fail_mode == "closed":
                raise ServiceUnavailable("Budgets cannot be checked right now.", retry_after=1.0) from exc
            logger.debug("budget not held (fail open): %s", exc)
            return
        if not held.allowed:
            relay.alerts.crossed(relay, window, held.day, held.month)
            self.refuse(window, held, estimate)
        call.budget_hold = estimate
        call.hold(lambda: self._settle(relay, call, window, held, estimate))

    async def _hold_shared(self, relay: Relay, store: BudgetStore, window: Window, estimate: Decimal) -> Held:
        """The hold on a shared store; a request cancelled while it is on its way still gets
        it settled (to nothing) once it lands, so a cancellation leaks no hold."""
        pending = asyncio.ensure_future(store.hold(window, estimate))
        try:
            return await asyncio.shield(pending)
        except asyncio.CancelledError:
            pending.add_done_callback(lambda done: self._undo(relay, window, done, estimate))
            raise

    def _undo(self, relay: Relay, window: Window, done: asyncio.Future[Held], estimate: Decimal) -> None:
        if done.cancelled() or done.exception() is not None:
            return
        held = done.result()
        if held.allowed:
            relay.spawn(self._settle_shared(relay, window, held, estimate, _ZERO))

    def refuse(self, window: Window, held: Held, estimate: Decimal) -> None:
        """:raises BudgetExceeded: for the period ``held`` says is spent."""
        for name, limit, spent, left in (("daily", window.daily, held.day, window.day_left),
                                         ("monthly", window.monthly, held.month, window.month_left)):
            if limit is not None and (spent >= limit or spent + estimate > limit):
                raise BudgetExceeded(
                    f"The {name} budget of {limit} USD for caller {window.caller!r} is spent "
                    f"({spent:.6f} USD used, this request is estimated at {estimate:.6f} USD).",
                    retry_after=left,
                )
        raise BudgetExceeded(f"The budget of caller {window.caller!r} is spent.", retry_after=window.day_left)

    def _settle(self, relay: Relay, call: Call, window: Window, held: Held, estimate: Decimal) -> None:
        """The request's release: its hold becomes its cost (``call.cost`` is final here)."""
        call.budget_hold = _ZERO
        cost = call.cost
        if self.store is self._memory and self._memory is not None:
            relay.alerts.crossed(relay, window, *self._memory.settle_now(window, held, estimate, cost))
            return
        relay.spawn(self._settle_shared(relay, window, held, estimate, cost))

    async def _settle_shared(self, relay: Relay, window: Window, held: Held, estimate: Decimal, cost: Decimal) -> None:
        assert self.store is not None
        try:
            day, month = await self.store.settle(window, held, estimate, cost)
        except StorageError as exc:
            logger.debug("budget not settled (its hold stays counted): %s", exc)
            return
        relay.alerts.crossed(relay, window, day, month)

    async def aclose(self) -> None:
        """Close a shared store (it reopens on next use)."""
        store = self.store
        if store is not None and store is not self._memory:
            self.store = None
            await store.aclose()


def estimate_request_usage(body: dict[str, object], tokenizer: str = "estimate") -> Usage:
    """The usage held against the budget before the call (see :mod:`asgi_ai_relay.tokens`)."""
    return request_usage(body, 0, tokenizer)


def _stricter(a: Decimal | None, b: Decimal | None) -> Decimal | None:
    return b if a is None else a if b is None else min(a, b)


def budgets_of(relay: Relay, call: Call) -> dict[str, Budget]:
    """Every budget the request counts against, by counter: the caller's configured one, and
    those of the subjects of its own limits (:mod:`asgi_ai_relay.policy`: its key, its team;
    its owner's is the caller's counter, the stricter of the two limits applying). A subject
    named in ``budgets.callers`` (``"team:research"``) has that budget too, the stricter winning."""
    caller = call.caller.id
    out = {caller: relay.config.budgets.for_caller(caller)}
    limits = limits_of(call.caller)
    for subject in limits.subjects if limits is not None else ():
        quota = subject.quota
        name = caller if subject.kind == "owner" else subject.name
        seen = out.get(name) or relay.config.budgets.callers.get(name)
        if seen is None:
            if quota.budgeted:
                out[name] = Budget(quota.daily, quota.monthly)
        else:
            out[name] = Budget(_stricter(seen.daily, quota.daily), _stricter(seen.monthly, quota.monthly))
    return {name: b for name, b in out.items() if b.daily is not None or b.monthly is not None}


_unbudgeted: set[int] = set()


def plan(relay: Relay, call: Call, estimate: Decimal | None) -> tuple[dict[str, Budget], Decimal] | None:
    """The holds the request needs: its budgets (:func:`budgets_of`) and the estimate held on
    each (by default its estimated cost); ``None`` when nothing is held."""
    spend = relay.spend
    if spend is None or call.model is None:
        limits = limits_of(call.caller)
        if spend is None and limits is not None and id(relay) not in _unbudgeted and any(
                s.quota.budgeted for s in limits.subjects):
            _unbudgeted.add(id(relay))
            logger.warning("budget: caller %s carries budgets of its own, but this relay counts no budgets; "
                           "set keys.caller_limits = true", call.caller.id)
        return None
    budgets = budgets_of(relay, call)
    if not budgets:
        return None
    if estimate is None:
        usage = estimate_request_usage(call.body, relay.config.limits.tokenizer)
        estimate = model_cost(relay.config, call.model, usage)
    return budgets, estimate


async def hold_each(relay: Relay, call: Call, budgets: dict[str, Budget], estimate: Decimal) -> None:
    """Hold ``estimate`` on every budget in turn, each registered as it is taken."""
    assert relay.spend is not None
    for name, budget in budgets.items():
        await relay.spend.hold(relay, call, estimate, name, budget)


async def _hold_all(relay: Relay, call: Call, estimate: Decimal | None) -> None:
    planned = plan(relay, call, estimate)
    if planned is not None:
        await hold_each(relay, call, *planned)


async def check(relay: Relay, call: Call) -> RelayResponse | None:
    """:raises BudgetExceeded: (429, ``budget_exceeded``, ``Retry-After`` to the period reset)
    when the request's estimate would cross any of its budgets (:func:`budgets_of`)."""
    await _hold_all(relay, call, None)
    return None


async def guard(relay: Relay, call: Call) -> RelayResponse | None:
    """For requests that cost nothing (counting tokens): refused only once a budget is spent.

    :raises BudgetExceeded: see :func:`check`.
    """
    await _hold_all(relay, call, _ZERO)
    return None
