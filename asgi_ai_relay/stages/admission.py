"""The caller side of admission, in one stage: the budget holds, then the caller's limits.

With every store in memory (or on different servers) this is :func:`budget.check` and then
:func:`ratelimit.admit`, each with its own store. When the rate limits are on Redis and the
budgets on the same server, both go in one script call
(:mod:`asgi_ai_relay.storage.redis_admission`): the request's holds and its caller-side buckets
are taken together or not at all. A budget that refuses answers ``budget_exceeded`` (a budget
is checked before the limits, as in the stage-by-stage order); a limit that says wait sleeps
(``on_limit = "queue"``) with nothing held, and asks again. A missing budget counter is seeded
from the ledger first. Each hold's settle and the buckets' reconciliation are registered with
:meth:`Call.hold` as soon as the call lands, and go back to Redis with the other give-backs of
that turn of the event loop, in one call.

The same call takes, when it can, the first attempt's upstream reservation as well (the
model's and provider's buckets, the provider's slots: :func:`.joint_reserve.plan`), only when
the request cannot be answered from the cache and only if all of it fits now; its refusal
refuses nothing (the attempt reserves as it would have). So a request that is sent upstream
waits for one round trip on Redis before it is sent, not two.
"""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Any

from ..errors import ServiceUnavailable, StorageError
from ..policy import limits_of
from ..storage.budget_state import from_pico
from . import budget, joint_reserve, ratelimit
from .waiting import QUEUE_RETRY_AFTER

if TYPE_CHECKING:
    from ..call import Call
    from ..relay import Relay
    from ..storage.budgets import Held, Window
    from ..storage.redis_admission import RedisAdmission
    from ..types import RelayResponse

__all__ = ["admit"]

logger = logging.getLogger("asgi_ai_relay")


async def admit(relay: Relay, call: Call) -> RelayResponse | None:
    """:raises BudgetExceeded, RateLimited, ServiceUnavailable: see the two stages it joins."""
    joint = relay.traffic.joint
    if joint is None:
        if relay.spend is not None or limits_of(call.caller) is not None:  # else no budget can apply
            await budget.check(relay, call)
        return await ratelimit.admit(relay, call)
    return await _joint(relay, call, joint)


async def _joint(relay: Relay, call: Call, joint: RedisAdmission) -> RelayResponse | None:
    traffic = relay.traffic
    planned = budget.plan(relay, call, None)
    holds: list[tuple[Window, Decimal]] = []
    if planned is not None:
        spend = relay.spend
        assert spend is not None
        if joint.join_budgets(spend.bind(relay)) is None:  # budgets elsewhere: their own calls
            await budget.hold_each(relay, call, *planned)
        else:
            holds = [(spend.window(name, call.ts, limit), planned[1]) for name, limit in planned[0].items()]
    own = ratelimit.subject_buckets(call)
    buckets = (traffic.caller_buckets(call) if traffic.limited else ()) + own
    if not holds and not buckets:
        return None
    charge = ratelimit.CallerCharge(traffic, call, buckets, traffic.estimate(call) if buckets else 0)
    costs = ratelimit.costs_of(charge)
    first = joint_reserve.plan(relay, call)
    deadline = asyncio.get_running_loop().time() + traffic.config.max_wait
    while True:
        extra = first.enter() if first is not None else None
        try:
            admitted = await joint.take(buckets, costs, holds, extra=extra)
            if first is not None and first.landed(admitted):
                call.hold(first)
            if admitted.unseeded:  # a first start, a new period, a flush: seed, then ask again
                store = joint.budgets
                assert store is not None
                for index in admitted.unseeded:
                    window = holds[index][0]
                    await store.seed(window, store.keys(window))
                continue
        except StorageError as exc:
            if first is not None:
                first.leave()
            if traffic.config.fail_mode == "closed":
                raise ServiceUnavailable("Rate limits and budgets cannot be checked right now.",
                                         retry_after=QUEUE_RETRY_AFTER) from exc
            logger.debug("rate limits and budgets skipped (fail open): %s", exc)
            return None
        except BaseException:  # cancelled: what lands is given back by ``take``, the slot now
            if first is not None:
                first.leave()
            raise
        for (window, amount), held in zip(holds, admitted.holds, strict=True):
            if not held.allowed:
                assert relay.spend is not None
                relay.alerts.crossed(relay, window, held.day, held.month)
                relay.spend.refuse(window, held, amount)
        if admitted.decision is not None:
            traffic._headers(call, buckets, admitted.decision)
        if admitted.ok:
            break
        assert admitted.decision is not None
        await traffic.refused(call, admitted.decision, deadline)
    for (window, amount), held in zip(holds, admitted.holds, strict=True):
        call.budget_hold = amount
        call.hold(partial(_settle, relay, call, joint, window, held, amount))
    if buckets:
        charge.charged = True
        call.hold(charge)
    return None


def _settle(relay: Relay, call: Call, joint: RedisAdmission, window: Window, held: Held, amount: Decimal) -> None:
    """A hold's release: its cost (final by now) replaces it, with the other give-backs."""
    call.budget_hold = Decimal(0)
    joint.settle(window, held, amount, call.cost, partial(_settled, relay, window))


def _settled(relay: Relay, window: Window, spent: Any) -> None:
    if spent is None:
        logger.debug("budget not settled (its hold stays counted)")
        return
    relay.alerts.crossed(relay, window, from_pico(spent[0]), from_pico(spent[1]))
