"""The Responses API passed through to providers that serve it themselves: the official openai
SDK (``client.responses``) -> uvicorn -> relay -> the fake upstream's ``POST /v1/responses``."""

from __future__ import annotations

import openai
import orjson
import pytest
from starlette.applications import Starlette

from asgi_ai_relay import Relay, RelayMiddleware
from asgi_ai_relay.errors import ConfigurationError
from tests.conftest import UPSTREAM_KEY
from tests.fake_responses import chat_view
from tests.fake_upstream import Fault, echo_reply, fake_tool_arguments, plan_reply
from tests.live import LiveServer
from tests.test_formats_e2e import PRICE, SCHEMA, cost
from tests.test_responses_clients import _codex, _codex_binary

TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather", "parameters": SCHEMA}]
QUESTION = "Weather in Paris please"
#: "nat": kind openai (native by default); "dec": openai_compatible that declares it; "hub": one that does not.
NATIVE = ["nat", "dec"]


def config(upstream, **extra):
    base = f"{upstream.url}/v1"
    key = "env:TEST_UPSTREAM_KEY"
    return {
        "storage": {"ledger": "memory://"},
        "providers": {
            "nat": {"kind": "openai", "base_url": base, "api_key": key},
            "dec": {"kind": "openai_compatible", "base_url": base, "api_key": key, "responses": True},
            "hub": {"kind": "openai_compatible", "base_url": base, "api_key": key},
            "an": {"kind": "anthropic", "base_url": base, "api_key": key},
        },
        "models": {
            **{f"m-{p}": {"provider": p, "upstream": "gpt-4o-mini", "price": PRICE} for p in ("nat", "dec", "hub")},
            "m-an": {"provider": "an", "upstream": "claude-sonnet-4-5", "price": PRICE},
        },
        "retry": {"max_attempts": 1},
        **extra,
    }


@pytest.fixture
def relay(upstream):
    return Relay(config(upstream))


@pytest.fixture
def server(relay):
    with LiveServer(RelayMiddleware(Starlette(), relay=relay)) as live:
        yield live


@pytest.fixture
def gpt(server):
    return openai.OpenAI(base_url=f"{server.url}/ai/v1", api_key="client-secret-abc", max_retries=0)


def plan_of(request):
    return plan_reply(chat_view(request.json), "openai")


def assert_forwarded_as_sent(request, sent):
    """The upstream got the caller's body with only the model rewritten, and the relay's key."""
    assert request.path == "/v1/responses"
    assert request.json == {**sent, "model": "gpt-4o-mini"}
    assert request.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert "client-secret-abc" not in str(request.headers)


@pytest.mark.parametrize("provider", NATIVE)
def test_whole_answer_is_forwarded_with_only_the_model_rewritten(gpt, upstream, relay, provider):
    sent = {"model": f"m-{provider}", "input": QUESTION, "instructions": "Be brief.", "max_output_tokens": 100,
            "temperature": 0.5, "metadata": {"k": "v"}, "truncation": "auto", "include": ["reasoning.encrypted_content"],
            "store": True, "prompt_cache_key": "pk-1", "tools": [{"type": "web_search"}]}
    raw = gpt.responses.with_raw_response.create(**sent)
    response = raw.parse()
    request = upstream.last_request
    assert_forwarded_as_sent(request, sent)
    plan = plan_of(request)
    assert response.output_text == echo_reply({"messages": [{"role": "user", "content": QUESTION}]}, "openai")
    assert (response.usage.input_tokens, response.usage.output_tokens) == (plan.prompt_tokens, plan.completion_tokens)
    assert raw.headers["x-relay-provider"] == provider
    assert float(raw.headers["x-relay-cost-usd"]) == pytest.approx(cost(plan.prompt_tokens, plan.completion_tokens))
    (row,) = relay.ledger.rows()
    assert (row.endpoint, row.status, row.provider, row.model) == ("responses", 200, provider, f"m-{provider}")
    assert (row.prompt_tokens, row.completion_tokens) == (plan.prompt_tokens, plan.completion_tokens)


def test_a_provider_that_does_not_declare_it_goes_through_the_hub(gpt, upstream):
    gpt.responses.create(model="m-hub", input=QUESTION)
    assert upstream.last_request.path == "/v1/chat/completions"
    with pytest.raises(openai.BadRequestError, match="web_search"):  # built-in tools need a native provider
        gpt.responses.create(model="m-hub", input=QUESTION, tools=[{"type": "web_search"}])
    assert len(upstream.requests) == 1


@pytest.mark.parametrize("provider", NATIVE)
def test_streamed_answer_as_the_sdk_assembles_it(gpt, upstream, relay, provider):
    with gpt.responses.stream(model=f"m-{provider}", input=QUESTION, instructions="Be brief.") as events:
        kinds = [e.type for e in events]
        final = events.get_final_response()
    request = upstream.last_request
    assert_forwarded_as_sent(request, {"model": f"m-{provider}", "input": QUESTION, "instructions": "Be brief.", "stream": True})
    plan = plan_of(request)
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert final.output_text == plan.text and final.status == "completed"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (plan.prompt_tokens, plan.completion_tokens)
    (row,) = relay.ledger.rows()
    assert (row.status, row.prompt_tokens, row.completion_tokens) == (200, plan.prompt_tokens, plan.completion_tokens)
    assert float(row.cost_usd) == pytest.approx(cost(plan.prompt_tokens, plan.completion_tokens))


@pytest.mark.parametrize("stream", [False, True])
def test_cached_and_reasoning_tokens_are_read_and_priced(gpt, upstream, relay, stream):
    upstream.script(Fault.raw_usage(input_tokens=1000, output_tokens=300, input_tokens_details={"cached_tokens": 600},
                                    output_tokens_details={"reasoning_tokens": 200}))
    if stream:
        with gpt.responses.stream(model="m-nat", input=QUESTION) as events:
            usage = events.get_final_response().usage
    else:
        usage = gpt.responses.create(model="m-nat", input=QUESTION).usage
    assert (usage.input_tokens_details.cached_tokens, usage.output_tokens_details.reasoning_tokens) == (600, 200)
    (row,) = relay.ledger.rows()
    assert (row.prompt_tokens, row.completion_tokens, row.cached_tokens, row.reasoning_tokens) == (1000, 300, 600, 200)
    assert float(row.cost_usd) == pytest.approx(cost(1000, 300, cached=600))


@pytest.mark.parametrize("stream", [False, True])
def test_function_tool_round_trip(gpt, upstream, stream):
    expected = fake_tool_arguments(SCHEMA, QUESTION)
    if stream:
        with gpt.responses.stream(model="m-nat", input=QUESTION, tools=TOOLS) as events:
            arguments = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
            first = events.get_final_response()
        assert orjson.loads(arguments) == expected
    else:
        first = gpt.responses.create(model="m-nat", input=QUESTION, tools=TOOLS)
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and orjson.loads(call.arguments) == expected
    follow = [{"role": "user", "content": QUESTION}, call.model_dump(exclude_none=True),
              {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}]
    second = gpt.responses.create(model="m-nat", input=follow, tools=TOOLS)
    assert second.output_text.startswith("Echo: ")
    assert upstream.last_request.json["input"] == follow


def test_previous_response_id_is_rebuilt_not_forwarded(gpt, upstream):
    first = gpt.responses.create(model="m-nat", instructions="Be brief.", input="first question")
    second = gpt.responses.create(model="m-nat", input="second question", previous_response_id=first.id)
    body = upstream.last_request.json
    assert "previous_response_id" not in body
    assert body["input"][0] == {"type": "message", "role": "user", "content": "first question"}
    assert body["input"][1] == first.output[0].model_dump(exclude_none=True) | body["input"][1]  # the upstream's own item
    assert body["input"][1]["id"] == first.output[0].id
    assert body["input"][2] == {"type": "message", "role": "user", "content": "second question"}
    # The chain moves to another provider and format, and still holds.
    third = gpt.responses.create(model="m-an", input="third", previous_response_id=second.id)
    assert third.output_text == "Echo: third"
    texts = [b["text"] if isinstance(b, dict) else b for m in upstream.last_request.json["messages"]
             for b in (m["content"] if isinstance(m["content"], list) else [m["content"]])]
    assert texts[:2] == ["first question", "Echo: first question"]


def test_store_false_keeps_nothing(gpt, upstream, relay):
    first = gpt.responses.create(model="m-nat", input="first", store=False)
    assert upstream.last_request.json["store"] is False
    with pytest.raises(openai.NotFoundError):
        gpt.responses.retrieve(first.id)


def test_a_stream_without_its_final_event_is_a_failure_and_never_cached(upstream, relay, gpt):
    upstream.script(Fault.truncate(after_chunks=5))
    with pytest.raises(openai.APIError), gpt.responses.stream(model="m-nat", input=QUESTION) as events:
        for _ in events:
            pass
    (row,) = relay.ledger.rows()
    assert row.status == 502
    with pytest.raises(openai.NotFoundError):  # nothing stored under any id
        gpt.responses.retrieve("resp_" + "0" * 24)


def test_response_failed_and_error_events_are_failures(upstream, relay, gpt):
    failed = orjson.dumps({"type": "response.failed", "sequence_number": 2, "response": {
        "id": "resp_x", "object": "response", "status": "failed", "output": [], "usage": None,
        "error": {"code": "server_error", "message": f"boom {UPSTREAM_KEY}"}}})
    head = [b'event: response.created\ndata: {"type":"response.created","sequence_number":0,"response":{"id":"resp_x",'
            b'"object":"response","status":"in_progress","output":[]}}\n\n',
            b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":1,'
            b'"item_id":"m","output_index":0,"content_index":0,"delta":"Hi"}\n\n',
            b"event: response.failed\ndata: " + failed + b"\n\n"]
    upstream.script(Fault.raw(events=head))
    with gpt.responses.with_streaming_response.create(model="m-nat", input=QUESTION, stream=True) as raw:
        text = b"".join(raw.iter_bytes()).decode()
    assert "response.failed" in text and UPSTREAM_KEY not in text and "[redacted]" in text
    (row,) = relay.ledger.rows()
    assert row.status == 502


def test_an_upstream_error_is_the_callers_error(upstream, gpt, relay):
    upstream.script(Fault.status(429, retry_after=3))
    with pytest.raises(openai.RateLimitError):
        gpt.responses.create(model="m-nat", input=QUESTION)
    (row,) = relay.ledger.rows()
    assert row.status == 429


def test_the_flag_is_refused_on_a_kind_that_cannot_serve_it(upstream):
    bad = config(upstream)
    bad["providers"]["an"]["responses"] = True
    with pytest.raises(ConfigurationError, match="providers.an.responses"):
        Relay(bad)


def test_azure_routes_to_its_responses_api(upstream):
    from asgi_ai_relay.config import load_config
    from asgi_ai_relay.providers import build_provider

    cfg = load_config({
        "providers": {
            "v1": {"kind": "azure_openai", "base_url": "https://r.openai.azure.com", "api_key": "k" * 30, "responses": True},
            "classic": {"kind": "azure_openai", "base_url": "https://r.openai.azure.com", "api_key": "k" * 30,
                        "api_version": "2025-04-01-preview", "responses": True},
        },
        "models": {"a": {"provider": "v1", "upstream": "dep"}},
    })
    model = cfg.models["a"]
    urls = {}
    for name in ("v1", "classic"):
        provider = build_provider(cfg.providers[name], None, cfg.timeouts)
        assert provider.native_responses
        urls[name] = provider.responses_url(model)
    assert urls == {"v1": "https://r.openai.azure.com/openai/v1/responses",
                    "classic": "https://r.openai.azure.com/openai/responses?api-version=2025-04-01-preview"}


@pytest.mark.skipif(_codex_binary() is None, reason="the Codex CLI is not installed (set CODEX_BIN)")
def test_codex_exec_through_native_pass_through(server, upstream, relay, tmp_path):
    done = _codex(server, tmp_path, "m-nat", "Say hello to the relay")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Echo: " in done.stdout and "Say hello to the relay" in done.stdout
    rows = [r for r in relay.ledger.rows() if r.endpoint == "responses"]
    assert len(rows) >= 2 and all(r.status == 200 and r.stream and r.provider == "nat" and r.completion_tokens > 0 for r in rows)
    first, last = upstream.requests[0], upstream.requests[-1]
    assert first.path == last.path == "/v1/responses" and first.json["model"] == "gpt-4o-mini"
    assert any(t.get("type") == "namespace" for t in first.json["tools"])  # Codex's own tool shapes, as it sent them
    (output,) = [item for item in last.json["input"] if item.get("type") == "function_call_output"]
    (call,) = [item for item in last.json["input"] if item.get("type") == "function_call"]
    assert output["call_id"] == call["call_id"]
