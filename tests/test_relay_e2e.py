"""End to end: the official openai SDK -> uvicorn -> host app + RelayMiddleware -> fake upstream."""

from __future__ import annotations

import httpx
import openai
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from asgi_ai_relay import Relay, RelayMiddleware
from tests.conftest import RELAY_KEY, UPSTREAM_KEY, make_config
from tests.fake_upstream import echo_reply, plan_reply
from tests.live import LiveServer


def host_app(relay: Relay) -> RelayMiddleware:
    async def home(request):  # the host's own route
        return PlainTextResponse("host home")

    return RelayMiddleware(Starlette(routes=[Route("/", home)]), relay=relay)


@pytest.fixture
def relay(upstream):
    return Relay(make_config(upstream))


@pytest.fixture
def server(relay):
    with LiveServer(host_app(relay)) as live:
        yield live


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/ai/v1", api_key="client-credential-xyz", max_retries=0)


MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello relay world"}]


def test_whole_answer_through_fake_upstream(client, upstream, relay):
    answer = client.chat.completions.with_raw_response.create(
        model="test-model", messages=MESSAGES, temperature=0.2, extra_body={"custom_param": {"keep": True}}
    )
    completion = answer.parse()
    expected = plan_reply({"model": "gpt-4o-mini", "messages": MESSAGES}, "openai")
    assert completion.choices[0].message.content == echo_reply({"messages": MESSAGES}, "openai")
    assert completion.usage.prompt_tokens == expected.prompt_tokens
    assert completion.usage.completion_tokens == expected.completion_tokens
    assert answer.headers["x-relay-provider"] == "up"
    assert float(answer.headers["x-relay-cost-usd"]) == pytest.approx(
        (expected.prompt_tokens * 2.5 + expected.completion_tokens * 10) / 1e6
    )
    assert answer.headers["x-request-id"]

    sent = upstream.last_request
    assert sent.path == "/v1/chat/completions"
    assert sent.json["model"] == "gpt-4o-mini"  # alias rewritten to the upstream name
    assert sent.json["custom_param"] == {"keep": True}  # unknown parameters pass through
    assert sent.json["temperature"] == 0.2
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert "client-credential-xyz" not in str(sent.headers)  # the client's credential stays here

    rows = relay.ledger.rows()
    assert [(r.model, r.provider, r.status, r.prompt_tokens) for r in rows] == [
        ("test-model", "up", 200, expected.prompt_tokens)
    ]


def test_streamed_answer_with_usage(client, upstream, relay):
    stream = client.chat.completions.create(
        model="test-model", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == echo_reply({"messages": MESSAGES}, "openai")
    expected = plan_reply({"messages": MESSAGES}, "openai")
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == expected.completion_tokens
    assert upstream.last_request.json["stream_options"] == {"include_usage": True}
    (row,) = relay.ledger.rows()
    assert row.stream and row.status == 200 and row.completion_tokens == expected.completion_tokens
    assert row.ttfb_ms is not None and row.ttfb_ms <= row.latency_ms


def test_stream_without_usage_request_hides_usage_chunk_but_records_usage(client, upstream, relay):
    chunks = list(client.chat.completions.create(model="test-model", messages=MESSAGES, stream=True))
    assert all(c.choices for c in chunks)  # no usage-only chunk the client did not ask for
    assert upstream.last_request.json["stream_options"] == {"include_usage": True}  # but the relay asked
    (row,) = relay.ledger.rows()
    assert row.completion_tokens == plan_reply({"messages": MESSAGES}, "openai").completion_tokens
    assert row.cost_usd > 0


def test_mock_provider_whole_and_streamed(client):
    whole = client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
    assert whole.choices[0].message.content.startswith("This is a mock reply from gpt-4.1")
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens > 0
    streamed = client.chat.completions.create(
        model="gpt-4.1", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(streamed)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_host_routes_untouched(server):
    assert httpx.get(f"{server.url}/").text == "host home"
    assert httpx.get(f"{server.url}/aiextra").status_code == 404  # not under the prefix


def test_models_list(client):
    models = {m.id: m for m in client.models.list().data}
    assert {"gpt-4.1", "claude-sonnet-4.5", "gemini-2.5-flash", "deepseek-v3.2", "test-model"} <= set(models)
    gpt = models["gpt-4.1"].model_dump()
    assert gpt["pricing"]["input"] == "2.00" and gpt["pricing"]["output"] == "8.00"
    assert models["test-model"].model_dump()["provider"] == "up"


def test_relay_keys_required(upstream):
    relay = Relay(make_config(upstream, require_auth=True, api_keys=[{"key": "env:TEST_RELAY_KEY", "caller": "team-a"}]))
    with LiveServer(host_app(relay)) as live:
        anonymous = openai.OpenAI(base_url=f"{live.url}/ai/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as info:
            anonymous.chat.completions.create(model="test-model", messages=MESSAGES)
        assert info.value.body["code"] == "invalid_api_key"
        missing = httpx.post(f"{live.url}/ai/v1/chat/completions", json={"model": "test-model", "messages": MESSAGES})
        assert missing.status_code == 401 and missing.json()["error"]["type"] == "authentication_error"
        good = openai.OpenAI(base_url=f"{live.url}/ai/v1", api_key=RELAY_KEY, max_retries=0)
        assert good.chat.completions.create(model="test-model", messages=MESSAGES).choices
    assert RELAY_KEY not in str(upstream.last_request.headers)
    assert [r.caller for r in relay.ledger.rows()] == ["anonymous", "anonymous", "team-a"]
