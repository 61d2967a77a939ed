"""End to end across formats: the official anthropic and openai SDKs -> uvicorn -> relay ->
the fake upstream speaking OpenAI, Anthropic and Gemini wire formats."""

from __future__ import annotations

import anthropic
import httpx
import openai
import orjson
import pytest
from starlette.applications import Starlette

from asgi_ai_relay import Relay, RelayMiddleware
from asgi_ai_relay.tokens import prompt_tokens
from tests.conftest import UPSTREAM_KEY
from tests.fake_upstream import Fault, echo_reply, fake_tool_arguments, plan_reply
from tests.live import LiveServer

PRICE = {"input": 2, "output": 10, "cached_input": 0.5, "cache_write": 2.5}
UPSTREAM_MODEL = {"oa": "gpt-4o-mini", "an": "claude-sonnet-4-5", "ge": "gemini-2.0-flash"}
API = {"oa": "openai", "an": "anthropic", "ge": "gemini"}


def config(upstream):
    return {
        "storage": {"ledger": "memory://"},
        "providers": {
            "oa": {"kind": "openai_compatible", "base_url": f"{upstream.url}/v1", "api_key": "env:TEST_UPSTREAM_KEY"},
            "an": {"kind": "anthropic", "base_url": f"{upstream.url}/v1", "api_key": "env:TEST_UPSTREAM_KEY"},
            "ge": {"kind": "gemini", "base_url": f"{upstream.url}/v1beta", "api_key": "env:TEST_UPSTREAM_KEY"},
        },
        "models": {f"m-{p}": {"provider": p, "upstream": UPSTREAM_MODEL[p], "price": PRICE} for p in API},
        # One attempt: these tests check how a single upstream answer is translated, not retries.
        "retry": {"max_attempts": 1},
    }


@pytest.fixture
def relay(upstream):
    return Relay(config(upstream))


@pytest.fixture
def server(relay):
    with LiveServer(RelayMiddleware(Starlette(), relay=relay)) as live:
        yield live


@pytest.fixture
def claude(server):
    return anthropic.Anthropic(base_url=f"{server.url}/ai", api_key="client-secret-abc", max_retries=0)


@pytest.fixture
def gpt(server):
    return openai.OpenAI(base_url=f"{server.url}/ai/v1", api_key="client-secret-abc", max_retries=0)


SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]}
AN_TOOLS = [{"name": "get_weather", "description": "Weather", "input_schema": SCHEMA}]
OA_TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": SCHEMA}}]
AN_MESSAGES = [{"role": "user", "content": "Weather in Paris please"}]
OA_MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris please"}]
EXPECTED_ARGS = fake_tool_arguments(SCHEMA, "Weather in Paris please")


def cost(usage_prompt, completion, cached=0, written=0):
    return (2 * (usage_prompt - cached - written) + 0.5 * cached + 2.5 * written + 10 * completion) / 1e6


def sent_body(upstream):
    """What the provider received, and its expected token counts."""
    request = upstream.last_request
    return request, plan_reply(request.json, request.api)


def assert_upstream_auth(request, provider):
    assert "client-secret-abc" not in str(request.headers) and "client-secret-abc" not in request.query_string
    if provider == "an":
        assert request.headers["x-api-key"] == UPSTREAM_KEY and request.headers["anthropic-version"]
    elif provider == "ge":
        assert request.headers["x-goog-api-key"] == UPSTREAM_KEY and UPSTREAM_KEY not in request.query_string
    else:
        assert request.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"


# ---- the anthropic SDK calling every provider ----------------------------------------


@pytest.mark.parametrize("provider", ["oa", "ge", "an"])
def test_anthropic_sdk_whole_text(claude, upstream, relay, provider):
    raw = claude.messages.with_raw_response.create(model=f"m-{provider}", max_tokens=200, system="Be brief.", messages=AN_MESSAGES)
    message = raw.parse()
    request, plan = sent_body(upstream)
    assert request.api == API[provider]
    assert message.content[0].type == "text" and message.content[0].text == echo_reply({"messages": AN_MESSAGES}, "anthropic")
    assert message.stop_reason == "end_turn" and message.role == "assistant"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (plan.prompt_tokens, plan.completion_tokens)
    assert float(raw.headers["x-relay-cost-usd"]) == pytest.approx(cost(plan.prompt_tokens, plan.completion_tokens))
    assert_upstream_auth(request, provider)
    (row,) = relay.ledger.rows()
    assert (row.endpoint, row.model, row.provider, row.status, row.completion_tokens) == ("messages", f"m-{provider}", provider, 200, plan.completion_tokens)


@pytest.mark.parametrize("provider", ["oa", "ge", "an"])
def test_anthropic_sdk_tool_call_whole_and_result_round_trip(claude, upstream, provider):
    first = claude.messages.create(model=f"m-{provider}", max_tokens=200, messages=AN_MESSAGES, tools=AN_TOOLS)
    assert first.stop_reason == "tool_use"
    (call,) = [b for b in first.content if b.type == "tool_use"]
    assert call.name == "get_weather" and call.input == EXPECTED_ARGS and call.id
    follow = AN_MESSAGES + [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]},
    ]
    second = claude.messages.create(model=f"m-{provider}", max_tokens=200, messages=follow, tools=AN_TOOLS)
    assert second.stop_reason == "end_turn" and second.content[0].text.startswith("Echo: ")
    sent = upstream.last_request.json
    if provider == "oa":
        assert sent["messages"][-1] == {"role": "tool", "tool_call_id": call.id, "content": "sunny"}
        assert orjson.loads(sent["messages"][-2]["tool_calls"][0]["function"]["arguments"]) == EXPECTED_ARGS
    elif provider == "ge":
        assert sent["contents"][-1]["parts"] == [{"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}}]
    else:
        assert sent["messages"][-1]["content"][0]["tool_use_id"] == call.id


@pytest.mark.parametrize("provider", ["oa", "ge", "an"])
@pytest.mark.parametrize("tools", [False, True])
def test_anthropic_sdk_stream_helper_final_message(claude, upstream, relay, provider, tools):
    extra = {"tools": AN_TOOLS} if tools else {}
    with claude.messages.stream(model=f"m-{provider}", max_tokens=200, messages=AN_MESSAGES, **extra) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    request, plan = sent_body(upstream)
    assert request.stream
    if tools:
        (block,) = final.content
        assert block.type == "tool_use" and block.input == EXPECTED_ARGS and final.stop_reason == "tool_use"
    else:
        assert "".join(texts) == final.content[0].text == echo_reply({"messages": AN_MESSAGES}, "anthropic")
        assert len(texts) > 1 or provider == "ge"  # re-chunked as it arrives, not buffered
        assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == plan.completion_tokens
    assert final.usage.input_tokens == plan.prompt_tokens
    (row,) = relay.ledger.rows()
    assert row.stream and row.status == 200 and row.completion_tokens == plan.completion_tokens
    assert float(row.cost_usd) == pytest.approx(cost(plan.prompt_tokens, plan.completion_tokens))


def test_anthropic_fast_path_passes_unknown_fields_and_beta_headers(claude, upstream, server):
    body = {
        "model": "m-an", "max_tokens": 100, "messages": AN_MESSAGES,
        "thinking": {"type": "enabled", "budget_tokens": 50}, "metadata": {"user_id": "u-7"},
        "output_config": {"effort": "low"},
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "tools": [{**AN_TOOLS[0], "defer_loading": True, "cache_control": {"type": "ephemeral"}}],
        "tool_choice": {"type": "none"},
    }
    answer = httpx.post(
        f"{server.url}/ai/v1/messages?beta=true", json=body,
        headers={"x-api-key": "client-secret-abc", "anthropic-version": "2023-06-01", "anthropic-beta": "interleaved-thinking-2025-05-14"},
    )
    assert answer.status_code == 200 and answer.json()["type"] == "message"
    request = upstream.last_request
    assert request.json == {**body, "model": "claude-sonnet-4-5"}
    assert request.headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert request.headers["x-api-key"] == UPSTREAM_KEY and request.query_string == ""


def test_anthropic_sdk_beta_messages_with_query_string(claude, upstream):
    message = claude.beta.messages.create(model="m-oa", max_tokens=50, messages=AN_MESSAGES, betas=["context-1m-2025-08-07"])
    assert message.content[0].text.startswith("Echo: ")
    assert "anthropic-beta" not in upstream.last_request.headers  # not forwarded to an OpenAI provider


def test_anthropic_mid_conversation_system_turn(claude, upstream):
    messages = [*AN_MESSAGES, {"role": "assistant", "content": "ok"}, {"role": "system", "content": "Now be terse."}, {"role": "user", "content": "again"}]
    message = claude.messages.create(model="m-oa", max_tokens=50, messages=messages)
    assert message.content[0].text == "Echo: again"
    assert [m["role"] for m in upstream.last_request.json["messages"]] == ["user", "assistant", "system", "user"]


# ---- the openai SDK calling Anthropic and Gemini providers ---------------------------


@pytest.mark.parametrize("provider", ["an", "ge"])
def test_openai_sdk_whole_text_and_tools(gpt, upstream, relay, provider):
    raw = gpt.chat.completions.with_raw_response.create(model=f"m-{provider}", messages=OA_MESSAGES, max_tokens=100, temperature=0.5, stop=["ZZZ"])
    completion = raw.parse()
    request, plan = sent_body(upstream)
    assert completion.choices[0].message.content == echo_reply({"messages": OA_MESSAGES}, "openai")
    assert completion.choices[0].finish_reason == "stop"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (plan.prompt_tokens, plan.completion_tokens)
    assert float(raw.headers["x-relay-cost-usd"]) == pytest.approx(cost(plan.prompt_tokens, plan.completion_tokens))
    assert_upstream_auth(request, provider)
    if provider == "an":
        assert request.json["system"] == "Be brief." and request.json["stop_sequences"] == ["ZZZ"] and request.json["max_tokens"] == 100
    else:
        assert request.path == "/v1beta/models/gemini-2.0-flash:generateContent"
        assert request.json["generationConfig"] == {"temperature": 0.5, "maxOutputTokens": 100, "stopSequences": ["ZZZ"]}
    tool = gpt.chat.completions.create(model=f"m-{provider}", messages=OA_MESSAGES, tools=OA_TOOLS)
    (call,) = tool.choices[0].message.tool_calls
    assert tool.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and orjson.loads(call.function.arguments) == EXPECTED_ARGS
    assert [r.status for r in relay.ledger.rows()] == [200, 200]


@pytest.mark.parametrize("provider", ["an", "ge"])
@pytest.mark.parametrize("tools", [False, True])
def test_openai_sdk_streamed(gpt, upstream, relay, provider, tools):
    extra = {"tools": OA_TOOLS} if tools else {}
    stream = gpt.chat.completions.create(model=f"m-{provider}", messages=OA_MESSAGES, stream=True, stream_options={"include_usage": True}, **extra)
    chunks = list(stream)
    request, plan = sent_body(upstream)
    assert request.stream and (provider != "ge" or request.query == {"alt": "sse"})
    with_choices = [c for c in chunks if c.choices]
    if tools:
        calls = [tc for c in with_choices for tc in c.choices[0].delta.tool_calls or ()]
        assert calls[0].function.name == "get_weather" and calls[0].id
        assert orjson.loads("".join(tc.function.arguments or "" for tc in calls)) == EXPECTED_ARGS
        assert with_choices[-1].choices[0].finish_reason == "tool_calls"
    else:
        text = "".join(c.choices[0].delta.content or "" for c in with_choices)
        assert text == echo_reply({"messages": OA_MESSAGES}, "openai")
        assert with_choices[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plan.completion_tokens
    assert len({c.id for c in chunks}) == 1
    (row,) = relay.ledger.rows()
    assert row.stream and row.status == 200 and row.prompt_tokens == plan.prompt_tokens


def test_openai_sdk_stream_without_usage_option_gets_no_usage_chunk(gpt, relay):
    chunks = list(gpt.chat.completions.create(model="m-an", messages=OA_MESSAGES, stream=True))
    assert all(c.choices for c in chunks)
    (row,) = relay.ledger.rows()
    assert row.completion_tokens > 0


# ---- usage with prompt caching -------------------------------------------------------


def test_cached_tokens_from_anthropic_reach_openai_caller_and_cost(gpt, upstream, relay):
    upstream.script(Fault.usage(prompt_tokens=1000, completion_tokens=10) | Fault.cache(read=600, written=300))
    raw = gpt.chat.completions.with_raw_response.create(model="m-an", messages=OA_MESSAGES)
    usage = raw.parse().usage
    assert (usage.prompt_tokens, usage.prompt_tokens_details.cached_tokens) == (1000, 600)
    expected = cost(1000, 10, cached=600, written=300)
    assert float(raw.headers["x-relay-cost-usd"]) == pytest.approx(expected)
    (row,) = relay.ledger.rows()
    assert row.cached_tokens == 600 and float(row.cost_usd) == pytest.approx(expected)


@pytest.mark.parametrize("provider", ["oa", "ge"])
def test_cached_tokens_reach_anthropic_caller_streamed(claude, upstream, relay, provider):
    upstream.script(Fault.usage(prompt_tokens=500, completion_tokens=3) | Fault.cache(read=400))
    with claude.messages.stream(model=f"m-{provider}", max_tokens=50, messages=AN_MESSAGES) as stream:
        final = stream.get_final_message()
    assert (final.usage.input_tokens, final.usage.cache_read_input_tokens) == (100, 400)
    (row,) = relay.ledger.rows()
    assert float(row.cost_usd) == pytest.approx(cost(500, 3, cached=400))


# ---- errors in the caller's format ---------------------------------------------------


def test_untranslatable_openai_request_is_a_400_naming_parameter_and_provider(gpt, upstream, relay):
    with pytest.raises(openai.BadRequestError) as info:
        gpt.chat.completions.create(model="m-an", messages=OA_MESSAGES, n=2)
    assert info.value.body["param"] == "n" and "'an'" in info.value.body["message"]
    assert upstream.requests == []
    assert relay.ledger.rows()[0].status == 400


def test_untranslatable_anthropic_request_is_an_anthropic_400(claude, upstream):
    tools = [{"type": "web_search_20250305", "name": "web_search", "max_uses": 1}]
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(model="m-oa", max_tokens=50, messages=AN_MESSAGES, tools=tools)
    assert info.value.body == {"type": "error", "error": {"type": "invalid_request_error", "message": info.value.body["error"]["message"]}}
    assert "tools.0.type" in info.value.body["error"]["message"] and "'oa'" in info.value.body["error"]["message"]
    assert upstream.requests == []


def test_anthropic_errors_in_anthropic_format(claude, upstream, server):
    with pytest.raises(anthropic.NotFoundError) as info:
        claude.messages.create(model="nope", max_tokens=5, messages=AN_MESSAGES)
    assert info.value.body["error"]["type"] == "not_found_error"
    bad = httpx.post(f"{server.url}/ai/v1/messages", json={"model": "m-oa", "messages": []})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error" and bad.json()["type"] == "error"
    upstream.script(Fault.status(429, retry_after=3))
    with pytest.raises(anthropic.RateLimitError) as limited:
        claude.messages.create(model="m-ge", max_tokens=5, messages=AN_MESSAGES)
    assert limited.value.body["error"]["type"] == "rate_limit_error"


@pytest.mark.parametrize("provider", ["oa", "an"])
def test_anthropic_stream_failing_midway_ends_with_error_event(claude, upstream, relay, provider):
    upstream.script(Fault.stream_error(after_chunks=3, status=529))
    with pytest.raises(anthropic.APIStatusError) as info:
        with claude.messages.stream(model=f"m-{provider}", max_tokens=50, messages=AN_MESSAGES) as stream:
            stream.get_final_message()
    assert info.value.body["error"]["type"] in ("overloaded_error", "api_error")
    (row,) = relay.ledger.rows()
    assert row.status >= 500 and row.stream


# ---- count_tokens and the mock provider ----------------------------------------------


def test_count_tokens(claude, upstream):
    counted = claude.messages.count_tokens(model="m-an", messages=AN_MESSAGES, system="Be brief.")
    assert counted.input_tokens == plan_reply(upstream.last_request.json, "anthropic").prompt_tokens
    assert upstream.last_request.path == "/v1/messages/count_tokens" and upstream.last_request.json["model"] == "claude-sonnet-4-5"
    asked = len(upstream.requests)
    for model in ("m-oa", "m-ge", "claude-sonnet-4.5"):  # counted by the relay: no upstream call
        raw = claude.messages.with_raw_response.count_tokens(model=model, messages=AN_MESSAGES, system="Be brief.")
        assert raw.headers["x-relay-token-count"] == "estimate"
        assert raw.parse().input_tokens == prompt_tokens({"messages": AN_MESSAGES, "system": "Be brief."}) > 0
    assert len(upstream.requests) == asked


def test_mock_provider_serves_anthropic_callers(claude):
    whole = claude.messages.create(model="claude-sonnet-4.5", max_tokens=100, messages=AN_MESSAGES)
    assert whole.content[0].text.startswith("This is a mock reply from claude-sonnet-4-5")
    with claude.messages.stream(model="claude-sonnet-4.5", max_tokens=100, messages=AN_MESSAGES, tools=AN_TOOLS) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "tool_use" and final.content[0].name == "get_weather"
    assert final.usage.output_tokens > 0 and final.usage.input_tokens > 0
