"""Conversation affinity: a session stays on the deployment that served it while that one is
healthy; sessions and requests without one are balanced by the strategy."""

from __future__ import annotations

import random

import orjson
import pytest

from asgi_ai_relay import Relay, RelayRequest
from asgi_ai_relay.affinity import Affinity
from asgi_ai_relay.config import ConfigurationError, load_config
from tests.conftest import make_config
from tests.fake_upstream import Fault
from tests.relay_calls import chat

BODY = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}


def two_deployments(upstream, **routing):
    up = {"kind": "openai_compatible", "base_url": f"{upstream.url}/v1", "api_key": "env:TEST_UPSTREAM_KEY"}
    config = make_config(
        upstream, providers={"one": up, "two": up}, retry={"max_attempts": 2, "base_delay": 0.01},
        models={"m": {"deployments": [{"provider": "one", "upstream": "gpt-4o-mini"}, {"provider": "two", "upstream": "gpt-4o"}]}},
        routing=routing,
    )
    relay = Relay(config)
    relay.router.rng = random.Random(7)
    return relay


async def providers(relay, headers=None, body=BODY, count=12):
    served = []
    for _ in range(count):
        answer = await chat(relay, body, headers)
        assert answer.status == 200
        served.append(answer.headers["x-relay-provider"])
    return served


async def test_a_session_stays_on_one_deployment_and_others_are_balanced(upstream):
    relay = two_deployments(upstream)
    alone = await providers(relay)
    assert set(alone) == {"one", "two"}  # no session: the strategy spreads them
    claude = await providers(relay, {"x-claude-code-session-id": "s-1"})
    assert len(set(claude)) == 1
    by_user = await providers(relay, body={**BODY, "user": "ada"})
    assert len(set(by_user)) == 1
    sessions = [(await providers(relay, {"x-claude-code-session-id": f"s-{i}"}, count=1))[0] for i in range(2, 14)]
    assert set(sessions) == {"one", "two"}  # new sessions are balanced too
    await relay.shutdown()


async def test_a_failed_pin_moves_to_the_deployment_that_served(upstream):
    relay = two_deployments(upstream)
    headers = {"x-claude-code-session-id": "s-9"}
    (first,) = await providers(relay, headers, count=1)
    upstream.script(Fault.status(500))  # the pinned deployment fails once; the other one serves
    answer = await chat(relay, BODY, headers)
    assert answer.status == 200 and answer.headers["x-relay-attempts"] == "2"
    moved = answer.headers["x-relay-provider"]
    assert moved != first
    assert set(await providers(relay, headers, count=5)) == {moved}
    await relay.shutdown()


async def test_configured_header_and_switch(upstream):
    relay = two_deployments(upstream, session_headers=["X-Team-Session"])
    assert len(set(await providers(relay, {"x-team-session": "t-1"}))) == 1
    await relay.shutdown()
    off = two_deployments(upstream, affinity=False)
    assert off.router.affinity is None
    assert set(await providers(off, {"x-claude-code-session-id": "s-1"})) == {"one", "two"}
    await off.shutdown()


async def test_a_responses_chain_stays_where_it_started(upstream):
    relay = two_deployments(upstream)
    previous, served = None, []
    for turn in range(8):
        body = {"model": "m", "input": f"turn {turn}", **({"previous_response_id": previous} if previous else {})}
        answer = await relay.handle(RelayRequest("POST", "/v1/responses", {"content-type": "application/json"}, orjson.dumps(body)))
        assert answer.status == 200
        previous = orjson.loads(answer.body)["id"]
        served.append(answer.headers["x-relay-provider"])
    assert len(set(served)) == 1
    await relay.shutdown()


def test_pins_expire_and_are_bounded():
    now = [0.0]
    pins = Affinity(ttl=10, clock=lambda: now[0], size=2)
    pins.pin("m", "a", "one")
    pins.pin("m", "b", "two")
    pins.pin("m", "c", "one")
    assert len(pins) == 2 and pins.pinned("m", "a") is None and pins.pinned("m", "b") == "two"
    now[0] = 11
    assert pins.pinned("m", "c") is None


def test_bad_affinity_config_names_the_key():
    with pytest.raises(ConfigurationError, match="routing.session_headers"):
        load_config({"routing": {"session_headers": [1]}})
