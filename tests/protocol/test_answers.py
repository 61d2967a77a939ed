"""Answer and stream translation, table-driven: whole answers, stream events, usage, errors."""

from __future__ import annotations

import orjson
import pytest

from asgi_ai_relay.errors import InvalidRequest, RateLimited, RelayError, UpstreamStatusError
from asgi_ai_relay.protocol import anthropic, gemini
from asgi_ai_relay.protocol.anthropic_response import completion_from_message, message_from_completion
from asgi_ai_relay.protocol.sse import SSESplitter
from asgi_ai_relay.stages.translate import pick
from asgi_ai_relay.types import Usage


def an_usage(inp=10, out=5, read=0, write=0):
    return {"input_tokens": inp, "output_tokens": out, "cache_read_input_tokens": read, "cache_creation_input_tokens": write}


def an_message(content, stop="end_turn", usage=None):
    return {"id": "msg_abc", "type": "message", "role": "assistant", "model": "claude-up", "content": content,
            "stop_reason": stop, "stop_sequence": None, "usage": usage or an_usage()}


TOOL_A = {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}
TOOL_B = {"type": "tool_use", "id": "toolu_2", "name": "time", "input": {}}
CALL_A = {"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}
CALL_B = {"id": "toolu_2", "type": "function", "function": {"name": "time", "arguments": "{}"}}

# name, Anthropic message, expected OpenAI message, finish reason
ANTHROPIC_ANSWERS = [
    ("text", an_message([{"type": "text", "text": "Hi"}]), {"role": "assistant", "content": "Hi"}, "stop"),
    ("thinking dropped", an_message([{"type": "thinking", "thinking": "x", "signature": "s"}, {"type": "text", "text": "Hi"}]), {"role": "assistant", "content": "Hi"}, "stop"),
    ("two tool calls", an_message([TOOL_A, TOOL_B], "tool_use"), {"role": "assistant", "content": None, "tool_calls": [CALL_A, CALL_B]}, "tool_calls"),
    ("text and tool", an_message([{"type": "text", "text": "Let me"}, TOOL_A], "tool_use"), {"role": "assistant", "content": "Let me", "tool_calls": [CALL_A]}, "tool_calls"),
    ("max_tokens", an_message([{"type": "text", "text": "cut"}], "max_tokens"), {"role": "assistant", "content": "cut"}, "length"),
    ("stop_sequence", an_message([{"type": "text", "text": "a"}], "stop_sequence"), {"role": "assistant", "content": "a"}, "stop"),
    ("refusal", an_message([], "refusal"), {"role": "assistant", "content": ""}, "content_filter"),
]


@pytest.mark.parametrize(("name", "payload", "message", "finish"), ANTHROPIC_ANSWERS, ids=[r[0] for r in ANTHROPIC_ANSWERS])
def test_anthropic_answer_to_openai(name, payload, message, finish):
    completion, usage = completion_from_message(payload)
    assert completion["choices"][0]["message"] == message
    assert completion["choices"][0]["finish_reason"] == finish
    assert completion["id"] == "chatcmpl-abc" and completion["model"] == "claude-up"
    assert usage == Usage(10, 5)


# name, OpenAI choice, expected Anthropic content, stop reason
OPENAI_ANSWERS = [
    ("text", {"message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}, [{"type": "text", "text": "Hi"}], "end_turn"),
    ("tools", {"message": {"role": "assistant", "content": None, "tool_calls": [CALL_A, CALL_B]}, "finish_reason": "tool_calls"}, [TOOL_A, TOOL_B], "tool_use"),
    ("length", {"message": {"role": "assistant", "content": "cu"}, "finish_reason": "length"}, [{"type": "text", "text": "cu"}], "max_tokens"),
    ("filter", {"message": {"role": "assistant", "content": ""}, "finish_reason": "content_filter"}, [], "refusal"),
]


@pytest.mark.parametrize(("name", "choice", "content", "stop"), OPENAI_ANSWERS, ids=[r[0] for r in OPENAI_ANSWERS])
def test_openai_answer_to_anthropic(name, choice, content, stop):
    completion = {"id": "chatcmpl-xyz", "model": "gpt-up", "choices": [{"index": 0, **choice}]}
    message = message_from_completion(completion, Usage(30, 4, cached_tokens=20))
    assert message["content"] == content and message["stop_reason"] == stop
    assert message["id"] == "msg_xyz" and message["type"] == "message" and message["model"] == "gpt-up"
    assert message["usage"] == {"input_tokens": 10, "output_tokens": 4, "cache_read_input_tokens": 20, "cache_creation_input_tokens": 0}


def gem_response(parts, finish="STOP", usage=None):
    return {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}],
            "usageMetadata": usage or {"promptTokenCount": 8, "candidatesTokenCount": 2, "totalTokenCount": 10},
            "modelVersion": "gemini-up", "responseId": "r1"}


# name, Gemini response, OpenAI message (tool ids aside), finish reason
GEMINI_ANSWERS = [
    ("text", gem_response([{"text": "Hi "}, {"text": "there"}]), {"role": "assistant", "content": "Hi there"}, "stop"),
    ("thought dropped", gem_response([{"text": "plan", "thought": True}, {"text": "Hi"}]), {"role": "assistant", "content": "Hi"}, "stop"),
    ("max tokens", gem_response([{"text": "cu"}], "MAX_TOKENS"), {"role": "assistant", "content": "cu"}, "length"),
    ("safety", gem_response([], "SAFETY"), {"role": "assistant", "content": ""}, "content_filter"),
    ("two calls", gem_response([{"functionCall": {"name": "weather", "args": {"city": "Paris"}}}, {"functionCall": {"name": "time", "args": {}}}]),
     {"role": "assistant", "content": None, "tool_calls": [
         {"type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}},
         {"type": "function", "function": {"name": "time", "arguments": "{}"}}]}, "tool_calls"),
]


@pytest.mark.parametrize(("name", "payload", "message", "finish"), GEMINI_ANSWERS, ids=[r[0] for r in GEMINI_ANSWERS])
def test_gemini_answer_to_openai(name, payload, message, finish):
    completion, usage = gemini.completion_from_response(payload)
    got = completion["choices"][0]["message"]
    for call in got.get("tool_calls", ()):
        assert call.pop("id").startswith("call_")
    assert got == message and completion["choices"][0]["finish_reason"] == finish
    assert usage == Usage(8, 2)


# name, provider usage reader, provider usage, expected Usage
USAGE = [
    ("openai cached", "openai", {"prompt_tokens": 100, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 60}}, Usage(100, 5, 60)),
    ("anthropic read+write", "anthropic", an_usage(10, 5, read=60, write=30), Usage(100, 5, 60, 30)),
    ("gemini cached+thoughts", "gemini", {"promptTokenCount": 100, "cachedContentTokenCount": 60, "candidatesTokenCount": 5, "thoughtsTokenCount": 7}, Usage(100, 12, 60, reasoning_tokens=7)),
]


@pytest.mark.parametrize(("name", "fmt", "raw", "expected"), USAGE, ids=[r[0] for r in USAGE])
def test_usage_with_cache(name, fmt, raw, expected):
    from asgi_ai_relay.protocol import openai

    reader = {"openai": openai.usage_from_body, "anthropic": anthropic.usage_from_body, "gemini": gemini.usage_from_metadata}[fmt]
    assert reader(raw) == expected
    if fmt == "anthropic":
        assert anthropic.usage_to_anthropic(expected) == raw


# --- streams ---------------------------------------------------------------------------


def an_event(name, payload):
    return f"event: {name}\ndata: ".encode() + orjson.dumps({"type": name, **payload}) + b"\n\n"


ANTHROPIC_TOOL_STREAM = b"".join([
    an_event("message_start", {"message": an_message([], None, an_usage(10, 1, read=40, write=0))}),
    an_event("ping", {}),
    an_event("content_block_start", {"index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
    an_event("content_block_delta", {"index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}}),
    an_event("content_block_stop", {"index": 0}),
    an_event("content_block_start", {"index": 1, "content_block": {"type": "text", "text": ""}}),
    an_event("content_block_delta", {"index": 1, "delta": {"type": "text_delta", "text": "Checking"}}),
    an_event("content_block_stop", {"index": 1}),
    an_event("content_block_start", {"index": 2, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}}}),
    an_event("content_block_delta", {"index": 2, "delta": {"type": "input_json_delta", "partial_json": '{"city":'}}),
    an_event("content_block_delta", {"index": 2, "delta": {"type": "input_json_delta", "partial_json": '"Paris"}'}}),
    an_event("content_block_stop", {"index": 2}),
    an_event("content_block_start", {"index": 3, "content_block": {"type": "tool_use", "id": "toolu_2", "name": "time", "input": {}}}),
    an_event("content_block_delta", {"index": 3, "delta": {"type": "input_json_delta", "partial_json": "{}"}}),
    an_event("content_block_stop", {"index": 3}),
    an_event("message_delta", {"delta": {"stop_reason": "tool_use", "stop_sequence": None}, "usage": {"output_tokens": 9}}),
    an_event("message_stop", {}),
])


def run_stream(translator, raw: bytes, piece: int) -> bytes:
    """Feed ``raw`` in pieces of ``piece`` bytes (events split anywhere), then close."""
    out = b"".join(translator.feed(raw[i : i + piece]) for i in range(0, len(raw), piece))
    return out + translator.close()


def openai_chunks(raw: bytes):
    events = [e.data for e in SSESplitter().feed(raw)]
    assert events[-1] == b"[DONE]"
    return [orjson.loads(e) for e in events[:-1]]


@pytest.mark.parametrize("piece", [7, 64, 100_000])
def test_anthropic_stream_to_openai_chunks(piece):
    translator = pick("openai", "anthropic", "an").stream({"stream_options": {"include_usage": True}})
    chunks = openai_chunks(run_stream(translator, ANTHROPIC_TOOL_STREAM, piece))
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"content": "Checking"},
        {"tool_calls": [{"index": 0, "id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]},
        {"tool_calls": [{"index": 1, "id": "toolu_2", "type": "function", "function": {"name": "time", "arguments": ""}}]},
        {"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]},
        {},
    ]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 50
    assert chunks[-1]["usage"]["prompt_tokens_details"]["cached_tokens"] == 40
    assert {c["id"] for c in chunks} == {"chatcmpl-abc"}
    assert translator.usage == Usage(50, 9, 40)


def oa_chunk(delta, finish=None):
    return b"data: " + orjson.dumps({"id": "chatcmpl-q", "object": "chat.completion.chunk", "created": 1, "model": "gpt-up",
                                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}) + b"\n\n"


OPENAI_TOOL_STREAM = b"".join([
    oa_chunk({"role": "assistant", "content": ""}),
    oa_chunk({"content": "Let"}),
    oa_chunk({"content": " me"}),
    oa_chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "weather", "arguments": ""}}]}),
    oa_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city"'}}]}),
    oa_chunk({"tool_calls": [{"index": 0, "function": {"arguments": ':"Paris"}'}}]}),
    oa_chunk({"tool_calls": [{"index": 1, "id": "call_2", "type": "function", "function": {"name": "time", "arguments": "{}"}}]}),
    oa_chunk({}, "tool_calls"),
    b'data: {"id":"chatcmpl-q","choices":[],"usage":{"prompt_tokens":70,"completion_tokens":6,"prompt_tokens_details":{"cached_tokens":64}}}\n\n',
    b"data: [DONE]\n\n",
])


@pytest.mark.parametrize("piece", [5, 100_000])
def test_openai_stream_to_anthropic_events(piece):
    translator = pick("anthropic", "openai", "up").stream({})
    events = list(SSESplitter().feed(run_stream(translator, OPENAI_TOOL_STREAM, piece)))
    names = [e.event for e in events]
    assert names == [
        "message_start", "ping",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop",
    ]
    data = [orjson.loads(e.data) for e in events]
    assert data[0]["message"]["id"] == "msg_q" and data[0]["message"]["model"] == "gpt-up"
    assert data[2]["content_block"] == {"type": "text", "text": ""} and data[3]["delta"] == {"type": "text_delta", "text": "Let"}
    assert data[6]["content_block"] == {"type": "tool_use", "id": "call_1", "name": "weather", "input": {}} and data[6]["index"] == 1
    assert "".join(d["delta"]["partial_json"] for d in data[7:9]) == '{"city":"Paris"}'
    assert data[10]["content_block"]["name"] == "time" and data[11]["delta"] == {"type": "input_json_delta", "partial_json": "{}"}
    assert data[13]["delta"]["stop_reason"] == "tool_use"
    assert data[13]["usage"] == {"input_tokens": 6, "output_tokens": 6, "cache_read_input_tokens": 64, "cache_creation_input_tokens": 0}
    assert translator.usage == Usage(70, 6, 64)


def gem_event(payload):
    return b"data: " + orjson.dumps(payload) + b"\r\n\r\n"


GEMINI_STREAM = b"".join([
    gem_event({**gem_response([{"text": "Hel"}], None, {"promptTokenCount": 8, "candidatesTokenCount": 1}), "candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}}]}),
    gem_event(gem_response([{"text": "lo"}, {"functionCall": {"name": "weather", "args": {"city": "Paris"}}}], "STOP",
                           {"promptTokenCount": 8, "candidatesTokenCount": 4, "cachedContentTokenCount": 2})),
])


@pytest.mark.parametrize(("inbound", "piece"), [("openai", 3), ("openai", 100_000), ("anthropic", 11)])
def test_gemini_stream(inbound, piece):
    translator = pick(inbound, "gemini", "ge").stream({"stream_options": {"include_usage": True}})
    raw = run_stream(translator, GEMINI_STREAM, piece)
    assert translator.usage == Usage(8, 4, 2)
    if inbound == "openai":
        chunks = openai_chunks(raw)
        deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
        assert [d.get("content") for d in deltas[:3]] == ["", "Hel", "lo"]
        assert deltas[3]["tool_calls"][0]["function"] == {"name": "weather", "arguments": '{"city":"Paris"}'}
        assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls" and chunks[-1]["usage"]["total_tokens"] == 12
    else:
        events = [(e.event, orjson.loads(e.data)) for e in SSESplitter().feed(raw)]
        assert [n for n, _ in events][-2:] == ["message_delta", "message_stop"]
        assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
        assert any(d.get("content_block", {}).get("type") == "tool_use" for _, d in events)


# name, inbound, provider, provider error event, expected status
STREAM_ERRORS = [
    ("anthropic overloaded", "openai", "anthropic", an_event("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}}), 529),
    ("anthropic fast path", "anthropic", "anthropic", an_event("error", {"error": {"type": "api_error", "message": "boom"}}), 500),
    ("openai error", "anthropic", "openai", b'data: {"error": {"message": "bad", "type": "server_error"}}\n\n', 502),
    ("gemini error", "anthropic", "gemini", gem_event({"error": {"code": 503, "message": "busy", "status": "UNAVAILABLE"}}), 503),
]


@pytest.mark.parametrize(("name", "inbound", "provider", "raw", "status"), STREAM_ERRORS, ids=[r[0] for r in STREAM_ERRORS])
def test_in_stream_provider_errors_become_relay_errors(name, inbound, provider, raw, status):
    translator = pick(inbound, provider, "p").stream({})
    with pytest.raises(UpstreamStatusError) as info:
        translator.feed(raw)
    assert info.value.upstream_status == status


# name, error, Anthropic type
ERROR_TYPES = [
    ("400", InvalidRequest("x"), "invalid_request_error"),
    ("429", RateLimited("slow"), "rate_limit_error"),
    ("500", RelayError("x"), "api_error"),
    ("503", RelayError("x", status_code=503), "overloaded_error"),
    ("404", RelayError("x", status_code=404), "not_found_error"),
]


@pytest.mark.parametrize(("name", "error", "kind"), ERROR_TYPES, ids=[r[0] for r in ERROR_TYPES])
def test_anthropic_error_bodies(name, error, kind):
    assert orjson.loads(anthropic.error_body(error)) == {"type": "error", "error": {"type": kind, "message": error.message}}
    (event,) = SSESplitter().feed(anthropic.stream_error(error))
    assert event.event == "error" and orjson.loads(event.data)["error"]["type"] == kind
