"""Drive a Relay in-process: the same RelayRequest every adapter builds, no HTTP in between."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import orjson

from asgi_ai_relay import Relay, RelayRequest, RelayResponse


async def chat(relay: Relay, body: dict, headers: dict | None = None, key: str | None = None) -> RelayResponse:
    sent = {"content-type": "application/json", **(headers or {})}
    if key is not None:
        sent["authorization"] = f"Bearer {key}"
    return await relay.handle(RelayRequest("POST", "/v1/chat/completions", sent, orjson.dumps(body)))


async def get(relay: Relay, path: str, query: str = "", key: str | None = None) -> RelayResponse:
    headers = {"authorization": f"Bearer {key}"} if key is not None else {}
    return await relay.handle(RelayRequest("GET", path, headers, query=query))


async def pieces(response: RelayResponse) -> list[bytes]:
    """Every piece a streamed answer yields, in order (and the stream closed, as adapters do)."""
    assert response.stream is not None
    out = [piece async for piece in response.stream]
    await response.stream.aclose()  # type: ignore[attr-defined]
    return out


class GatedTransport(httpx.AsyncBaseTransport):
    """A real HTTP transport that holds every request until ``gate`` is set, so a test can
    line up concurrent requests behind one that is in flight."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.gate = asyncio.Event()
        self.arrived = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.arrived += 1
        await asyncio.wait_for(self.gate.wait(), 10)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def until(predicate, timeout: float = 5.0) -> None:
    """Wait (bounded) until ``predicate()`` holds, yielding to the loop in between."""

    async def wait() -> None:
        while not predicate():
            await asyncio.sleep(0.001)

    await asyncio.wait_for(wait(), timeout)


@pytest.fixture
async def relays():
    """``relays(config, **options)`` builds a Relay that is shut down after the test (its
    upstream session closed, its ledger flushed)."""
    made: list[Relay] = []

    def build(*args, **kwargs) -> Relay:
        relay = Relay(*args, **kwargs)
        made.append(relay)
        return relay

    yield build
    for relay in made:
        await relay.shutdown()
