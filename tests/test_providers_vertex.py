"""Google Vertex AI through the relay: Gemini (``:generateContent`` / ``:streamGenerateContent``)
and Claude (``:rawPredict`` / ``:streamRawPredict``), with OAuth tokens google-auth gets from a
service-account file at the fake's own token endpoint (which verifies the signed assertion),
refreshed off the request path. Driven by the official openai and anthropic SDKs."""

from __future__ import annotations

import asyncio

import anthropic
import openai
import orjson
import pytest
from starlette.applications import Starlette

from asgi_ai_relay import Relay, RelayMiddleware
from asgi_ai_relay.config import ModelConfig, load_config
from asgi_ai_relay.errors import ConfigurationError
from tests.fake_cloud import FakeVertex, service_account_file
from tests.fake_upstream import Fault, echo_reply, fake_tool_arguments, plan_reply
from tests.live import LiveServer
from tests.relay_calls import until

PROJECT, REGION = "relay-test", "europe-west4"
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
OA_TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": SCHEMA}}]
AN_TOOLS = [{"name": "get_weather", "description": "Weather", "input_schema": SCHEMA}]
MESSAGES = [{"role": "user", "content": "Weather in Paris please"}]
ARGS = fake_tool_arguments(SCHEMA, "Weather in Paris please")
PRICE = {"input": 1, "output": 4}


@pytest.fixture(scope="module")
def vertex():
    with FakeVertex(project=PROJECT, region=REGION) as fake:
        yield fake


@pytest.fixture(scope="module")
def key_file(vertex, tmp_path_factory):
    path = tmp_path_factory.mktemp("gcp") / "service-account.json"
    vertex.public_key = service_account_file(path, f"{vertex.url}/token")
    return path


@pytest.fixture(autouse=True)
def _reset(vertex, secret_scan):
    vertex.reset()
    vertex.refusals.clear()
    vertex.issued.clear()
    vertex.expires_in = 3600
    secret_scan.add("GOOGLE_TOKEN", "ya29.fake-")


def config(vertex, key_file, **extra):
    common = {"project": PROJECT, "region": REGION, "base_url": f"{vertex.url}/v1", "credential": str(key_file), **extra}
    return {
        "storage": {"ledger": "memory://"},
        "providers": {"gcp": {"kind": "vertex", **common}, "gcp-claude": {"kind": "vertex_anthropic", **common}},
        "models": {
            "gemini": {"provider": "gcp", "upstream": "gemini-2.5-flash", "price": PRICE},
            "claude": {"provider": "gcp-claude", "upstream": "claude-sonnet-4-5@20250929", "price": PRICE},
        },
        "retry": {"max_attempts": 1},
    }


@pytest.fixture
def relay(vertex, key_file):
    return Relay(config(vertex, key_file))


@pytest.fixture
def server(relay):
    with LiveServer(RelayMiddleware(Starlette(), relay=relay)) as live:
        yield live


@pytest.fixture
def gpt(server):
    return openai.OpenAI(base_url=f"{server.url}/ai/v1", api_key="client-secret-abc", max_retries=0)


@pytest.fixture
def claude(server):
    return anthropic.Anthropic(base_url=f"{server.url}/ai", api_key="client-secret-abc", max_retries=0)


def last_call(vertex):
    return [r for r in vertex.requests if r.path != "/token"][-1]


def model_path(publisher, model, method):
    return f"/v1/projects/{PROJECT}/locations/{REGION}/publishers/{publisher}/models/{model}:{method}"


def test_gemini_whole_with_a_tool_call_and_a_service_account_token(gpt, vertex, relay):
    reply = gpt.chat.completions.create(model="gemini", messages=MESSAGES, tools=OA_TOOLS)
    request = vertex.last_request
    assert [r.path for r in vertex.requests] == ["/token", model_path("google", "gemini-2.5-flash", "generateContent")]
    assert request.headers["authorization"] == f"Bearer {vertex.issued[0]}" and "x-goog-api-key" not in request.headers
    assert "client-secret-abc" not in repr(request.headers) and vertex.refusals == []
    (call,) = reply.choices[0].message.tool_calls
    assert orjson.loads(call.function.arguments) == ARGS and reply.choices[0].finish_reason == "tool_calls"
    plan = plan_reply(request.json, "gemini")
    assert reply.usage.prompt_tokens == plan.prompt_tokens
    (row,) = relay.ledger.rows()
    assert (row.provider, row.status) == ("gcp", 200)


def test_gemini_stream_with_usage(gpt, vertex, relay):
    chunks = list(gpt.chat.completions.create(model="gemini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}))
    request = vertex.last_request
    assert request.path == model_path("google", "gemini-2.5-flash", "streamGenerateContent") and request.query == {"alt": "sse"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == echo_reply({"messages": MESSAGES}, "openai")
    plan = plan_reply(request.json, "gemini")
    assert chunks[-1].usage.completion_tokens == plan.completion_tokens
    assert relay.ledger.rows()[0].completion_tokens == plan.completion_tokens


def test_claude_on_vertex_whole_and_streamed_with_the_anthropic_sdk(claude, vertex, relay):
    message = claude.messages.create(model="claude", max_tokens=100, messages=MESSAGES)
    request = vertex.last_request
    assert request.path == model_path("anthropic", "claude-sonnet-4-5@20250929", "rawPredict")
    assert request.json["anthropic_version"] == "vertex-2023-10-16" and "model" not in request.json
    assert message.content[0].text == echo_reply({"messages": MESSAGES}, "anthropic")
    with claude.messages.stream(model="claude", max_tokens=100, messages=MESSAGES, tools=AN_TOOLS) as stream:
        final = stream.get_final_message()
    assert vertex.last_request.path.endswith(":streamRawPredict") and vertex.refusals == []
    (block,) = final.content
    assert block.type == "tool_use" and block.input == ARGS and final.usage.output_tokens > 0
    assert len(vertex.issued) == 1  # one token served both calls
    assert [r.status for r in relay.ledger.rows()] == [200, 200]


def test_claude_on_vertex_counts_tokens(claude, vertex):
    counted = claude.messages.count_tokens(model="claude", messages=MESSAGES)
    request = last_call(vertex)
    assert request.path == model_path("anthropic", "count-tokens", "rawPredict") and vertex.refusals == []
    assert request.json["model"] == "claude-sonnet-4-5@20250929"
    assert counted.input_tokens == plan_reply({"messages": MESSAGES}, "anthropic").prompt_tokens


def test_openai_sdk_to_claude_on_vertex_streamed(gpt, vertex):
    gpt.chat.completions.create(model="claude", messages=MESSAGES)  # fetches the token: the script is for the stream
    vertex.script(Fault.cache(read=4))
    chunks = list(gpt.chat.completions.create(model="claude", messages=MESSAGES, stream=True, stream_options={"include_usage": True}))
    assert vertex.last_request.path.endswith(":streamRawPredict")
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith("Echo: ")
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == 4


def test_token_refreshed_before_expiry_off_the_request_path(gpt, vertex):
    vertex.expires_in = 200  # inside the 300 s margin at once
    gpt.chat.completions.create(model="gemini", messages=MESSAGES)
    first = last_call(vertex).headers["authorization"]
    gpt.chat.completions.create(model="gemini", messages=MESSAGES)
    assert last_call(vertex).headers["authorization"] == first  # not held up by the refresh
    asyncio.run(until(lambda: len(vertex.issued) == 2))
    gpt.chat.completions.create(model="gemini", messages=MESSAGES)
    assert last_call(vertex).headers["authorization"] == f"Bearer {vertex.issued[1]}"


def test_a_refused_token_request_is_an_upstream_error(vertex, tmp_path):
    broken = tmp_path / "other.json"
    service_account_file(broken, f"{vertex.url}/token")  # a key the fake does not know
    relay = Relay(config(vertex, broken))
    with LiveServer(RelayMiddleware(Starlette(), relay=relay)) as live:
        client = openai.OpenAI(base_url=f"{live.url}/ai/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="gemini", messages=MESSAGES)
    assert caught.value.status_code == 502 and "could not get an access token (RefreshError)" in caught.value.message
    assert [r.path for r in vertex.requests] == ["/token"] and relay.ledger.rows()[0].status == 502


def test_endpoints_regional_global_and_multi_region(tmp_path):
    def provider(region, kind="vertex"):
        return load_config({"providers": {"g": {"kind": kind, "project": "p", "region": region, "api_key": "vertex-express-key-for-tests"}}}).providers["g"]

    assert provider("us-east5").base_url == "https://us-east5-aiplatform.googleapis.com/v1"
    assert provider("global").base_url == "https://aiplatform.googleapis.com/v1"
    assert provider("eu", "vertex_anthropic").base_url == "https://aiplatform.eu.rep.googleapis.com/v1"
    relay = Relay({"providers": {"g": {"kind": "vertex_anthropic", "project": "p", "region": "global", "api_key": "vertex-express-key-for-tests"}}, "storage": {"ledger": "memory://"}})
    url = relay.providers["g"].url(ModelConfig("c", "g", "claude-opus-4-1@20250805"), True)
    assert url == "https://aiplatform.googleapis.com/v1/projects/p/locations/global/publishers/anthropic/models/claude-opus-4-1@20250805:streamRawPredict"
    with pytest.raises(ConfigurationError, match=r"providers.g.project: required for kind 'vertex'"):
        load_config({"providers": {"g": {"kind": "vertex", "region": "global"}}})
    with pytest.raises(ConfigurationError, match=r"providers.g.credential: cannot load Google credentials"):
        Relay({"providers": {"g": {"kind": "vertex", "project": "p", "region": "global", "credential": str(tmp_path / "missing.json")}}}).providers


def test_gemini_native_callers_reach_vertex_as_sent(server, vertex, relay):
    """Gemini's own API in (Gemini CLI), Vertex out: the body as sent, the URL Vertex's."""
    import httpx

    body = {"contents": [{"role": "user", "parts": [{"text": "Weather in Paris please"}]}]}
    base = f"{server.url}/ai/v1beta/models/gemini"
    whole = httpx.post(f"{base}:generateContent", json=body, headers={"x-goog-api-key": "client-secret-abc"})
    assert whole.status_code == 200 and whole.json()["candidates"][0]["content"]["parts"][0]["text"].startswith("Echo: ")
    assert last_call(vertex).path == model_path("google", "gemini-2.5-flash", "generateContent") and last_call(vertex).json == body
    streamed = httpx.post(f"{base}:streamGenerateContent?alt=sse", json=body)
    assert streamed.status_code == 200 and streamed.text.startswith("data: ")
    assert last_call(vertex).query == {"alt": "sse"}
    counted = httpx.post(f"{base}:countTokens", json=body)
    assert counted.status_code == 200 and counted.headers["x-relay-token-count"] == "provider"
    assert last_call(vertex).path == model_path("google", "gemini-2.5-flash", "countTokens")
    assert counted.json()["totalTokens"] == plan_reply(body, "gemini").prompt_tokens
    assert all("client-secret-abc" not in repr(r.headers) for r in vertex.requests)
