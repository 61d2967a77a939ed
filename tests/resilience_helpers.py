"""Shared pieces of the routing/resilience tests: a second fake provider, a hand-driven clock,
a sleep that records its waits, and a relay wired to both providers."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest

from asgi_ai_relay import Relay, RelayMiddleware
from tests.conftest import UPSTREAM_KEY
from tests.fake_upstream import FakeUpstream

MESSAGES = [{"role": "user", "content": "Hello relay world"}]


class Clock:
    """Seconds that move only when the test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Sleeps:
    """An injectable ``sleep`` that records every wait and returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture(scope="session")
def _second_server() -> Iterator[FakeUpstream]:
    with FakeUpstream(api_key=UPSTREAM_KEY) as server:
        yield server


@pytest.fixture
def second(_second_server: FakeUpstream) -> Iterator[FakeUpstream]:
    """A second, independent fake provider (another company, another region)."""
    _second_server.reset()
    if not _second_server.running:
        _second_server.start()
    yield _second_server
    _second_server.reset()


#: The relays ``build_relay`` made during the running test (while ``_shutdown_relays`` is active).
_built: list[list[Relay]] = []


@pytest.fixture(autouse=True)
async def _shutdown_relays() -> AsyncIterator[None]:
    """Shut down every relay ``build_relay`` made during the test, in the test's own event loop
    (its pooled upstream client belongs to that loop). Import it into modules using ``build_relay``."""
    relays: list[Relay] = []
    _built.append(relays)
    try:
        yield
    finally:
        _built.remove(relays)
        for relay in relays:
            await relay.shutdown()


def provider(server: FakeUpstream) -> dict[str, Any]:
    return {"kind": "openai_compatible", "base_url": f"{server.url}/v1", "api_key": "env:TEST_UPSTREAM_KEY"}


def build_relay(
    upstream: FakeUpstream,
    second: FakeUpstream | None = None,
    *,
    retry: dict[str, Any] | None = None,
    breaker: dict[str, Any] | None = None,
    models: dict[str, Any] | None = None,
    **extra: Any,
) -> tuple[Relay, Clock, Sleeps]:
    """``test-model`` on ``up`` falling back to ``backup`` (``gpt-4o`` on ``up2``)."""
    config: dict[str, Any] = {
        "storage": {"ledger": "memory://"},
        "default_models": False,
        "providers": {"up": provider(upstream)},
        "models": {"test-model": {"provider": "up", "upstream": "gpt-4o-mini", "price": {"input": 2.5, "output": 10}}},
        "retry": {"max_attempts": 2, "base_delay": 0.5, "max_delay": 4, "deadline": 30, **(retry or {})},
        "breaker": {"failure_threshold": 3, "window": 60, "cooldown": 30, **(breaker or {})},
        **extra,
    }
    if second is not None:
        config["providers"]["up2"] = provider(second)
        config["models"]["backup"] = {"provider": "up2", "upstream": "gpt-4o", "price": {"input": 5, "output": 15}}
        config["models"]["test-model"]["fallbacks"] = ["backup"]
    for alias, table in (models or {}).items():
        config["models"][alias] = {**config["models"].get(alias, {}), **table}
    relay = Relay(config)
    clock, sleeps = Clock(), Sleeps()
    relay.router.clock = clock
    relay.router.sleep = sleeps
    relay.router.rng = random.Random(1234)
    if _built:
        _built[-1].append(relay)
    return relay, clock, sleeps


def client(relay: Relay) -> httpx.AsyncClient:
    app = RelayMiddleware(relay=relay)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://host", timeout=30)


async def chat(relay: Relay, model: str = "test-model", **body: Any) -> httpx.Response:
    async with client(relay) as http:
        return await http.post("/ai/v1/chat/completions", json={"model": model, "messages": MESSAGES, **body})


def attempts_of(relay: Relay) -> list[list[dict[str, Any]]]:
    return [orjson.loads(row.attempt_log) if row.attempt_log else [] for row in relay.ledger.rows()]


def sse_events(body: bytes) -> list[Any]:
    events = []
    for block in body.decode().split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: "):
                data = line[6:]
                events.append(data if data == "[DONE]" else orjson.loads(data))
    return events
