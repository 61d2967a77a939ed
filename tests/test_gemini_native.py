"""The Gemini-native routes over real HTTP (httpx -> uvicorn -> relay -> the fake upstream in
OpenAI, Anthropic and Gemini formats): whole, streamed (SSE and JSON array), tools, countTokens,
the model list, Gemini's auth conventions and error shape."""

from __future__ import annotations

import httpx
import orjson
import pytest
from starlette.applications import Starlette

from asgi_ai_relay import Relay, RelayMiddleware, RelayRequest
from asgi_ai_relay.tokens import prompt_tokens
from tests.conftest import UPSTREAM_KEY
from tests.fake_upstream import Fault, fake_tool_arguments, plan_reply
from tests.live import LiveServer
from tests.test_formats_e2e import API, UPSTREAM_MODEL, config, cost

KEY = "client-gemini-key-42"
CONTENTS = [{"role": "user", "parts": [{"text": "Weather in Paris please"}]}]
BODY = {"contents": CONTENTS, "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {"temperature": 0.5, "maxOutputTokens": 100}}
#: Gemini's own schema dialect (upper-case types), as older clients send it.
SCHEMA = {"type": "OBJECT", "properties": {"city": {"type": "STRING"}, "days": {"type": "INTEGER", "nullable": True}}, "required": ["city"]}
TOOLS = [{"functionDeclarations": [{"name": "get_weather", "description": "Weather", "parameters": SCHEMA}]}]
JSON_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": ["integer", "null"]}}, "required": ["city"]}
ECHO = "Echo: Weather in Paris please"


@pytest.fixture
def relay(upstream):
    settings = config(upstream)
    settings.update(require_auth=True, api_keys=[{"key": KEY, "caller": "gem"}])
    return Relay(settings)


@pytest.fixture
def client(relay, secret_scan):
    secret_scan.add("RELAY_KEY", KEY)
    with LiveServer(RelayMiddleware(Starlette(), relay=relay)) as live:
        with httpx.Client(base_url=f"{live.url}/ai/v1beta", headers={"x-goog-api-key": KEY}, timeout=10) as http:
            yield http


def events(text):
    return [orjson.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")]


def assert_upstream(upstream, provider):
    request = upstream.last_request
    assert request.api == API[provider]
    assert KEY not in str(request.headers) and KEY not in request.query_string
    return request


@pytest.mark.parametrize("provider", ["oa", "an", "ge"])
def test_generate_content_to_every_format(client, upstream, relay, provider):
    answer = client.post(f"/models/m-{provider}:generateContent", json=BODY)
    assert answer.status_code == 200, answer.text
    request = assert_upstream(upstream, provider)
    plan = plan_reply(request.json, request.api)
    payload = answer.json()
    (candidate,) = payload["candidates"]
    assert candidate["content"] == {"role": "model", "parts": [{"text": ECHO}]} and candidate["finishReason"] == "STOP"
    usage = payload["usageMetadata"]
    assert (usage["promptTokenCount"], usage["candidatesTokenCount"]) == (plan.prompt_tokens, plan.completion_tokens)
    if provider == "ge":  # the body as the caller sent it, the model in the URL
        assert request.json == BODY and request.path == f"/v1beta/models/{UPSTREAM_MODEL['ge']}:generateContent"
    elif provider == "oa":
        assert request.json["messages"][0] == {"role": "system", "content": "Be brief."}
        assert (request.json["temperature"], request.json["max_tokens"]) == (0.5, 100)
    else:
        assert request.json["system"] == "Be brief." and request.json["max_tokens"] == 100
    (row,) = relay.ledger.rows()
    assert (row.endpoint, row.caller, row.model, row.provider, row.status, row.stream) == ("generateContent", "gem", f"m-{provider}", provider, 200, False)
    assert (row.prompt_tokens, row.completion_tokens) == (plan.prompt_tokens, plan.completion_tokens)
    assert float(row.cost_usd) == pytest.approx(cost(plan.prompt_tokens, plan.completion_tokens))


@pytest.mark.parametrize("provider", ["oa", "an", "ge"])
def test_stream_generate_content_sse(client, upstream, relay, provider):
    answer = client.post(f"/models/m-{provider}:streamGenerateContent?alt=sse", json=BODY)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
    request = assert_upstream(upstream, provider)
    assert request.stream
    plan = plan_reply(request.json, request.api)
    chunks = events(answer.text)
    text = "".join(p.get("text", "") for c in chunks for p in c["candidates"][0]["content"]["parts"])
    assert text == ECHO and len(chunks) > 2  # piece by piece, not buffered
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert chunks[-1]["usageMetadata"]["candidatesTokenCount"] == plan.completion_tokens
    (row,) = relay.ledger.rows()
    assert (row.endpoint, row.status, row.stream, row.completion_tokens) == ("streamGenerateContent", 200, True, plan.completion_tokens)


@pytest.mark.parametrize("provider", ["oa", "ge"])
def test_stream_generate_content_without_sse_is_a_json_array(client, upstream, provider):
    answer = client.post(f"/models/m-{provider}:streamGenerateContent", json=BODY)
    assert answer.status_code == 200
    (payload,) = answer.json()
    assert payload["candidates"][0]["content"]["parts"] == [{"text": ECHO}]
    assert not upstream.last_request.stream  # asked whole, answered as the array stream's one element


@pytest.mark.parametrize("provider", ["oa", "an", "ge"])
@pytest.mark.parametrize("stream", [False, True])
def test_function_call_round_trip(client, upstream, provider, stream):
    path = f"/models/m-{provider}:" + ("streamGenerateContent?alt=sse" if stream else "generateContent")
    first = client.post(path, json={"contents": CONTENTS, "tools": TOOLS})
    assert first.status_code == 200, first.text
    chunks = events(first.text) if stream else [first.json()]
    calls = [p["functionCall"] for c in chunks for p in c["candidates"][0]["content"]["parts"] if "functionCall" in p]
    (call,) = calls
    assert call["name"] == "get_weather" and call["args"] == fake_tool_arguments(JSON_SCHEMA, "Weather in Paris please")
    if provider == "oa":  # Gemini's schema dialect became JSON Schema for the other formats
        assert upstream.last_request.json["tools"][0]["function"]["parameters"] == JSON_SCHEMA
    turn = [*CONTENTS, {"role": "model", "parts": [{"functionCall": call}]},
            {"role": "user", "parts": [{"functionResponse": {"id": call.get("id"), "name": "get_weather", "response": {"sky": "sunny"}}}]}]
    second = client.post(f"/models/m-{provider}:generateContent", json={"contents": turn, "tools": TOOLS})
    assert second.status_code == 200 and second.json()["candidates"][0]["content"]["parts"] == [{"text": ECHO}]
    sent = upstream.last_request.json
    if provider == "oa":
        assert sent["messages"][-2]["tool_calls"][0]["id"] == sent["messages"][-1]["tool_call_id"]
        assert sent["messages"][-1] == {"role": "tool", "tool_call_id": sent["messages"][-1]["tool_call_id"], "content": '{"sky":"sunny"}'}
    elif provider == "an":
        assert sent["messages"][-1]["content"][0]["tool_use_id"] == sent["messages"][-2]["content"][-1]["id"]
    else:
        assert sent["contents"][-1]["parts"][0]["functionResponse"]["response"] == {"sky": "sunny"}


@pytest.mark.parametrize("provider", ["oa", "an"])
def test_count_tokens_locally_for_other_formats(client, upstream, relay, provider):
    answer = client.post(f"/models/m-{provider}:countTokens", json={"contents": CONTENTS})
    assert answer.status_code == 200 and answer.headers["x-relay-token-count"] == "estimate"
    assert answer.json() == {"totalTokens": prompt_tokens({"contents": CONTENTS})} and answer.json()["totalTokens"] > 0
    assert upstream.requests == []  # no upstream call
    (row,) = relay.ledger.rows()
    assert (row.endpoint, row.status, row.cost_usd) == ("countTokens", 200, 0)


def test_count_tokens_asks_a_gemini_provider(client, upstream):
    answer = client.post("/models/m-ge:countTokens", json={"contents": CONTENTS})
    assert answer.status_code == 200 and answer.headers["x-relay-token-count"] == "provider"
    assert answer.json() == {"totalTokens": plan_reply({"contents": CONTENTS}, "gemini").prompt_tokens}
    request = assert_upstream(upstream, "ge")
    assert request.path == f"/v1beta/models/{UPSTREAM_MODEL['ge']}:countTokens" and request.json == {"contents": CONTENTS}


def test_model_list_in_gemini_shape(client):
    models = client.get("/models").json()["models"]
    entry = next(m for m in models if m["name"] == "models/m-ge")
    assert "generateContent" in entry["supportedGenerationMethods"] and entry["displayName"] == "m-ge"
    assert all(not m["name"].startswith("models/text-embedding") for m in models)
    assert client.get("/models/m-oa").json()["name"] == "models/m-oa"
    missing = client.get("/models/nope")
    assert missing.status_code == 404 and missing.json()["error"]["status"] == "NOT_FOUND"


def test_query_key_and_errors_in_gemini_shape(relay, upstream):
    # (httpx logs the URL with its ?key=, so the key is not watched in log records here)
    with LiveServer(RelayMiddleware(Starlette(), relay=relay)) as live:
        base = f"{live.url}/ai/v1beta/models"
        assert httpx.post(f"{base}/m-oa:generateContent?key={KEY}", json=BODY).status_code == 200
        anonymous = httpx.post(f"{base}/m-oa:generateContent", json=BODY)
        wrong = httpx.post(f"{base}/m-oa:generateContent", json=BODY, headers={"x-goog-api-key": "nope"})
        headers = {"x-goog-api-key": KEY}
        unknown = httpx.post(f"{base}/nope:generateContent", json=BODY, headers=headers)
        empty = httpx.post(f"{base}/m-oa:generateContent", json={"contents": []}, headers=headers)
        search = httpx.post(f"{base}/m-oa:generateContent", json={**BODY, "tools": [{"googleSearch": {}}]}, headers=headers)
        action = httpx.post(f"{base}/m-oa:embedSomething", json=BODY, headers=headers)
    for answer, status, name in ((anonymous, 401, "UNAUTHENTICATED"), (wrong, 401, "UNAUTHENTICATED"), (unknown, 404, "NOT_FOUND"),
                                 (empty, 400, "INVALID_ARGUMENT"), (search, 400, "INVALID_ARGUMENT"), (action, 404, "NOT_FOUND")):
        assert answer.status_code == status
        assert answer.json()["error"]["code"] == status and answer.json()["error"]["status"] == name, answer.text
    assert "googleSearch" in search.json()["error"]["message"]
    (sent,) = upstream.requests
    assert KEY not in sent.query_string and KEY not in str(sent.headers) and KEY not in sent.body.decode()
    rows = relay.ledger.rows()
    assert [r.status for r in rows] == [200, 401, 401, 404, 400, 400, 404]


def test_mid_stream_failure_ends_with_a_gemini_error_event(client, upstream, relay):
    upstream.script(Fault.drop(after_chunks=3))
    answer = client.post("/models/m-oa:streamGenerateContent?alt=sse", json=BODY)
    chunks = events(answer.text)
    assert chunks[0]["candidates"][0]["content"]["parts"][0]["text"]
    assert chunks[-1]["error"]["code"] == 502 and chunks[-1]["error"]["status"] == "UNAVAILABLE"
    (row,) = relay.ledger.rows()
    assert row.status == 502


def test_cached_answer_replays_byte_for_byte(client, upstream, relay):
    body = {**BODY, "generationConfig": {"temperature": 0}}
    first = client.post("/models/m-oa:generateContent", json=body)
    second = client.post("/models/m-oa:generateContent", json=body)
    array = client.post("/models/m-oa:streamGenerateContent", json=body)  # another shape: another entry
    assert second.headers["x-relay-cache"] == "hit" and second.content == first.content
    assert array.headers["x-relay-cache"] == "miss" and array.json()[0]["candidates"] == first.json()["candidates"]
    assert len(upstream.requests) == 2
    assert UPSTREAM_KEY not in first.text


async def test_max_output_tokens_over_the_models_limit_is_refused(upstream):
    settings = config(upstream)
    settings["models"]["m-oa"]["max_output_tokens"] = 50
    relay = Relay(settings)
    body = orjson.dumps({**BODY, "generationConfig": {"maxOutputTokens": 51}})
    answer = await relay.handle(RelayRequest("POST", "/v1beta/models/m-oa:generateContent", {"content-type": "application/json"}, body))
    assert answer.status == 400 and "generationConfig.maxOutputTokens" in orjson.loads(answer.body)["error"]["message"]
    assert upstream.requests == []
    await relay.shutdown()


async def test_a_caller_with_model_limits_sees_and_calls_only_its_models(upstream):
    from asgi_ai_relay.policy import limited_caller

    async def hook(request):
        return limited_caller("intern", models=["m-oa"])

    relay = Relay(config(upstream), auth=hook)

    async def ask(method, path, body=b"", headers=None):
        answer = await relay.handle(RelayRequest(method, path, {"content-type": "application/json", **(headers or {})}, body))
        return answer.status, orjson.loads(answer.body)

    status, listed = await ask("GET", "/v1beta/models")
    assert status == 200 and [m["name"] for m in listed["models"]] == ["models/m-oa"]
    status, anthropic_list = await ask("GET", "/v1/models", headers={"anthropic-version": "2023-06-01"})
    assert [m["id"] for m in anthropic_list["data"]] == ["m-oa"]
    assert (await ask("GET", "/v1beta/models/m-an"))[0] == 404
    status, refused = await ask("POST", "/v1beta/models/m-an:generateContent", orjson.dumps(BODY))
    assert status == 403 and refused["error"]["status"] == "PERMISSION_DENIED"
    status, counted = await ask("POST", "/v1beta/models/m-an:countTokens", orjson.dumps(BODY))
    assert status == 403
    assert upstream.requests == []
    await relay.shutdown()
