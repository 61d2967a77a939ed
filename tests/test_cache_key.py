"""What the cache key covers: the endpoint and its wire format, the forwarded headers that change
the answer, the model that produced the answer (never a fallback's answer under the primary's key)."""

from __future__ import annotations

import asyncio

import orjson

from asgi_ai_relay import RelayRequest
from asgi_ai_relay.stages import cache as cache_stage
from tests.conftest import make_config
from tests.fake_upstream import Fault
from tests.relay_calls import GatedTransport, chat, relays, until  # noqa: F401 - fixture

# Valid both as an OpenAI Chat Completions body and as an Anthropic Messages body.
BODY = {"model": "test-model", "max_tokens": 64, "temperature": 0, "messages": [{"role": "user", "content": "Which format am I?"}]}


async def messages(relay, body, headers=None):
    sent = {"content-type": "application/json", **(headers or {})}
    return await relay.handle(RelayRequest("POST", "/v1/messages", sent, orjson.dumps(body)))


async def test_the_same_body_on_two_endpoints_never_shares_an_entry(upstream, relays):
    relay = relays(make_config(upstream))
    openai_answer = await chat(relay, BODY)
    anthropic_answer = await messages(relay, BODY)
    assert openai_answer.status == anthropic_answer.status == 200
    assert anthropic_answer.headers["x-relay-cache"] == "miss"
    assert orjson.loads(anthropic_answer.body)["type"] == "message"  # Anthropic's shape, not OpenAI's
    assert orjson.loads(openai_answer.body)["object"] == "chat.completion"
    # each endpoint hits its own entry
    assert (await messages(relay, BODY)).body == anthropic_answer.body
    assert (await chat(relay, BODY)).body == openai_answer.body
    assert len(upstream.requests) == 2


def _anthropic_config(upstream):
    config = make_config(upstream)
    config["providers"]["an"] = {"kind": "anthropic", "base_url": f"{upstream.url}/v1", "api_key": "env:TEST_UPSTREAM_KEY"}
    config["models"]["claude"] = {"provider": "an", "upstream": "claude-sonnet-4-5", "price": {"input": 3, "output": 15}}
    return config


async def test_forwarded_headers_are_part_of_the_key(upstream, relays):
    relay = relays(_anthropic_config(upstream))
    body = {**BODY, "model": "claude"}
    plain = await messages(relay, body, {"anthropic-version": "2023-06-01"})
    beta = await messages(relay, body, {"anthropic-version": "2023-06-01", "anthropic-beta": "tools-2024-04-04"})
    other_version = await messages(relay, body, {"anthropic-version": "2024-01-01"})
    assert [r.headers["x-relay-cache"] for r in (plain, beta, other_version)] == ["miss"] * 3
    assert upstream.requests[1].headers["anthropic-beta"] == "tools-2024-04-04"  # it reached the provider
    again = await messages(relay, body, {"anthropic-version": "2023-06-01", "anthropic-beta": "tools-2024-04-04"})
    assert again.headers["x-relay-cache"] == "hit" and len(upstream.requests) == 3
    # a header no translation forwards to this provider changes nothing
    openai_model = await chat(relay, BODY, {"anthropic-beta": "tools-2024-04-04"})
    assert openai_model.headers["x-relay-cache"] == "miss"
    assert (await chat(relay, BODY)).headers["x-relay-cache"] == "hit"


def _fallback_config(upstream):
    config = make_config(upstream, retry={"max_attempts": 1})
    config["models"]["test-model"]["fallbacks"] = ["backup"]
    config["models"]["backup"] = {"provider": "up", "upstream": "gpt-4o", "price": {"input": 5, "output": 15}}
    return config


async def test_a_fallback_answer_is_not_stored_under_the_primary(upstream, relays):
    relay = relays(_fallback_config(upstream))
    upstream.script(Fault.status(500))  # the primary fails once
    first = await chat(relay, BODY)
    assert first.status == 200 and first.headers["x-relay-model"] == "backup"
    second = await chat(relay, BODY)
    assert second.headers["x-relay-cache"] == "miss" and second.headers["x-relay-model"] == "test-model"
    third = await chat(relay, BODY)  # the primary's own answer is stored
    assert third.headers["x-relay-cache"] == "hit" and third.body == second.body
    assert [r.json["model"] for r in upstream.requests] == ["gpt-4o-mini", "gpt-4o", "gpt-4o-mini"]
    assert relay.flights == {}


async def test_followers_of_a_leader_that_fell_back_take_its_answer_unstored(upstream, relays):
    gate = GatedTransport()
    relay = relays(_fallback_config(upstream), transport=gate)
    upstream.script(Fault.status(500))
    tasks = [asyncio.create_task(chat(relay, BODY)) for _ in range(4)]
    await until(lambda: gate.arrived == 1 and sum(len(f._callbacks) for f in relay.flights.values()) == 3)
    gate.gate.set()
    answers = await asyncio.gather(*tasks)
    assert {a.headers["x-relay-model"] for a in answers} == {"backup"}
    assert len({a.body for a in answers}) == 1
    assert sorted(a.headers["x-relay-cache"] for a in answers) == ["hit", "hit", "hit", "miss"]
    assert len(upstream.requests) == 2 and relay.flights == {}
    rows = relay.ledger.rows()
    assert {r.model for r in rows} == {"backup"}  # each follower's row names the model that answered
    assert (await chat(relay, BODY)).headers["x-relay-cache"] == "miss"


async def test_the_key_names_its_schema_version(upstream, relays):
    relay = relays(make_config(upstream))
    await chat(relay, BODY)
    old = cache_stage.KEY_VERSION
    try:
        cache_stage.KEY_VERSION = old + 1
        assert (await chat(relay, BODY)).headers["x-relay-cache"] == "miss"
    finally:
        cache_stage.KEY_VERSION = old
    assert (await chat(relay, BODY)).headers["x-relay-cache"] == "hit"


async def test_a_refresh_that_fell_back_leaves_the_primary_entry_alone(upstream, relays):
    relay = relays(_fallback_config(upstream))
    stored = await chat(relay, BODY)
    upstream.script(Fault.status(500))
    refreshed = await chat(relay, BODY, {"cache-control": "no-cache"})
    assert refreshed.headers["x-relay-model"] == "backup" and refreshed.body != stored.body
    again = await chat(relay, BODY)
    assert again.headers["x-relay-cache"] == "hit" and again.body == stored.body


#: The keys of three known requests: a stored entry stays readable only while its key is made
#: byte-for-byte the same way (a deliberate change bumps ``KEY_VERSION`` and these with it).
PINNED_KEYS = [
    "3f4e9f0bce862a40aef62706dc78fcc8b9622a47119cb7ccde5ceec3f267a4aa",
    "50a6ff6adef5929d749652e90c61e52accd8fdae333b3cf468f42666fc851269",
    "5da5e7ed8cdb83fdc638f6c83804e5c362a73479ae7bc9f1df75486a595335d7",
]


async def test_the_keys_of_known_requests_do_not_change(upstream, relays):
    relay = relays(_anthropic_config(upstream))
    await chat(relay, BODY)
    await chat(relay, {**BODY, "stream": True, "stream_options": {"include_usage": True}, "user": "u-1"})
    await messages(relay, {**BODY, "model": "claude"}, {"anthropic-version": "2023-06-01", "anthropic-beta": "b-1"})
    assert list(relay.cache._entries) == PINNED_KEYS
