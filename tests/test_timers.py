"""The loop's deadlines (asgi_ai_relay.timers): ``within`` behaves as ``asyncio.timeout`` does,
entries fire in time order, disarmed ones never fire and never pile up."""

from __future__ import annotations

import asyncio

import pytest

from asgi_ai_relay.timers import Timers, timers_of, within, within_at

#: The longest any one step may take before the test fails.
WAIT = 2.0


async def test_within_turns_its_own_expiry_into_timeout_error():
    never = asyncio.get_running_loop().create_future()
    with pytest.raises(TimeoutError):
        with within(0.01):
            await never


async def test_within_passes_an_answer_that_comes_in_time_and_leaves_nothing_armed():
    timers = timers_of(asyncio.get_running_loop())
    fired_before = [entry for entry in timers.heap if entry[2] is not None]
    with within(WAIT):
        await asyncio.sleep(0)
    assert [entry for entry in timers.heap if entry[2] is not None] == fired_before


async def test_within_none_never_expires():
    with within(None) as scope:
        await asyncio.sleep(0.02)
    assert scope.entry is None and not scope.expired


async def test_an_outer_cancellation_stays_a_cancellation():
    started = asyncio.Event()

    async def body() -> None:
        with within(WAIT):
            started.set()
            await asyncio.get_running_loop().create_future()

    task = asyncio.create_task(body())
    await asyncio.wait_for(started.wait(), WAIT)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_a_cancellation_racing_the_expiry_stays_a_cancellation():
    """Expired and cancelled by someone else in the same turn: as asyncio.timeout, the caller's
    cancellation wins (the scope takes back only its own)."""
    loop = asyncio.get_running_loop()
    scopes = []

    async def body() -> None:
        with within_at(loop.time()) as scope:  # due at once: expires in the next turn
            scopes.append(scope)
            await loop.create_future()

    task = asyncio.create_task(body())
    await asyncio.sleep(0)  # the task enters its scope
    timers_of(loop)._fire()  # the scope expires: its task is cancelled ...
    task.cancel()  # ... and cancelled again by its owner before it runs
    with pytest.raises(asyncio.CancelledError):
        await task
    assert scopes[0].task is task


async def test_the_task_keeps_no_cancellation_after_its_scope_expired():
    never = asyncio.get_running_loop().create_future()
    with pytest.raises(TimeoutError):
        with within(0.01):
            await never
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0)  # and it can go on awaiting


async def test_within_outside_a_task_is_refused():
    loop = asyncio.get_running_loop()
    scope = within(1)
    result = loop.create_future()

    def enter() -> None:  # a plain callback: no task is running
        try:
            scope.__enter__()
        except RuntimeError:
            result.set_result("refused")
        else:
            result.set_result("entered")

    loop.call_soon(enter)
    assert await asyncio.wait_for(result, WAIT) == "refused"


async def test_entries_fire_in_time_order_and_disarmed_ones_never():
    loop = asyncio.get_running_loop()
    timers = Timers(loop)
    fired: list[str] = []
    done = asyncio.Event()
    now = loop.time()
    timers.at(now + 0.03, fired.append, "c")
    timers.at(now + 0.01, fired.append, "a")
    dropped = timers.at(now + 0.02, fired.append, "dropped")
    timers.at(now + 0.02, fired.append, "b")
    timers.at(now + 0.04, lambda _: done.set())
    timers.cancel(dropped)
    timers.cancel(dropped)  # twice: still one disarmed entry
    await asyncio.wait_for(done.wait(), WAIT)
    assert fired == ["a", "b", "c"]
    assert timers.heap == [] and timers.cleared == 0 and timers.handle is None


async def test_an_earlier_entry_rearms_the_loop_timer():
    loop = asyncio.get_running_loop()
    timers = Timers(loop)
    fired = asyncio.Event()
    timers.at(loop.time() + 600, print)
    assert timers.armed == pytest.approx(loop.time() + 600, abs=1)
    timers.at(loop.time() + 0.01, lambda _: fired.set())
    await asyncio.wait_for(fired.wait(), WAIT)  # not after 600 s
    assert timers.handle is not None and timers.armed > loop.time() + 500


async def test_a_failing_callback_does_not_stop_the_others():
    loop = asyncio.get_running_loop()
    timers = Timers(loop)
    seen: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    try:
        fired = asyncio.Event()
        when = loop.time() + 0.01
        timers.at(when, lambda _: 1 / 0)
        timers.at(when, lambda _: fired.set())
        await asyncio.wait_for(fired.wait(), WAIT)
    finally:
        loop.set_exception_handler(None)
    assert len(seen) == 1 and isinstance(seen[0]["exception"], ZeroDivisionError)


async def test_disarmed_entries_do_not_pile_up():
    """Ten thousand deadlines armed and disarmed, none due: the heap stays small and the one
    still armed still fires."""
    loop = asyncio.get_running_loop()
    timers = Timers(loop)
    fired = asyncio.Event()
    keep = timers.at(loop.time() + 0.05, lambda _: fired.set())
    biggest = 0
    for _ in range(10_000):
        timers.cancel(timers.at(loop.time() + 600, print))
        biggest = max(biggest, len(timers.heap))
    assert biggest <= 2 * 64 + 4
    assert keep[2] is not None
    await asyncio.wait_for(fired.wait(), WAIT)


async def test_the_last_disarm_of_a_compaction_stops_the_loop_timer():
    loop = asyncio.get_running_loop()
    timers = Timers(loop)
    entries = [timers.at(loop.time() + 600, print) for _ in range(65)]
    for entry in entries[:-1]:
        timers.cancel(entry)
    assert timers.handle is not None  # 64 disarmed: kept, the one left still armed
    timers.cancel(entries[-1])
    assert timers.heap == [] and timers.handle is None


async def test_an_entry_disarmed_at_the_top_leaves_at_once_with_the_cleared_ones_behind_it():
    loop = asyncio.get_running_loop()
    timers = Timers(loop)
    now = loop.time()
    entries = [timers.at(now + 600 + n, print) for n in range(4)]
    timers.cancel(entries[1])  # not the earliest: cleared, kept until it reaches the top
    assert len(timers.heap) == 4 and timers.cleared == 1
    timers.cancel(entries[0])  # the earliest: gone, and the cleared one that was next
    assert timers.heap == [entries[2], entries[3]] and timers.cleared == 0 and timers.handle is not None
    timers.cancel(entries[3])
    timers.cancel(entries[2])
    assert timers.heap == [] and timers.cleared == 0 and timers.handle is None
