"""Tests of the fake upstream provider (tests/fake_upstream.py) over real HTTP."""

from __future__ import annotations

import gzip
import json
import logging
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.fake_upstream import (
    Behaviour,
    FakeUpstream,
    Fault,
    RecordedRequest,
    count_words,
    echo_reply,
    fake_tool_arguments,
    fake_upstream_fixture,
    plan_reply,
    prompt_token_count,
)

KEY = "sk-fake-test-key"
USER = [{"role": "user", "content": "what is the weather in Paris"}]
WEATHER_TOOL_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}, "metric": {"type": "boolean"}},
    "required": ["city"],
}
OPENAI_TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_TOOL_SCHEMA}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
]
ANTHROPIC_TOOLS = [{"name": "get_weather", "description": "Weather", "input_schema": WEATHER_TOOL_SCHEMA}]
GEMINI_TOOLS = [{"functionDeclarations": [{"name": "get_weather", "parameters": WEATHER_TOOL_SCHEMA}]}]
ANTHROPIC_STREAM_ORDER = ["message_start", "content_block_start", "ping"]
ANTHROPIC_STREAM_END = ["content_block_stop", "message_delta", "message_stop"]
GEMINI = "/v1beta/models/gemini-2.0-flash"


# --------------------------------------------------------------------------
# fixtures and helpers
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[FakeUpstream]:
    with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture
def up(server: FakeUpstream) -> Iterator[FakeUpstream]:
    server.reset()
    yield server
    server.reset()


@pytest.fixture(scope="module")
def keyed() -> Iterator[FakeUpstream]:
    with FakeUpstream(api_key=KEY) as upstream:
        yield upstream


factory_upstream = fake_upstream_fixture(name="factory_upstream", api_key=KEY)


@pytest.fixture
def client(up: FakeUpstream) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=up.url, timeout=5.0) as http:
        yield http


def parse_sse(raw: str) -> list[tuple[str | None, Any]]:
    """(event name, parsed data) per SSE event; ``[DONE]`` stays a string."""
    events: list[tuple[str | None, Any]] = []
    for block in raw.replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])
        payload = "\n".join(data)
        events.append((name, payload if payload == "[DONE]" else json.loads(payload)))
    return events


def openai_body(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": USER, **extra}


def anthropic_body(**extra: Any) -> dict[str, Any]:
    return {"model": "claude-sonnet-4-5", "max_tokens": 256, "messages": USER, **extra}


def gemini_body(**extra: Any) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": "what is the weather in Paris"}]}], **extra}


def read_events_until_error(http: httpx.Client, path: str, body: dict[str, Any]) -> tuple[str, Exception | None]:
    """Stream a response; return the text received and the error that ended it."""
    received: list[str] = []
    try:
        with http.stream("POST", path, json=body) as response:
            for text in response.iter_text():
                received.append(text)
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ReadTimeout) as exc:
        return "".join(received), exc
    return "".join(received), None


# --------------------------------------------------------------------------
# lifecycle and recording
# --------------------------------------------------------------------------


def test_starts_fast_on_free_local_port_and_stops_promptly() -> None:
    # Bounds well under the helper's own 5 s startup and shutdown timeouts (start waits for the
    # server to be ready, stop needs no forced exit), with room for a loaded machine's stalls.
    started = time.perf_counter()
    upstream = FakeUpstream()
    with upstream:
        assert time.perf_counter() - started < 2
        assert upstream.url == f"http://127.0.0.1:{upstream.port}"
        assert httpx.get(upstream.url + "/v1/models").status_code == 200
        stopping = time.perf_counter()
    assert time.perf_counter() - stopping < 4  # not the 5 s join and forced exit
    assert not upstream.running


def test_records_method_path_query_headers_and_body(up: FakeUpstream, client: httpx.Client) -> None:
    raw = json.dumps(openai_body()).encode()
    response = client.post(
        "/v1/chat/completions?trace=1",
        content=raw,
        headers={"Content-Type": "application/json", "X-Custom": "Yes", "Authorization": "Bearer abc"},
    )
    assert response.status_code == 200
    assert response.headers["x-fake-upstream-request"] == "0"
    [request] = up.requests
    assert isinstance(request, RecordedRequest)
    assert (request.method, request.path, request.query) == ("POST", "/v1/chat/completions", {"trace": "1"})
    assert request.headers["x-custom"] == "Yes"
    assert request.headers["authorization"] == "Bearer abc"
    assert request.body == raw
    assert request.json == openai_body()
    assert request.api == "openai"
    assert up.last_request is request


def test_recording_is_thread_safe(up: FakeUpstream) -> None:
    def call(index: int) -> int:
        body = openai_body(messages=[{"role": "user", "content": f"message {index}"}])
        return httpx.post(up.url + "/v1/chat/completions", json=body, timeout=5).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(call, range(24)))
    assert statuses == [200] * 24
    texts = sorted(r.json["messages"][0]["content"] for r in up.wait_for_requests(24, timeout=2))
    assert texts == sorted(f"message {i}" for i in range(24))


def test_stop_refuses_connections_and_start_reuses_the_port() -> None:
    with FakeUpstream() as upstream:
        port = upstream.port
        upstream.stop()
        with pytest.raises(httpx.ConnectError):
            httpx.get(upstream.url + "/v1/models", timeout=2)
        upstream.start()
        assert upstream.port == port
        assert httpx.get(upstream.url + "/v1/models", timeout=2).status_code == 200


def test_stop_does_not_hang_on_a_stalled_stream() -> None:
    with FakeUpstream() as upstream, httpx.Client(base_url=upstream.url, timeout=httpx.Timeout(5, read=0.2)) as http:
        upstream.script(Fault.stream_stall(after_chunks=2, seconds=30))
        _, error = read_events_until_error(http, "/v1/chat/completions", openai_body(stream=True))
        assert isinstance(error, httpx.ReadTimeout)
        stopping = time.perf_counter()
    assert time.perf_counter() - stopping < 4  # not the 5 s graceful-shutdown bound, nor the 30 s stall


def test_fixture_factory_yields_a_running_upstream(factory_upstream: FakeUpstream) -> None:
    assert factory_upstream.running and factory_upstream.api_key == KEY
    assert httpx.get(factory_upstream.url + "/v1/models").status_code == 401


# --------------------------------------------------------------------------
# deterministic replies
# --------------------------------------------------------------------------


def test_token_helpers() -> None:
    body = {"system": "be brief", "messages": [{"role": "user", "content": "one two three"}], "max_tokens": 9}
    assert prompt_token_count(body, "anthropic") == (2 + 3) + (3 + 3)
    assert echo_reply(body, "anthropic") == "Echo: one two three"
    plan = plan_reply(body, "anthropic")
    assert (plan.text, plan.prompt_tokens, plan.completion_tokens) == ("Echo: one two three", 11, 4)
    assert plan_reply({**body, "max_tokens": 2}, "anthropic").text == "Echo: one"
    assert plan_reply({**body, "max_tokens": 2}, "anthropic").truncated
    overridden = plan_reply(body, "anthropic", Fault.reply("hi") | Fault.usage(prompt_tokens=7))
    assert (overridden.text, overridden.prompt_tokens, overridden.completion_tokens) == ("hi", 7, 1)
    assert fake_tool_arguments(WEATHER_TOOL_SCHEMA, "x") == {"city": "x", "days": 1, "metric": True}
    assert count_words("  a b\nc ") == 3


def test_behaviours_combine_with_or() -> None:
    combined = Fault.status(503, retry_after=1) | Fault.delay(0.5) | Fault.headers({"X-A": "1"})
    assert combined == Behaviour(status=503, retry_after=1, delay=0.5, headers={"x-a": "1"})


# --------------------------------------------------------------------------
# OpenAI
# --------------------------------------------------------------------------


def test_openai_completion(client: httpx.Client) -> None:
    body = openai_body(messages=[{"role": "system", "content": "be nice"}, *USER])
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    data = response.json()
    assert data["id"].startswith("chatcmpl-")
    assert data["object"] == "chat.completion"
    assert isinstance(data["created"], int)
    assert data["model"] == "gpt-4o-mini"
    [choice] = data["choices"]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == "Echo: what is the weather in Paris"
    assert choice["finish_reason"] == "stop"
    prompt = (2 + 3) + (6 + 3)
    assert prompt == prompt_token_count(body, "openai")
    assert data["usage"]["prompt_tokens"] == prompt
    assert data["usage"]["completion_tokens"] == 7
    assert data["usage"]["total_tokens"] == prompt + 7
    assert data["usage"]["prompt_tokens_details"]["cached_tokens"] == 0


def test_openai_stream_without_usage(client: httpx.Client) -> None:
    response = client.post("/v1/chat/completions", json=openai_body(stream=True))
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    assert events[-1] == (None, "[DONE]")
    chunks = [data for _, data in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and "usage" not in c for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[0]["choices"][0]["delta"]["content"] == ""
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == "Echo: what is the weather in Paris"
    assert len(chunks) == 1 + 7 + 1  # role chunk, one chunk per word, finish chunk
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}


def test_openai_stream_with_usage(client: httpx.Client) -> None:
    body = openai_body(stream=True, stream_options={"include_usage": True})
    events = parse_sse(client.post("/v1/chat/completions", json=body).text)
    chunks = [data for _, data in events[:-1]]
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["prompt_tokens"] == prompt_token_count(body, "openai")
    assert chunks[-1]["usage"]["completion_tokens"] == 7
    assert events[-1] == (None, "[DONE]")


def test_openai_tool_call(client: httpx.Client) -> None:
    data = client.post("/v1/chat/completions", json=openai_body(tools=OPENAI_TOOLS)).json()
    choice = data["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    arguments = json.loads(call["function"]["arguments"])
    assert arguments == {"city": "what is the weather in Paris", "days": 1, "metric": True}
    plan = plan_reply(openai_body(tools=OPENAI_TOOLS), "openai")
    assert data["usage"]["completion_tokens"] == plan.completion_tokens


def test_openai_tool_choice_none_forced_and_tool_result(client: httpx.Client) -> None:
    none = client.post("/v1/chat/completions", json=openai_body(tools=OPENAI_TOOLS, tool_choice="none")).json()
    assert none["choices"][0]["message"]["content"].startswith("Echo: ")
    forced_choice = {"type": "function", "function": {"name": "get_time"}}
    forced = client.post("/v1/chat/completions", json=openai_body(tools=OPENAI_TOOLS, tool_choice=forced_choice))
    call = forced.json()["choices"][0]["message"]["tool_calls"][0]
    assert (call["function"]["name"], call["function"]["arguments"]) == ("get_time", "{}")
    history = [
        *USER,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "12:00"},
    ]
    after = client.post("/v1/chat/completions", json=openai_body(tools=OPENAI_TOOLS, messages=history)).json()
    assert after["choices"][0]["message"]["content"] == "Echo: what is the weather in Paris"


def test_openai_tool_call_stream(client: httpx.Client) -> None:
    body = openai_body(tools=OPENAI_TOOLS, stream=True, stream_options={"include_usage": True})
    chunks = [data for _, data in parse_sse(client.post("/v1/chat/completions", json=body).text)[:-1]]
    head = chunks[0]["choices"][0]["delta"]
    assert head["role"] == "assistant"
    assert head["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": ""}
    pieces = [c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] for c in chunks[1:-2]]
    assert len(pieces) > 2
    assert json.loads("".join(pieces))["city"] == "what is the weather in Paris"
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"]["total_tokens"] > 0


def test_openai_models_and_errors(client: httpx.Client) -> None:
    models = client.get("/v1/models").json()
    assert models["object"] == "list"
    assert {"id": "gpt-4o-mini", "object": "model"}.items() <= models["data"][0].items()
    missing = client.post("/v1/chat/completions", json={"messages": USER})
    assert missing.status_code == 400 and missing.json()["error"]["type"] == "invalid_request_error"
    unknown = client.post("/v1/nothing", json={})
    assert unknown.status_code == 404 and "message" in unknown.json()["error"]


# --------------------------------------------------------------------------
# Anthropic
# --------------------------------------------------------------------------


def test_anthropic_message(client: httpx.Client) -> None:
    body = anthropic_body(system="be nice")
    response = client.post("/v1/messages", json=body)
    assert response.status_code == 200
    assert response.headers["request-id"].startswith("req_")
    data = response.json()
    assert data["id"].startswith("msg_")
    assert (data["type"], data["role"], data["model"]) == ("message", "assistant", "claude-sonnet-4-5")
    assert data["content"] == [{"type": "text", "text": "Echo: what is the weather in Paris"}]
    assert (data["stop_reason"], data["stop_sequence"]) == ("end_turn", None)
    assert data["usage"] == {
        "input_tokens": prompt_token_count(body, "anthropic"),
        "output_tokens": 7,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def test_anthropic_tool_use(client: httpx.Client) -> None:
    data = client.post("/v1/messages", json=anthropic_body(tools=ANTHROPIC_TOOLS)).json()
    assert data["stop_reason"] == "tool_use"
    [block] = data["content"]
    assert block["type"] == "tool_use" and block["id"].startswith("toolu_")
    assert block["name"] == "get_weather"
    assert block["input"]["city"] == "what is the weather in Paris"
    none = client.post("/v1/messages", json=anthropic_body(tools=ANTHROPIC_TOOLS, tool_choice={"type": "none"}))
    assert none.json()["content"][0]["type"] == "text"
    history = [
        *USER,
        {"role": "assistant", "content": [block]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block["id"], "content": "sunny"}]},
    ]
    after = client.post("/v1/messages", json=anthropic_body(tools=ANTHROPIC_TOOLS, messages=history)).json()
    assert after["content"] == [{"type": "text", "text": "Echo: what is the weather in Paris"}]


def test_anthropic_stream_event_sequence(client: httpx.Client) -> None:
    response = client.post("/v1/messages", json=anthropic_body(stream=True))
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    names = [name for name, _ in events]
    deltas = ["content_block_delta"] * 7
    assert names == ANTHROPIC_STREAM_ORDER + deltas + ANTHROPIC_STREAM_END
    assert all(data["type"] == name for name, data in events)
    start = events[0][1]["message"]
    assert (start["content"], start["stop_reason"]) == ([], None)
    assert start["usage"]["input_tokens"] == prompt_token_count(anthropic_body(), "anthropic")
    assert events[1][1]["content_block"] == {"type": "text", "text": ""}
    text = "".join(data["delta"]["text"] for name, data in events if name == "content_block_delta")
    assert text == "Echo: what is the weather in Paris"
    assert events[-2][1]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert events[-2][1]["usage"] == {"output_tokens": 7}


def test_anthropic_tool_use_stream(client: httpx.Client) -> None:
    events = parse_sse(client.post("/v1/messages", json=anthropic_body(stream=True, tools=ANTHROPIC_TOOLS)).text)
    assert [n for n, _ in events[:3]] == ANTHROPIC_STREAM_ORDER
    assert [n for n, _ in events[-3:]] == ANTHROPIC_STREAM_END
    assert events[1][1]["content_block"]["type"] == "tool_use"
    assert events[1][1]["content_block"]["input"] == {}
    deltas = [data["delta"] for name, data in events if name == "content_block_delta"]
    assert {d["type"] for d in deltas} == {"input_json_delta"}
    assert json.loads("".join(d["partial_json"] for d in deltas))["days"] == 1
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_anthropic_validation_and_count_tokens(client: httpx.Client) -> None:
    body = anthropic_body()
    del body["max_tokens"]
    response = client.post("/v1/messages", json=body)
    assert response.status_code == 400
    error = response.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in error["error"]["message"]
    counted = client.post("/v1/messages/count_tokens", json=body)
    assert counted.json() == {"input_tokens": prompt_token_count(body, "anthropic")}


def test_anthropic_version_can_be_required() -> None:
    with FakeUpstream(require_anthropic_version=True) as upstream:
        missing = httpx.post(upstream.url + "/v1/messages", json=anthropic_body())
        present = httpx.post(
            upstream.url + "/v1/messages", json=anthropic_body(), headers={"anthropic-version": "2023-06-01"}
        )
    assert missing.status_code == 400 and "anthropic-version" in missing.json()["error"]["message"]
    assert present.status_code == 200


# --------------------------------------------------------------------------
# Gemini
# --------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v1", "v1beta"])
def test_gemini_generate_content(client: httpx.Client, version: str) -> None:
    body = gemini_body(systemInstruction={"parts": [{"text": "be nice"}]})
    response = client.post(f"/{version}/models/gemini-2.0-flash:generateContent", json=body)
    assert response.status_code == 200
    data = response.json()
    [candidate] = data["candidates"]
    assert candidate["content"] == {"role": "model", "parts": [{"text": "Echo: what is the weather in Paris"}]}
    assert candidate["finishReason"] == "STOP"
    prompt = prompt_token_count(body, "gemini")
    assert prompt == (2 + 3) + (6 + 3)
    usage = data["usageMetadata"]
    counts = (usage["promptTokenCount"], usage["candidatesTokenCount"], usage["totalTokenCount"])
    assert counts == (prompt, 7, prompt + 7)
    assert data["modelVersion"] == "gemini-2.0-flash"


def test_gemini_function_call(client: httpx.Client) -> None:
    data = client.post(f"{GEMINI}:generateContent", json=gemini_body(tools=GEMINI_TOOLS)).json()
    [part] = data["candidates"][0]["content"]["parts"]
    assert part["functionCall"]["name"] == "get_weather"
    assert part["functionCall"]["args"]["city"] == "what is the weather in Paris"
    config = {"functionCallingConfig": {"mode": "NONE"}}
    none = client.post(f"{GEMINI}:generateContent", json=gemini_body(tools=GEMINI_TOOLS, toolConfig=config)).json()
    assert "text" in none["candidates"][0]["content"]["parts"][0]


def test_gemini_stream_sse(client: httpx.Client) -> None:
    response = client.post(f"{GEMINI}:streamGenerateContent?alt=sse", json=gemini_body())
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.count("\r\n\r\n") == 7 and response.text.endswith("\r\n\r\n")
    chunks = [data for _, data in parse_sse(response.text)]
    text = "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks)
    assert text == "Echo: what is the weather in Paris"
    assert [c["candidates"][0].get("finishReason") for c in chunks] == [None] * 6 + ["STOP"]
    assert chunks[-1]["usageMetadata"]["candidatesTokenCount"] == 7


def test_gemini_stream_json_array(client: httpx.Client) -> None:
    response = client.post(f"{GEMINI}:streamGenerateContent", json=gemini_body())
    assert response.headers["content-type"] == "application/json"
    chunks = response.json()
    assert isinstance(chunks, list) and len(chunks) == 7
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"


# --------------------------------------------------------------------------
# authentication
# --------------------------------------------------------------------------


def test_openai_auth(keyed: FakeUpstream) -> None:
    url = keyed.url + "/v1/chat/completions"
    missing = httpx.post(url, json=openai_body())
    wrong = httpx.post(url, json=openai_body(), headers={"Authorization": "Bearer nope"})
    right = httpx.post(url, json=openai_body(), headers={"Authorization": f"Bearer {KEY}"})
    assert (missing.status_code, wrong.status_code, right.status_code) == (401, 401, 200)
    assert missing.json()["error"]["code"] == "invalid_api_key"


def test_anthropic_auth(keyed: FakeUpstream) -> None:
    url = keyed.url + "/v1/messages"
    wrong = httpx.post(url, json=anthropic_body(), headers={"x-api-key": "nope"})
    header = httpx.post(url, json=anthropic_body(), headers={"x-api-key": KEY})
    bearer = httpx.post(url, json=anthropic_body(), headers={"Authorization": f"Bearer {KEY}"})
    assert (wrong.status_code, header.status_code, bearer.status_code) == (401, 200, 200)
    assert wrong.json()["error"]["type"] == "authentication_error"


def test_gemini_auth(keyed: FakeUpstream) -> None:
    url = keyed.url + f"{GEMINI}:generateContent"
    missing = httpx.post(url, json=gemini_body())
    header = httpx.post(url, json=gemini_body(), headers={"x-goog-api-key": KEY})
    query = httpx.post(url, json=gemini_body(), params={"key": KEY})
    assert (missing.status_code, header.status_code, query.status_code) == (401, 200, 200)
    error = missing.json()["error"]
    assert (error["code"], error["status"], error["message"] != "") == (401, "UNAUTHENTICATED", True)


# --------------------------------------------------------------------------
# faults
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "check"),
    [
        ("/v1/chat/completions", openai_body(), lambda e: e["error"]["code"] == "rate_limit_exceeded"),
        ("/v1/messages", anthropic_body(), lambda e: e["type"] == "error" and e["error"]["type"] == "rate_limit_error"),
        (f"{GEMINI}:generateContent", gemini_body(), lambda e: e["error"]["status"] == "RESOURCE_EXHAUSTED"),
    ],
)
def test_status_fault_uses_provider_error_format(
    up: FakeUpstream, client: httpx.Client, path: str, body: dict[str, Any], check: Any
) -> None:
    up.script(Fault.status(429, retry_after=2, retry_after_ms=1500))
    limited = client.post(path, json=body)
    assert limited.status_code == 429
    assert (limited.headers["retry-after"], limited.headers["retry-after-ms"]) == ("2", "1500")
    assert check(limited.json())
    assert client.post(path, json=body).status_code == 200  # the script is consumed
    assert len(up.requests) == 2 and up.pending == 0


def test_script_is_fifo_and_custom_error_body(up: FakeUpstream, client: httpx.Client) -> None:
    up.script(Fault.status(500), Fault.status(503, body={"custom": True}), Fault.normal())
    first = client.post("/v1/chat/completions", json=openai_body())
    second = client.post("/v1/chat/completions", json=openai_body())
    third = client.post("/v1/chat/completions", json=openai_body())
    assert (first.status_code, second.status_code, third.status_code) == (500, 503, 200)
    assert first.json()["error"]["type"] == "server_error"
    assert second.json() == {"custom": True}


def test_delay_and_delay_all(up: FakeUpstream, client: httpx.Client) -> None:
    up.script(Fault.delay(0.3))
    started = time.perf_counter()
    assert client.post("/v1/chat/completions", json=openai_body()).status_code == 200
    assert time.perf_counter() - started >= 0.3
    with pytest.raises(httpx.ReadTimeout):
        up.script(Fault.delay(2))
        client.post("/v1/chat/completions", json=openai_body(), timeout=0.2)
    up.delay_all = 0.2
    started = time.perf_counter()
    client.get("/v1/models")
    assert time.perf_counter() - started >= 0.2


def test_stream_stall_then_resume(up: FakeUpstream, client: httpx.Client) -> None:
    up.script(Fault.stream_stall(after_chunks=2, seconds=0.3))
    started = time.perf_counter()
    events = parse_sse(client.post("/v1/chat/completions", json=openai_body(stream=True)).text)
    assert time.perf_counter() - started >= 0.3
    assert events[-1] == (None, "[DONE]")


def test_stream_stall_trips_read_timeout_after_first_chunks(up: FakeUpstream) -> None:
    up.script(Fault.stream_stall(after_chunks=2, seconds=5))
    with httpx.Client(base_url=up.url, timeout=httpx.Timeout(5, read=0.3)) as http:
        received, error = read_events_until_error(http, "/v1/messages", anthropic_body(stream=True))
    assert isinstance(error, httpx.ReadTimeout)
    assert [name for name, _ in parse_sse(received)] == ["message_start", "content_block_start"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", openai_body(stream=True)),
        ("/v1/messages", anthropic_body(stream=True)),
        (f"{GEMINI}:streamGenerateContent?alt=sse", gemini_body()),
    ],
)
def test_drop_aborts_the_stream(up: FakeUpstream, client: httpx.Client, path: str, body: dict[str, Any]) -> None:
    up.script(Fault.drop(after_chunks=2))
    received, error = read_events_until_error(client, path, body)
    assert isinstance(error, (httpx.RemoteProtocolError, httpx.ReadError))
    assert len(parse_sse(received)) == 2
    assert client.post(path, json=body).status_code == 200  # next request is fine again


def test_drop_aborts_a_plain_response_without_logging_errors(
    up: FakeUpstream, client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    up.script(Fault.drop())
    with caplog.at_level(logging.ERROR), pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.post("/v1/chat/completions", json=openai_body())
    assert client.get("/v1/models").status_code == 200  # the server handled the abort before this
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_stall_holds_back_a_plain_body_after_the_headers(up: FakeUpstream) -> None:
    up.script(Fault.stream_stall(seconds=5))
    with httpx.Client(base_url=up.url, timeout=httpx.Timeout(5, read=0.2)) as http:
        with http.stream("POST", "/v1/messages", json=anthropic_body()) as response:
            assert response.status_code == 200
            with pytest.raises(httpx.ReadTimeout):
                response.read()


def test_drop_after_all_events_omits_the_stream_end(up: FakeUpstream, client: httpx.Client) -> None:
    up.script(Fault.drop(after_chunks=100))
    received, error = read_events_until_error(client, "/v1/chat/completions", openai_body(stream=True))
    assert isinstance(error, (httpx.RemoteProtocolError, httpx.ReadError))
    assert parse_sse(received)[-1] == (None, "[DONE]")


def test_malformed(up: FakeUpstream, client: httpx.Client) -> None:
    up.script(Fault.malformed(), Fault.malformed())
    plain = client.post("/v1/chat/completions", json=openai_body())
    assert plain.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        plain.json()
    streamed = client.post("/v1/messages", json=anthropic_body(stream=True))
    with pytest.raises(json.JSONDecodeError):
        parse_sse(streamed.text)


def test_reply_and_usage_overrides(up: FakeUpstream, client: httpx.Client) -> None:
    up.script(Fault.reply("custom words here"), Fault.usage(prompt_tokens=100, completion_tokens=50))
    custom = client.post("/v1/messages", json=anthropic_body(tools=ANTHROPIC_TOOLS)).json()
    assert custom["content"] == [{"type": "text", "text": "custom words here"}]
    assert custom["usage"]["output_tokens"] == 3
    body = openai_body(stream=True, stream_options={"include_usage": True})
    usage = parse_sse(client.post("/v1/chat/completions", json=body).text)[-2][1]["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (100, 50, 150)


def test_stream_error_event(up: FakeUpstream, client: httpx.Client) -> None:
    up.script(Fault.stream_error(after_chunks=3), Fault.stream_error(after_chunks=1, status=500))
    events = parse_sse(client.post("/v1/messages", json=anthropic_body(stream=True)).text)
    assert [n for n, _ in events] == [*ANTHROPIC_STREAM_ORDER, "error"]
    assert events[-1][1]["error"]["type"] == "overloaded_error"
    chunks = parse_sse(client.post("/v1/chat/completions", json=openai_body(stream=True)).text)
    assert len(chunks) == 2 and chunks[-1][1]["error"]["type"] == "server_error"


def test_raw_answers_are_sent_byte_for_byte(up: FakeUpstream) -> None:
    up.script(
        Fault.raw(b"not json", status=302, headers={"Location": "https://elsewhere.example/"}),
        Fault.raw(events=[b"data: no newline", b" still the same line"], content_type="text/plain"),
    )
    with httpx.Client(base_url=up.url, timeout=5.0, follow_redirects=False) as http:
        moved = http.post("/v1/chat/completions", json=openai_body())
        streamed = http.post("/v1/chat/completions", json=openai_body(stream=True))
    assert moved.status_code == 302 and moved.headers["location"] == "https://elsewhere.example/"
    assert moved.content == b"not json"
    assert streamed.headers["content-type"] == "text/plain"
    assert streamed.content == b"data: no newline still the same line"


def test_gzip_bomb_is_small_on_the_wire_and_valid_json_decoded(up: FakeUpstream) -> None:
    up.script(Fault.gzip_bomb(8 * 1024 * 1024))
    with httpx.Client(base_url=up.url, timeout=5.0) as http:
        with http.stream("POST", "/v1/chat/completions", json=openai_body()) as answer:
            wire = b"".join(answer.iter_raw())
    assert answer.headers["content-encoding"] == "gzip" and len(wire) < 64 * 1024
    decoded = json.loads(gzip.decompress(wire))
    assert decoded["choices"][0]["message"]["content"] == "padded" and len(decoded["padding"]) > 8_000_000


def test_drip_spaces_out_the_stream_events(up: FakeUpstream, client: httpx.Client) -> None:
    up.script(Fault.reply("one two three four") | Fault.drip(0.05))
    started = time.monotonic()
    events = parse_sse(client.post("/v1/chat/completions", json=openai_body(stream=True)).text)
    # A lower bound only (the server sleeps before each event after the first): never flaky.
    assert len(events) == 7 and time.monotonic() - started >= 0.05 * (len(events) - 1)


def test_raw_usage_fields_reach_every_usage_object(up: FakeUpstream, client: httpx.Client) -> None:
    up.script(Fault.raw_usage(prompt_tokens=1e30, completion_tokens="12abc"), Fault.raw_usage(output_tokens=-5))
    whole = client.post("/v1/chat/completions", json=openai_body()).json()
    assert (whole["usage"]["prompt_tokens"], whole["usage"]["completion_tokens"]) == (1e30, "12abc")
    events = parse_sse(client.post("/v1/messages", json=anthropic_body(stream=True)).text)
    usages = [data["message"]["usage"] if name == "message_start" else data["usage"] for name, data in events if name in ("message_start", "message_delta")]
    assert [u["output_tokens"] for u in usages] == [-5, -5]


def test_extra_response_headers(up: FakeUpstream, client: httpx.Client) -> None:
    up.script(Fault.status(429) | Fault.headers({"x-ratelimit-remaining-requests": "0"}))
    assert client.get("/v1/models").headers["x-ratelimit-remaining-requests"] == "0"


# --------------------------------------------------------------------------
# official SDKs parse the fake's answers
# --------------------------------------------------------------------------


@pytest.fixture
def openai_client(up: FakeUpstream) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key=KEY, base_url=up.openai_base_url, max_retries=0, timeout=5) as sdk:
        yield sdk


@pytest.fixture
def anthropic_client(up: FakeUpstream) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(api_key=KEY, base_url=up.url, max_retries=0, timeout=5) as sdk:
        yield sdk


def test_openai_sdk(up: FakeUpstream, openai_client: openai.OpenAI) -> None:
    completion = openai_client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert completion.choices[0].message.content == "Echo: what is the weather in Paris"
    assert completion.usage is not None and completion.usage.completion_tokens == 7
    assert up.last_request.headers["authorization"] == f"Bearer {KEY}"
    tools = openai_client.chat.completions.create(model="gpt-4o-mini", messages=USER, tools=OPENAI_TOOLS)
    assert tools.choices[0].message.tool_calls[0].function.name == "get_weather"
    assert [m.id for m in openai_client.models.list()][0] == "gpt-4o-mini"


def test_openai_sdk_stream(openai_client: openai.OpenAI) -> None:
    stream = openai_client.chat.completions.create(
        model="gpt-4o-mini", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == echo_reply({"messages": USER}, "openai")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 7
    with openai_client.chat.completions.stream(model="gpt-4o-mini", messages=USER, tools=OPENAI_TOOLS) as helper:
        final = helper.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert json.loads(call.function.arguments)["city"] == "what is the weather in Paris"


def test_openai_sdk_error(up: FakeUpstream, openai_client: openai.OpenAI) -> None:
    up.script(Fault.status(429, retry_after=1))
    with pytest.raises(openai.RateLimitError) as caught:
        openai_client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert caught.value.code == "rate_limit_exceeded"


def test_anthropic_sdk(up: FakeUpstream, anthropic_client: anthropic.Anthropic) -> None:
    message = anthropic_client.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=USER)
    assert message.content[0].type == "text" and message.content[0].text == "Echo: what is the weather in Paris"
    assert message.usage.output_tokens == 7
    headers = up.last_request.headers
    assert KEY in (headers.get("x-api-key"), headers.get("authorization", "").removeprefix("Bearer "))
    assert "anthropic-version" in up.last_request.headers
    tool = anthropic_client.messages.create(
        model="claude-sonnet-4-5", max_tokens=64, messages=USER, tools=ANTHROPIC_TOOLS
    )
    assert tool.stop_reason == "tool_use" and tool.content[0].type == "tool_use"


def test_anthropic_sdk_stream(anthropic_client: anthropic.Anthropic) -> None:
    with anthropic_client.messages.stream(model="claude-sonnet-4-5", max_tokens=64, messages=USER) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Echo: what is the weather in Paris"
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == prompt_token_count(anthropic_body(), "anthropic")
    assert final.usage.output_tokens == 7
    with anthropic_client.messages.stream(
        model="claude-sonnet-4-5", max_tokens=64, messages=USER, tools=ANTHROPIC_TOOLS
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "tool_use"
    assert final.content[0].input == {"city": "what is the weather in Paris", "days": 1, "metric": True}


def test_anthropic_sdk_error(up: FakeUpstream, anthropic_client: anthropic.Anthropic) -> None:
    up.script(Fault.status(529))
    with pytest.raises(anthropic.APIStatusError) as caught:
        anthropic_client.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=USER)
    assert caught.value.status_code == 529
    assert caught.value.body["error"]["type"] == "overloaded_error"


def test_port_is_really_closed_after_exit() -> None:
    with FakeUpstream() as upstream:
        port = upstream.port
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
