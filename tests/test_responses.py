"""The OpenAI Responses API end to end: the official openai SDK (``client.responses``) -> uvicorn
-> relay -> the fake upstream speaking OpenAI, Anthropic and Gemini wire formats."""

from __future__ import annotations

import socket

import httpx
import openai
import orjson
import pytest
from starlette.applications import Starlette

from asgi_ai_relay import Relay, RelayMiddleware
from tests.fake_upstream import Fault, echo_reply, fake_tool_arguments, plan_reply
from tests.live import LiveServer
from tests.test_agent_clients import relay, server  # noqa: F401 - fixtures: a relay on a live server
from tests.test_formats_e2e import API, SCHEMA, assert_upstream_auth, config, cost

PROVIDERS = ["oa", "an", "ge"]
TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather", "parameters": SCHEMA}]
QUESTION = "Weather in Paris please"
EXPECTED_ARGS = fake_tool_arguments(SCHEMA, QUESTION)


@pytest.fixture
def gpt(server):
    return openai.OpenAI(base_url=f"{server.url}/ai/v1", api_key="client-secret-abc", max_retries=0)


def sent(upstream):
    request = upstream.last_request
    return request, plan_reply(request.json, request.api)


def echo(text):
    return echo_reply({"messages": [{"role": "user", "content": text}]}, "openai")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_whole_text_usage_cost_and_ledger(gpt, upstream, relay, provider):
    raw = gpt.responses.with_raw_response.create(model=f"m-{provider}", instructions="Be brief.", input=QUESTION,
                                                 max_output_tokens=100, temperature=0.5, metadata={"k": "v"})
    response = raw.parse()
    request, plan = sent(upstream)
    assert request.api == API[provider]
    assert_upstream_auth(request, provider)
    assert response.id.startswith("resp_") and response.status == "completed" and response.object == "response"
    assert response.output_text == echo(QUESTION)
    (item,) = response.output
    assert item.type == "message" and item.role == "assistant" and item.content[0].type == "output_text"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (plan.prompt_tokens, plan.completion_tokens)
    assert response.usage.total_tokens == plan.prompt_tokens + plan.completion_tokens
    assert response.usage.input_tokens_details.cached_tokens == 0
    assert response.usage.output_tokens_details.reasoning_tokens == 0
    assert float(raw.headers["x-relay-cost-usd"]) == pytest.approx(cost(plan.prompt_tokens, plan.completion_tokens))
    if provider == "oa":
        assert request.json["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION}]
        assert request.json["max_completion_tokens"] == 100 and request.json["temperature"] == 0.5
        assert "metadata" not in request.json and "input" not in request.json
    elif provider == "an":
        assert request.json["system"] == "Be brief." and request.json["max_tokens"] == 100
    (row,) = relay.ledger.rows()
    assert (row.endpoint, row.model, row.provider, row.status) == ("responses", f"m-{provider}", provider, 200)
    assert (row.prompt_tokens, row.completion_tokens) == (plan.prompt_tokens, plan.completion_tokens)
    assert float(row.cost_usd) == pytest.approx(cost(plan.prompt_tokens, plan.completion_tokens))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_stream_helper_assembles_text_and_usage(gpt, upstream, relay, provider):
    kinds, deltas = [], []
    with gpt.responses.stream(model=f"m-{provider}", input=[{"role": "user", "content": [{"type": "input_text", "text": QUESTION}]}]) as stream:
        for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    request, plan = sent(upstream)
    assert request.stream
    assert final.output_text == "".join(deltas) == echo(QUESTION)
    assert len(deltas) > 1 or provider == "ge"
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"]
    assert final.status == "completed"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (plan.prompt_tokens, plan.completion_tokens)
    (row,) = relay.ledger.rows()
    assert row.stream and row.status == 200 and row.endpoint == "responses"
    assert float(row.cost_usd) == pytest.approx(cost(plan.prompt_tokens, plan.completion_tokens))


def test_stream_sequence_numbers_count_from_zero(server, upstream):
    body = {"model": "m-an", "input": QUESTION, "stream": True}
    with httpx.stream("POST", f"{server.url}/ai/v1/responses", json=body, headers={"authorization": "Bearer k"}) as answer:
        text = answer.read().decode()
    events = [orjson.loads(line[6:]) for line in text.split("\n") if line.startswith("data: ")]
    names = [line[7:] for line in text.split("\n") if line.startswith("event: ")]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert names == [e["type"] for e in events]
    ids = {e["response"]["id"] for e in events if "response" in e}
    assert len(ids) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("stream", [False, True])
def test_function_tool_round_trip(gpt, upstream, provider, stream):
    if stream:
        with gpt.responses.stream(model=f"m-{provider}", input=QUESTION, tools=TOOLS) as events:
            arguments = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
            first = events.get_final_response()
        assert orjson.loads(arguments) == EXPECTED_ARGS
    else:
        first = gpt.responses.create(model=f"m-{provider}", input=QUESTION, tools=TOOLS)
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and orjson.loads(call.arguments) == EXPECTED_ARGS and call.call_id
    follow = [{"role": "user", "content": QUESTION}, call.model_dump(exclude_none=True),
              {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}]
    second = gpt.responses.create(model=f"m-{provider}", input=follow, tools=TOOLS)
    assert second.output_text.startswith("Echo: ") and second.status == "completed"
    body = upstream.last_request.json
    if provider == "oa":
        assert body["messages"][-1] == {"role": "tool", "tool_call_id": call.call_id, "content": "sunny"}
        assert body["messages"][-2]["tool_calls"][0]["id"] == call.call_id
        assert body["tools"] == [{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": SCHEMA}}]
    elif provider == "an":
        assert body["messages"][-1]["content"][0] == {"type": "tool_result", "tool_use_id": call.call_id, "content": "sunny"}
    else:
        assert body["contents"][-1]["parts"] == [{"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}}]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("stream", [False, True])
def test_previous_response_id_rebuilds_the_conversation(gpt, upstream, provider, stream):
    if stream:
        with gpt.responses.stream(model=f"m-{provider}", instructions="Be brief.", input="first question") as events:
            first = events.get_final_response()
    else:
        first = gpt.responses.create(model=f"m-{provider}", instructions="Be brief.", input="first question")
    second = gpt.responses.create(model=f"m-{provider}", input="second question", previous_response_id=first.id)
    assert second.output_text == echo("second question")
    third = gpt.responses.create(model=f"m-{provider}", input="third", previous_response_id=second.id)
    assert third.output_text == echo("third")
    body = upstream.last_request.json
    if provider == "oa":
        assert body["messages"] == [
            {"role": "user", "content": "first question"}, {"role": "assistant", "content": echo("first question")},
            {"role": "user", "content": "second question"}, {"role": "assistant", "content": echo("second question")},
            {"role": "user", "content": "third"},
        ]
    elif provider == "an":
        assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user", "assistant", "user"]
        assert "system" not in body  # instructions are not carried over, as OpenAI does
    else:
        assert [c["role"] for c in body["contents"]] == ["user", "model", "user", "model", "user"]


def test_previous_response_is_per_caller_and_store_false_keeps_nothing(upstream):
    keys = [{"key": "key-a", "caller": "a"}, {"key": "key-b", "caller": "b"}]
    with LiveServer(RelayMiddleware(Starlette(), relay=Relay({**config(upstream), "api_keys": keys}))) as live:
        alice, bob = (openai.OpenAI(base_url=f"{live.url}/ai/v1", api_key=k, max_retries=0) for k in ("key-a", "key-b"))
        first = alice.responses.create(model="m-oa", input="hello")
        assert alice.responses.create(model="m-oa", input="again", previous_response_id=first.id).output_text == echo("again")
        with pytest.raises(openai.NotFoundError) as other:
            bob.responses.create(model="m-oa", input="again", previous_response_id=first.id)
        assert other.value.body["code"] == "previous_response_not_found"
        assert other.value.body["param"] == "previous_response_id"
        unstored = alice.responses.create(model="m-oa", input="hello", store=False)
        with pytest.raises(openai.NotFoundError):
            alice.responses.create(model="m-oa", input="again", previous_response_id=unstored.id)


def test_built_in_tools_are_refused_naming_them(gpt, upstream, relay):
    with pytest.raises(openai.BadRequestError) as refused:
        gpt.responses.create(model="m-oa", input="hi", tools=[*TOOLS, {"type": "web_search"}, {"type": "file_search", "vector_store_ids": ["v"]}])
    assert "file_search" in refused.value.message and "web_search" in refused.value.message
    assert refused.value.body["param"] == "tools"
    assert upstream.requests == []
    (row,) = relay.ledger.rows()
    assert (row.endpoint, row.status) == ("responses", 400)


def test_json_schema_text_format_becomes_response_format(gpt, upstream):
    fmt = {"type": "json_schema", "name": "city", "schema": SCHEMA, "strict": True}
    gpt.responses.create(model="m-oa", input="hi", text={"format": fmt}, tool_choice="auto", top_p=0.5,
                         reasoning={"effort": "low"}, parallel_tool_calls=True)
    body = upstream.last_request.json
    assert body["response_format"] == {"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA, "strict": True}}
    assert body["top_p"] == 0.5 and body["reasoning_effort"] == "low"
    assert "tool_choice" not in body and "parallel_tool_calls" not in body  # OpenAI refuses them without tools
    gpt.responses.create(model="m-oa", input="hi", tools=TOOLS, tool_choice={"type": "function", "name": "get_weather"},
                         parallel_tool_calls=False)
    body = upstream.last_request.json
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}} and body["parallel_tool_calls"] is False


@pytest.mark.parametrize("provider", PROVIDERS)
def test_length_cut_is_incomplete(gpt, upstream, provider):
    response = gpt.responses.create(model=f"m-{provider}", input="one two three four five six seven", max_output_tokens=2)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    with gpt.responses.stream(model=f"m-{provider}", input="one two three four five six seven", max_output_tokens=2) as events:
        kinds = [e.type for e in events]
    assert kinds[-1] == "response.incomplete"


def test_errors_are_in_openai_shape(gpt, relay):
    with pytest.raises(openai.NotFoundError) as missing:
        gpt.responses.create(model="nope", input="hi")
    assert missing.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        gpt.responses.create(model="m-oa", input=[{"type": "item_reference", "id": "x"}])
    assert bad.value.body["param"] == "input[0].type"


@pytest.mark.parametrize("provider", ["an", "oa"])
def test_cached_tokens_reach_the_usage_and_the_cost(gpt, upstream, relay, provider):
    upstream.script(Fault.usage(prompt_tokens=1000, completion_tokens=10) | Fault.cache(read=600))
    raw = gpt.responses.with_raw_response.create(model=f"m-{provider}", input=QUESTION)
    usage = raw.parse().usage
    assert (usage.input_tokens, usage.input_tokens_details.cached_tokens, usage.output_tokens) == (1000, 600, 10)
    assert float(raw.headers["x-relay-cost-usd"]) == pytest.approx(cost(1000, 10, cached=600))
    (row,) = relay.ledger.rows()
    assert row.cached_tokens == 600 and float(row.cost_usd) == pytest.approx(cost(1000, 10, cached=600))


@pytest.mark.parametrize("provider", ["oa", "an"])
def test_stream_failing_midway_ends_with_an_error_event(gpt, upstream, relay, provider):
    upstream.script(Fault.stream_error(after_chunks=3, status=529))
    with pytest.raises(openai.APIError) as info:
        with gpt.responses.stream(model=f"m-{provider}", input=QUESTION) as events:
            for _ in events:
                pass
    assert info.value.body["message"].startswith("The provider failed mid-stream")
    (row,) = relay.ledger.rows()
    assert row.status >= 500 and row.stream and row.endpoint == "responses"


def _upgrade(url: str, path: str) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            piece = conn.recv(4096)
            if not piece:
                break
            answer += piece
    return answer


def test_websocket_upgrade_on_the_responses_path_is_426(server):
    answer = _upgrade(server.url, "/ai/v1/responses")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 426")
    assert orjson.loads(body)["error"]["code"] == "upgrade_required"


@pytest.mark.parametrize("stream", [False, True])
def test_retrieve_and_delete_the_callers_own_response(upstream, stream):
    keys = [{"key": "key-a", "caller": "a"}, {"key": "key-b", "caller": "b"}]
    relay = Relay({**config(upstream), "api_keys": keys})
    with LiveServer(RelayMiddleware(Starlette(), relay=relay)) as live:
        alice, bob = (openai.OpenAI(base_url=f"{live.url}/ai/v1", api_key=k, max_retries=0) for k in ("key-a", "key-b"))
        if stream:
            with alice.responses.stream(model="m-an", input="keep me") as events:
                made = events.get_final_response()
        else:
            made = alice.responses.create(model="m-an", input="keep me")
        got = alice.responses.retrieve(made.id)
        assert got.id == made.id and got.output_text == made.output_text == echo("keep me")
        assert got.usage.output_tokens == made.usage.output_tokens
        with pytest.raises(openai.NotFoundError):
            bob.responses.retrieve(made.id)
        with pytest.raises(openai.NotFoundError):
            bob.responses.delete(made.id)
        alice.responses.delete(made.id)
        with pytest.raises(openai.NotFoundError):
            alice.responses.retrieve(made.id)
        with pytest.raises(openai.NotFoundError):
            alice.responses.create(model="m-an", input="more", previous_response_id=made.id)
    assert {(r.endpoint, r.status) for r in relay.ledger.rows() if r.endpoint == "responses.stored"} == {
        ("responses.stored", 200), ("responses.stored", 404)}


def test_max_output_tokens_above_the_models_limit_is_refused(upstream):
    settings = config(upstream)
    settings["models"]["m-oa"] = {**settings["models"]["m-oa"], "max_output_tokens": 50}
    with LiveServer(RelayMiddleware(Starlette(), relay=Relay(settings))) as live:
        client = openai.OpenAI(base_url=f"{live.url}/ai/v1", api_key="k", max_retries=0)
        with pytest.raises(openai.BadRequestError) as refused:
            client.responses.create(model="m-oa", input="hi", max_output_tokens=51)
        assert refused.value.body["param"] == "max_output_tokens"
        assert client.responses.create(model="m-oa", input="hi", max_output_tokens=50).status == "completed"
    assert len(upstream.requests) == 1


def test_stream_cut_short_is_charged_for_what_it_sent(gpt, upstream, relay):
    upstream.script(Fault.reply("alpha beta gamma delta epsilon zeta eta theta iota kappa") | Fault.drop(after_chunks=5))
    with pytest.raises(openai.APIError):
        with gpt.responses.stream(model="m-oa", input=QUESTION) as events:
            deltas = []
            for event in events:
                if event.type == "response.output_text.delta":
                    deltas.append(event.delta)
    assert deltas
    (row,) = relay.ledger.rows()
    assert row.status >= 500 and row.completion_tokens > 0 and float(row.cost_usd) > 0


@pytest.mark.parametrize("stream", [False, True])
def test_cached_answer_replays_and_still_serves_previous_response_id(upstream, stream):
    relay = Relay({**config(upstream), "cache": {"mode": "all"}})
    with LiveServer(RelayMiddleware(Starlette(), relay=relay)) as live:
        client = openai.OpenAI(base_url=f"{live.url}/ai/v1", api_key="k", max_retries=0)

        def ask():
            if not stream:
                return client.responses.create(model="m-an", input="cache me")
            with client.responses.stream(model="m-an", input="cache me") as events:
                return events.get_final_response()

        first, second = ask(), ask()
        assert second.output_text == first.output_text == echo("cache me") and second.id == first.id
        assert len(upstream.requests) == 1
        follow = client.responses.create(model="m-an", input="next", previous_response_id=second.id)
        assert follow.output_text == echo("next")
    assert [r.cache_hit for r in relay.ledger.rows()][:2] == [False, True]


def test_redis_store_is_shared_by_workers_per_caller_with_a_ttl(upstream, redis_url):
    import uuid

    import redis

    prefix = f"test:responses:{uuid.uuid4().hex}:"
    keys = [{"key": "key-a", "caller": "a"}, {"key": "key-b", "caller": "b"}]
    settings = {**config(upstream), "api_keys": keys, "storage": {"ledger": "memory://", "responses": f"{redis_url}?ttl=60&prefix={prefix}"}}
    with LiveServer(RelayMiddleware(Starlette(), relay=Relay(settings))) as one, \
            LiveServer(RelayMiddleware(Starlette(), relay=Relay(settings))) as two:
        alice_one = openai.OpenAI(base_url=f"{one.url}/ai/v1", api_key="key-a", max_retries=0)
        alice_two = openai.OpenAI(base_url=f"{two.url}/ai/v1", api_key="key-a", max_retries=0)
        bob_two = openai.OpenAI(base_url=f"{two.url}/ai/v1", api_key="key-b", max_retries=0)
        first = alice_one.responses.create(model="m-ge", input="remember this")
        follow = alice_two.responses.create(model="m-ge", input="and this", previous_response_id=first.id)
        assert follow.output_text == echo("and this")
        assert [c["role"] for c in upstream.last_request.json["contents"]] == ["user", "model", "user"]
        with pytest.raises(openai.NotFoundError):
            bob_two.responses.retrieve(first.id)
        assert alice_two.responses.retrieve(first.id).output_text == echo("remember this")
    client = redis.Redis.from_url(redis_url)
    stored = []
    try:
        stored = client.keys(f"{prefix}*")
        assert len(stored) == 2 and all(0 < client.pttl(k) <= 60_000 for k in stored)
    finally:
        if stored:
            client.delete(*stored)
        client.close()


def test_unknown_response_store_scheme_is_a_configuration_error(upstream):
    from asgi_ai_relay.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="storage.responses"):
        Relay({**config(upstream), "storage": {"ledger": "memory://", "responses": "mongodb://x"}})
