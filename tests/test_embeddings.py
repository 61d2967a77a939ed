"""``POST /v1/embeddings`` through the relay, against the fake upstream's OpenAI and Gemini
embeddings routes (real HTTP servers on 127.0.0.1), with the official ``openai`` SDK."""

from __future__ import annotations

import base64
import struct
from decimal import Decimal

import openai
import orjson
import pytest
from starlette.applications import Starlette

from asgi_ai_relay import ConfigurationError, Relay, RelayMiddleware, RelayRequest
from asgi_ai_relay.tokens import text_tokens
from tests.fake_embeddings import fake_base64, fake_vector
from tests.live import LiveServer

PRICE = {"oa": Decimal("0.02"), "ge": Decimal("0.15")}


def config(upstream, **extra):
    key = "env:TEST_UPSTREAM_KEY"
    return {
        "storage": {"ledger": "memory://"},
        "providers": {
            "oa": {"kind": "openai_compatible", "base_url": f"{upstream.url}/v1", "api_key": key},
            "ge": {"kind": "gemini", "base_url": f"{upstream.url}/v1beta", "api_key": key},
            "an": {"kind": "anthropic", "base_url": f"{upstream.url}/v1", "api_key": key},
        },
        "models": {
            "emb-oa": {"provider": "oa", "upstream": "text-embedding-3-small", "kind": "embedding", "dimensions": 8,
                       "price": {"input": "0.02"}},
            "emb-ge": {"provider": "ge", "upstream": "gemini-embedding-001", "kind": "embedding", "dimensions": 8,
                       "price": {"input": "0.15"}},
            "emb-an": {"provider": "an", "upstream": "claude-sonnet-4-5", "kind": "embedding", "dimensions": 8},
            "chat-oa": {"provider": "oa", "upstream": "gpt-4o-mini"},
        },
        "retry": {"max_attempts": 1},
        **extra,
    }


@pytest.fixture
async def relay(upstream):
    relay = Relay(config(upstream))
    yield relay
    await relay.shutdown()


@pytest.fixture
def client(relay):
    with LiveServer(RelayMiddleware(Starlette(), relay=relay)) as live:
        yield openai.OpenAI(base_url=f"{live.url}/ai/v1", api_key="client-key", max_retries=0)


async def embed(relay, body, headers=None):
    sent = {"content-type": "application/json", **(headers or {})}
    return await relay.handle(RelayRequest("POST", "/v1/embeddings", sent, orjson.dumps(body)))


def cost(tokens, provider):
    return Decimal(tokens) * PRICE[provider] / 10**6


def test_sdk_floats_many_inputs_usage_and_exact_cost(client, relay, upstream):
    texts = ["the quick brown fox", "jumps", "over the dog"]
    answer = client.embeddings.create(model="emb-oa", input=texts, encoding_format="float")
    assert [d.embedding for d in answer.data] == [fake_vector(t) for t in texts]
    assert [d.index for d in answer.data] == [0, 1, 2]
    assert answer.usage.prompt_tokens == answer.usage.total_tokens == 8
    [sent] = upstream.requests
    assert sent.path == "/v1/embeddings" and sent.json["model"] == "text-embedding-3-small"
    assert sent.json["input"] == texts
    [row] = relay.ledger.rows()
    assert (row.endpoint, row.model, row.provider, row.status) == ("embeddings", "emb-oa", "oa", 200)
    assert (row.prompt_tokens, row.completion_tokens, row.cost_usd) == (8, 0, cost(8, "oa"))
    assert not row.estimated


def test_sdk_base64_is_passed_through_byte_exact(client, upstream):
    # The SDK asks for base64 by default and decodes it itself.
    answer = client.embeddings.create(model="emb-oa", input="one text", dimensions=4)
    assert answer.data[0].embedding == fake_vector("one text", 4)
    assert upstream.requests[0].json["encoding_format"] == "base64"
    assert upstream.requests[0].json["dimensions"] == 4
    raw = client.embeddings.with_raw_response.create(model="emb-oa", input="other text", encoding_format="base64")
    assert orjson.loads(raw.http_response.content)["data"][0]["embedding"] == fake_base64("other text")
    assert raw.headers["x-relay-cache"] == "miss"


async def test_token_arrays_go_upstream_as_given(relay, upstream):
    answer = await embed(relay, {"model": "emb-oa", "input": [[1, 2, 3], [4, 5]], "encoding_format": "float"})
    assert answer.status == 200
    assert upstream.requests[0].json["input"] == [[1, 2, 3], [4, 5]]
    body = orjson.loads(answer.body)
    assert [d["embedding"] for d in body["data"]] == [fake_vector("1 2 3"), fake_vector("4 5")]
    assert body["usage"] == {"prompt_tokens": 5, "total_tokens": 5}


def test_gemini_is_translated_both_ways(client, relay, upstream):
    texts = ["hello world", "a document about relays"]
    answer = client.embeddings.create(model="emb-ge", input=texts, dimensions=4,
                                      extra_body={"task_type": "RETRIEVAL_DOCUMENT"})
    # Gemini sends floats; the relay encodes the base64 the SDK asked for.
    assert [d.embedding for d in answer.data] == [fake_vector(t, 4) for t in texts]
    [sent] = upstream.requests
    assert sent.path == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert sent.json == {"requests": [
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": t}]},
         "outputDimensionality": 4, "taskType": "RETRIEVAL_DOCUMENT"} for t in texts]}
    estimate = sum(text_tokens(t) for t in texts)  # Gemini reports no token counts
    assert answer.usage.prompt_tokens == estimate
    [row] = relay.ledger.rows()
    assert (row.endpoint, row.provider, row.prompt_tokens, row.estimated) == ("embeddings", "ge", estimate, True)
    assert row.cost_usd == cost(estimate, "ge")


async def test_gemini_refuses_token_arrays(relay, upstream):
    answer = await embed(relay, {"model": "emb-ge", "input": [[1, 2]]})
    assert answer.status == 400
    assert "'ge'" in orjson.loads(answer.body)["error"]["message"]
    assert upstream.requests == []


async def test_provider_without_embeddings_is_a_clear_400(relay, upstream, client):
    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model="emb-an", input="x")
    error = refused.value.body
    assert error["code"] == "unsupported_endpoint" and error["param"] == "model"
    assert "'an'" in error["message"] and "anthropic" in error["message"]
    answer = await embed(relay, {"model": "chat-oa", "input": "x"})
    assert answer.status == 400 and orjson.loads(answer.body)["error"]["code"] == "not_an_embedding_model"
    assert upstream.requests == []
    assert [(r.endpoint, r.status) for r in relay.ledger.rows()] == [("embeddings", 400)] * 2


@pytest.mark.parametrize("body, param", [
    ({"model": "emb-oa"}, "input"),
    ({"model": "emb-oa", "input": []}, "input"),
    ({"model": "emb-oa", "input": [1, "a"]}, "input"),
    ({"model": "emb-oa", "input": ""}, "input"),
    ({"model": "emb-oa", "input": "a", "encoding_format": "hex"}, "encoding_format"),
    ({"model": "emb-oa", "input": "a", "dimensions": 0}, "dimensions"),
    ({"model": "emb-oa", "input": "a", "dimensions": 9}, "dimensions"),  # the model has 8
    ({"model": "emb-oa", "input": "a", "dimensions": 10**9}, "dimensions"),
])
async def test_malformed_requests_are_refused(relay, upstream, body, param):
    answer = await embed(relay, body)
    assert answer.status == 400 and orjson.loads(answer.body)["error"]["param"] == param
    assert upstream.requests == []


async def test_a_partial_hit_sends_only_the_new_items_and_keeps_the_order(relay, upstream):
    first = await embed(relay, {"model": "emb-oa", "input": ["alpha", "beta"], "encoding_format": "float"})
    assert first.headers["x-relay-cache"] == "miss"
    batch = ["gamma", "alpha", "delta", "beta"]
    second = await embed(relay, {"model": "emb-oa", "input": batch, "encoding_format": "float"})
    assert second.headers["x-relay-cache"] == "partial"
    assert upstream.requests[1].json["input"] == ["gamma", "delta"]
    body = orjson.loads(second.body)
    assert [d["embedding"] for d in body["data"]] == [fake_vector(t) for t in batch]
    assert [d["index"] for d in body["data"]] == [0, 1, 2, 3]
    assert body["usage"]["prompt_tokens"] == 4
    third = await embed(relay, {"model": "emb-oa", "input": batch, "encoding_format": "float"})
    assert third.headers["x-relay-cache"] == "hit" and len(upstream.requests) == 2
    assert orjson.loads(third.body)["data"] == body["data"]
    rows = relay.ledger.rows()
    assert [(r.prompt_tokens, r.cost_usd, r.cache_saved_usd, r.cache_hit) for r in rows] == [
        (2, cost(2, "oa"), 0, False), (2, cost(2, "oa"), cost(2, "oa"), False), (4, 0, cost(4, "oa"), True)]


async def test_cache_entries_name_dimensions_and_encoding(relay, upstream):
    await embed(relay, {"model": "emb-oa", "input": "same"})
    for extra in ({"dimensions": 4}, {"encoding_format": "base64"}, {}):
        answer = await embed(relay, {"model": "emb-oa", "input": "same", **extra})
        assert answer.headers["x-relay-cache"] == ("hit" if not extra else "miss")
    assert len(upstream.requests) == 3
    b64 = orjson.loads((await embed(relay, {"model": "emb-oa", "input": "same", "encoding_format": "base64"})).body)
    assert b64["data"][0]["embedding"] == fake_base64("same")  # the upstream's text, from the cache


async def test_use_cache_false_and_cache_off_bypass(upstream):
    relay = Relay(config(upstream, cache={"mode": "off"}))
    for _ in range(2):
        assert (await embed(relay, {"model": "emb-oa", "input": "x"})).headers["x-relay-cache"] == "bypass"
    assert len(upstream.requests) == 2
    await relay.shutdown()


async def test_a_fallback_embeds_every_item_again(upstream):
    from tests.fake_upstream import Fault

    models = config(upstream)["models"]
    models["emb-oa"]["fallbacks"] = ["emb-oa2"]
    models["emb-oa2"] = {"provider": "oa", "upstream": "text-embedding-3-small-b", "kind": "embedding", "dimensions": 8}
    relay = Relay(config(upstream, models=models))
    await embed(relay, {"model": "emb-oa", "input": "cached"})
    upstream.script(Fault.status(500))
    answer = await embed(relay, {"model": "emb-oa", "input": ["cached", "new"]})
    assert answer.status == 200 and answer.headers["x-relay-model"] == "emb-oa2"
    # the vector cached under emb-oa is not mixed into another model's answer
    assert upstream.requests[-1].json["input"] == ["cached", "new"]
    assert upstream.requests[-1].json["model"] == "text-embedding-3-small-b"
    await relay.shutdown()


def test_fallbacks_must_have_the_same_dimensions(upstream):
    models = config(upstream)["models"]
    models["emb-oa"]["fallbacks"] = ["emb-ge"]
    models["emb-ge"]["dimensions"] = 16
    with pytest.raises(ConfigurationError, match="dimensions"):
        Relay(config(upstream, models=models))
    models["emb-ge"]["dimensions"] = 8
    models["emb-oa"]["fallbacks"] = ["chat-oa"]
    with pytest.raises(ConfigurationError, match="chat model"):
        Relay(config(upstream, models=models))


async def test_tpm_counts_input_tokens_and_budgets_refuse(upstream):
    from asgi_ai_relay.storage import MemoryRateLimits

    clock = type("Clock", (), {"__call__": lambda self: 1000.0})()
    relay = Relay(config(upstream, limits={"caller": {"tpm": 1000}}), limits_store=MemoryRateLimits(clock=clock))
    answer = await embed(relay, {"model": "emb-oa", "input": ["one two three", "four"]})
    estimate = text_tokens("one two three") + text_tokens("four")
    assert answer.status == 200
    # only the input is charged before the call (no output allowance), then the real count
    assert answer.headers["x-ratelimit-remaining-tokens"] == str(1000 - estimate)
    used = orjson.loads(answer.body)["usage"]["prompt_tokens"]
    answer = await embed(relay, {"model": "emb-oa", "input": "five"})
    assert answer.headers["x-ratelimit-remaining-tokens"] == str(1000 - used - text_tokens("five"))
    await relay.shutdown()
    broke = Relay(config(upstream, budgets={"default": {"daily": 0}}))
    refused = await embed(broke, {"model": "emb-oa", "input": "x"})
    assert refused.status == 429 and orjson.loads(refused.body)["error"]["code"] == "budget_exceeded"
    assert len(upstream.requests) == 2
    await broke.shutdown()


async def test_models_list_their_kind(relay):
    answer = await relay.handle(RelayRequest("GET", "/v1/models", {}))
    kinds = {m["id"]: (m["kind"], m.get("dimensions")) for m in orjson.loads(answer.body)["data"]}
    assert kinds["emb-oa"] == ("embedding", 8) and kinds["chat-oa"] == ("chat", None)
    assert kinds["text-embedding-3-small"] == ("embedding", 1536)


async def test_the_mock_provider_embeds_offline_and_deterministically():
    relay = Relay({"storage": {"ledger": "memory://"}, "cache": {"mode": "off"}})
    bodies = [{"model": "text-embedding-3-small", "input": ["a text", "another"], "encoding_format": "float"}] * 2
    first, second = [orjson.loads((await embed(relay, b)).body) for b in bodies]
    assert first["data"] == second["data"]
    vectors = [d["embedding"] for d in first["data"]]
    assert [len(v) for v in vectors] == [1536, 1536] and vectors[0] != vectors[1]
    assert all(abs(sum(x * x for x in v) - 1) < 1e-9 for v in vectors)
    small = orjson.loads((await embed(relay, {"model": "gemini-embedding-001", "input": "a", "dimensions": 3,
                                              "encoding_format": "base64"})).body)
    raw = base64.b64decode(small["data"][0]["embedding"])
    assert len(struct.unpack("<3f", raw)) == 3
    assert [r.endpoint for r in relay.ledger.rows()] == ["embeddings"] * 3
    await relay.shutdown()


async def test_chat_endpoints_refuse_an_embedding_model(relay, upstream):
    body = {"model": "emb-oa", "messages": [{"role": "user", "content": "hi"}]}
    answer = await relay.handle(RelayRequest("POST", "/v1/chat/completions", {}, orjson.dumps(body)))
    assert answer.status == 400 and orjson.loads(answer.body)["error"]["code"] == "not_a_chat_model"
    assert upstream.requests == []


@pytest.mark.redis
async def test_partial_hits_through_the_redis_cache(upstream, redis_url):
    import uuid

    relay = Relay(config(upstream, storage={"ledger": "memory://", "cache": f"{redis_url}?ttl=120&prefix=emb-{uuid.uuid4().hex}:"}))
    await embed(relay, {"model": "emb-oa", "input": ["red", "green"]})
    await relay.shutdown()  # the entries are written in the background; shutdown awaits them
    relay = Relay(relay.config)
    answer = await embed(relay, {"model": "emb-oa", "input": ["green", "blue", "red"], "encoding_format": "float"})
    assert answer.headers["x-relay-cache"] == "partial"
    assert upstream.requests[-1].json["input"] == ["blue"]
    assert [d["embedding"] for d in orjson.loads(answer.body)["data"]] == [fake_vector(t) for t in ("green", "blue", "red")]
    await relay.shutdown()


async def test_floats_from_a_provider_that_ignores_encoding_format_are_encoded(relay, upstream):
    from tests.fake_upstream import Fault

    body = {"object": "list", "model": "m", "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -0.25]}],
            "usage": {"prompt_tokens": 1, "total_tokens": 1}}
    upstream.script(Fault.raw(orjson.dumps(body)))
    answer = await embed(relay, {"model": "emb-oa", "input": "x", "encoding_format": "base64"})
    assert orjson.loads(answer.body)["data"][0]["embedding"] == base64.b64encode(struct.pack("<2f", 0.5, -0.25)).decode()


async def test_usage_api_reports_embeddings_like_any_model(relay, upstream):
    await embed(relay, {"model": "emb-oa", "input": ["one", "two words"]})
    await embed(relay, {"model": "emb-oa", "input": ["one", "two words"]})
    report = orjson.loads((await relay.handle(RelayRequest("GET", "/v1/usage", {}, query="group_by=model"))).body)
    (group,) = [g for g in report["groups"] if g["key"]["model"] == "emb-oa"]
    assert group["requests"] == 2 and group["cache_hits"] == 1
    assert Decimal(group["cost_usd"]) == cost(3, "oa") and Decimal(group["cache_saved_usd"]) == cost(3, "oa")


def test_flask_hosts_serve_embeddings(upstream):
    from flask import Flask

    from flask_ai_relay import AIRelay

    app = Flask("embeddings")
    app.config["AI_RELAY"] = config(upstream, require_auth=False)  # Flask hosts require a caller by default
    AIRelay(app)
    answer = app.test_client().post("/ai/v1/embeddings", json={"model": "emb-ge", "input": "from flask", "encoding_format": "float"})
    assert answer.status_code == 200
    assert answer.get_json()["data"][0]["embedding"] == fake_vector("from flask")
    assert upstream.requests[-1].path.endswith(":batchEmbedContents")


async def test_a_failed_attempt_is_retried(upstream):
    from tests.fake_upstream import Fault

    relay = Relay(config(upstream, retry={"max_attempts": 2, "base_delay": 0.01, "max_delay": 0.01}))
    upstream.script(Fault.status(503))
    answer = await embed(relay, {"model": "emb-oa", "input": "again"})
    assert answer.status == 200 and answer.headers["x-relay-attempts"] == "2"
    assert [r.json["input"] for r in upstream.requests] == ["again", "again"]
    [row] = relay.ledger.rows()
    assert (row.attempts, row.status, row.prompt_tokens) == (2, 200, 1)
    await relay.shutdown()


def _waiting(relay):
    return sum(len(getattr(f, "_callbacks", None) or ()) for f in relay.flights.values())


@pytest.mark.parametrize("leader_fails", [False, True])
async def test_items_in_flight_are_waited_for_only_by_requests_with_nothing_new(upstream, leader_fails):
    import asyncio

    from tests.fake_upstream import Fault
    from tests.relay_calls import GatedTransport, until

    gate = GatedTransport()
    relay = Relay(config(upstream, http={"client": "httpx"}), transport=gate)
    if leader_fails:
        upstream.script(Fault.status(400))
    body = {"encoding_format": "float", "model": "emb-oa"}
    lead = asyncio.create_task(embed(relay, {**body, "input": ["a", "b"]}))
    await until(lambda: gate.arrived == 1)
    follower = asyncio.create_task(embed(relay, {**body, "input": ["b"]}))
    await until(lambda: _waiting(relay) == 1)
    if leader_fails:  # the waiting request sends the item itself
        gate.gate.set()
        lead, follower = await asyncio.gather(lead, follower)
        assert lead.status == 400 and follower.headers["x-relay-cache"] == "miss"
        assert [r.json["input"] for r in upstream.requests] == [["a", "b"], ["b"]]
    else:
        own = asyncio.create_task(embed(relay, {**body, "input": ["a", "c"]}))  # something new: never waits
        await until(lambda: gate.arrived == 2)
        gate.gate.set()
        lead, follower, own = await asyncio.gather(lead, follower, own)
        assert own.headers["x-relay-cache"] == "miss" and follower.headers["x-relay-cache"] == "hit"
        assert sorted(r.json["input"] for r in upstream.requests) == [["a", "b"], ["a", "c"]]
        assert [r.cost_usd for r in relay.ledger.rows() if r.cache_hit] == [0]
    assert orjson.loads(follower.body)["data"][0]["embedding"] == fake_vector("b")
    assert relay.flights == {}
    await relay.shutdown()


async def test_the_budget_is_charged_the_real_cost(upstream):
    text = "one two three"
    held, spent = cost(text_tokens(text), "oa"), cost(3, "oa")  # estimate held, then 3 tokens reported
    limit = spent + held - Decimal("0.000000000001")  # room for one request, not a second
    relay = Relay(config(upstream, budgets={"default": {"daily": str(limit)}}))
    first = await embed(relay, {"model": "emb-oa", "input": text, "use_cache": False})
    second = await embed(relay, {"model": "emb-oa", "input": text, "use_cache": False})
    assert (first.status, second.status) == (200, 429)
    assert orjson.loads(second.body)["error"]["code"] == "budget_exceeded"
    assert len(upstream.requests) == 1
    await relay.shutdown()
