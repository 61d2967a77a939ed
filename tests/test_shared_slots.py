"""Concurrency caps across processes (``storage.slots = "redis://..."``): two relays on one
Redis share one ``per_provider`` cap; a slot comes back however its request ends."""

from __future__ import annotations

import asyncio
import uuid

import orjson

from asgi_ai_relay import RelayRequest
from tests.fake_upstream import Fault
from tests.relay_calls import relays  # noqa: F401 - fixture
from tests.resilience_helpers import MESSAGES, build_relay, _shutdown_relays  # noqa: F401


def _pair(upstream, redis_url, **queue):
    uri = f"{redis_url}?prefix=slots-{uuid.uuid4().hex[:8]}&timeout=2"
    made = [build_relay(upstream, storage={"ledger": "memory://", "slots": uri},
                        queue={"per_provider": 1, "max_wait": 0.3, **queue})[0] for _ in range(2)]
    return made


async def _post(relay, stream=False):
    body = {"model": "test-model", "messages": MESSAGES, "stream": stream}
    return await relay.handle(RelayRequest("POST", "/v1/chat/completions", {"content-type": "application/json"},
                                           orjson.dumps(body)))


async def test_one_provider_slot_across_two_relays(upstream, redis_url):
    first, second = _pair(upstream, redis_url)
    upstream.script(Fault.stream_stall(after_chunks=2, seconds=5))
    held = await _post(first, stream=True)  # holds the provider's one shared slot
    assert held.status == 200
    refused = await _post(second)
    assert refused.status == 503 and orjson.loads(refused.body)["error"]["code"] == "queue_timeout"
    await held.stream.aclose()  # type: ignore[union-attr]
    await first.traffic.shared.aclose()  # type: ignore[union-attr]  (waits for the release)
    served = await _post(second)
    assert served.status == 200
    leases = second.traffic.shared.leases  # type: ignore[union-attr]
    await second.traffic.settle()
    await asyncio.gather(*list(second.traffic.shared._pending), return_exceptions=True)  # type: ignore[union-attr]
    assert await leases.holders("provider:up") == 0


async def test_a_request_cancelled_while_waiting_for_a_shared_slot_leaves_none(upstream, redis_url):
    first, second = _pair(upstream, redis_url, max_wait=5)
    upstream.script(Fault.stream_stall(after_chunks=2, seconds=5))
    held = await _post(first, stream=True)
    waiting = asyncio.ensure_future(_post(second))
    await asyncio.sleep(0.1)  # it polls for the slot
    waiting.cancel()
    try:
        await waiting
    except asyncio.CancelledError:
        pass
    await held.stream.aclose()  # type: ignore[union-attr]
    for relay in (first, second):
        shared = relay.traffic.shared
        await asyncio.gather(*list(shared._pending), return_exceptions=True)  # type: ignore[union-attr]
    assert await second.traffic.shared.leases.holders("provider:up") == 0  # type: ignore[union-attr]
    assert (await _post(second)).status == 200
