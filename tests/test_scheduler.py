"""The concurrency gate: caps, the bounded queue, priority order and the no-starvation bound."""

from __future__ import annotations

import asyncio

import pytest

from asgi_ai_relay.scheduler import LEVELS, WEIGHTS, Gate, QueueFull

W = sum(WEIGHTS)


async def settle():
    for _ in range(5):
        await asyncio.sleep(0)


async def test_free_slots_need_no_wait_and_caps_hold():
    gate = Gate(max_in_flight=2, per_provider=1)
    assert gate.try_enter("a")
    assert not gate.try_enter("a")  # provider cap
    assert gate.try_enter("b")
    assert not gate.try_enter("c")  # global cap
    gate.leave("a")
    assert gate.try_enter("c")
    assert gate.in_flight == 2 and gate.by_provider == {"b": 1, "c": 1}


async def test_queue_is_bounded():
    gate = Gate(max_in_flight=1, max_queue=2)
    assert gate.try_enter("p")
    waiters = [asyncio.ensure_future(gate.enter("p", 2)) for _ in range(2)]
    await settle()
    with pytest.raises(QueueFull):
        await gate.enter("p", 0)
    assert gate.waiting == 2
    gate.leave("p")
    await settle()
    assert waiters[0].done() and not waiters[1].done()
    waiters[1].cancel()
    await settle()
    assert gate.waiting == 0


async def test_cancelled_waiter_leaves_at_once_and_a_granted_one_passes_its_slot_on():
    gate = Gate(max_in_flight=1)
    gate.try_enter("p")
    first = asyncio.ensure_future(gate.enter("p", 2))
    second = asyncio.ensure_future(gate.enter("p", 2))
    await settle()
    first.cancel()
    await settle()
    assert gate.waiting == 1
    # Granted and cancelled in the same loop turn: the slot must reach the next waiter.
    third = asyncio.ensure_future(gate.enter("p", 3))
    await settle()
    gate.leave("p")
    second.cancel()
    await settle()
    assert third.done() and not third.cancelled()
    assert gate.in_flight == 1 and gate.waiting == 0


async def test_waiter_blocked_by_its_provider_cap_does_not_block_others():
    gate = Gate(max_in_flight=3, per_provider=1)
    gate.try_enter("busy")
    blocked = asyncio.ensure_future(gate.enter("busy", 0))
    await settle()
    other = asyncio.ensure_future(gate.enter("idle", 3))
    await settle()
    assert other.done() and not blocked.done()
    gate.leave("busy")
    await settle()
    assert blocked.done()


async def dispatch_order(gate: Gate, load: dict[int, int]) -> list[int]:
    """Queue ``load[level]`` waiters per level behind one held slot, then serve them one by one."""
    assert gate.try_enter("p")
    order: list[int] = []

    async def one(level: int):
        await gate.enter("p", level)
        order.append(level)

    tasks = [asyncio.ensure_future(one(level)) for level, count in load.items() for _ in range(count)]
    await settle()
    assert gate.waiting == sum(load.values())
    gate.leave("p")
    while len(order) < len(tasks):
        await settle()
        gate.leave("p")
    await asyncio.gather(*tasks)
    return order


async def test_priority_order_over_a_mixed_load():
    # Arrival order is low-first, so any order we see comes from the schedule.
    order = await dispatch_order(Gate(max_in_flight=1), {3: 40, 2: 40, 1: 40, 0: 40})
    # Critical goes first: the first round is critical x8, high x4, normal x2, low x1.
    assert order[:W] == [0] * 8 + [1] * 4 + [2] * 2 + [3]
    # While every level waits, each gets exactly its weight of every round of W dispatches.
    for start in range(0, 4 * W, W):
        window = order[start:start + W]
        assert [window.count(level) for level in range(4)] == list(WEIGHTS)


@pytest.mark.parametrize("load", [{3: 40, 0: 200}, {3: 20, 2: 50, 1: 80, 0: 120}, {2: 30, 0: 100, 1: 5}])
async def test_no_level_starves(load):
    order = await dispatch_order(Gate(max_in_flight=1), load)
    assert sorted(order) == sorted(level for level, n in load.items() for _ in range(n))
    # The stated guarantee: the head of a waiting level is served within W - w(L) dispatches of
    # other levels, from the start and between any two of its own dispatches.
    for level in load:
        last_served = -1
        served = 0
        for position, got in enumerate(order):
            if got == level:
                assert position - last_served - 1 <= W - WEIGHTS[level], (LEVELS[level], position)
                last_served = position
                served += 1
                if served == load[level]:
                    break
