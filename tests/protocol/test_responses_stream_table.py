"""Provider streams of every format into the Responses event grammar, table-driven: parallel tool
calls with interleaved indices, usage that arrives after the finish, a length cut
(``response.incomplete``), reasoning items; and the native pass-through, which forwards the
events as they came and reads the usage from the final one. Each stream is fed whole and in
pieces that split events anywhere."""

from __future__ import annotations

import orjson
import pytest

from asgi_ai_relay.protocol.sse import SSESplitter
from asgi_ai_relay.stages.responses_passthrough import ResponsesPassThrough
from asgi_ai_relay.stages.translate import pick
from asgi_ai_relay.types import Usage
from tests.protocol.test_answers import ANTHROPIC_TOOL_STREAM, GEMINI_STREAM, an_event, an_message, an_usage, gem_event, gem_response, oa_chunk, run_stream

USAGE_AFTER = b'data: {"id":"chatcmpl-q","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":7}}\n\n'
DONE = b"data: [DONE]\n\n"


def head(index, call_id, name, arguments=""):
    return {"tool_calls": [{"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}]}


def args(index, piece):
    return {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}


OPENAI_PARALLEL = b"".join([
    oa_chunk({"role": "assistant", "content": None}),
    oa_chunk(head(0, "call_a", "first", '{"x"')), oa_chunk(head(1, "call_b", "second", '{"y"')),
    oa_chunk(args(0, ": 1}")), oa_chunk(args(1, ": 2}")),
    oa_chunk({}, "tool_calls"), USAGE_AFTER, DONE,
])
OPENAI_LENGTH = b"".join([oa_chunk({"role": "assistant", "content": ""}), oa_chunk({"content": "one two"}),
                          oa_chunk({}, "length"), USAGE_AFTER, DONE])
OPENAI_REASONING = b"".join([
    oa_chunk({"role": "assistant", "content": ""}), oa_chunk({"reasoning_content": "think"}), oa_chunk({"content": "hi"}),
    oa_chunk({}, "stop"),
    b'data: {"id":"chatcmpl-q","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":7,'
    b'"completion_tokens_details":{"reasoning_tokens":3}}}\n\n', DONE,
])
ANTHROPIC_LENGTH = b"".join([
    an_event("message_start", {"message": an_message([], None, an_usage(10, 1))}),
    an_event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
    an_event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "one two"}}),
    an_event("content_block_stop", {"index": 0}),
    an_event("message_delta", {"delta": {"stop_reason": "max_tokens", "stop_sequence": None}, "usage": {"output_tokens": 2}}),
    an_event("message_stop", {}),
])
GEMINI_LENGTH = gem_event(gem_response([{"text": "one two"}], "MAX_TOKENS", {"promptTokenCount": 8, "candidatesTokenCount": 2}))

# name, provider format, provider stream, final event, output items as (type, name or text, arguments), usage
HUB = [
    ("openai parallel calls, interleaved, usage after the finish", "openai", OPENAI_PARALLEL, "response.completed",
     [("function_call", "first", '{"x": 1}'), ("function_call", "second", '{"y": 2}')], Usage(12, 7)),
    ("openai length cut", "openai", OPENAI_LENGTH, "response.incomplete", [("message", "one two", None)], Usage(12, 7)),
    ("openai reasoning item first", "openai", OPENAI_REASONING, "response.completed",
     [("reasoning", "think", None), ("message", "hi", None)], Usage(12, 7, reasoning_tokens=3)),
    ("anthropic parallel calls after text", "anthropic", ANTHROPIC_TOOL_STREAM, "response.completed",
     [("message", "Checking", None), ("function_call", "weather", '{"city":"Paris"}'), ("function_call", "time", "{}")],
     Usage(50, 9, 40)),
    ("anthropic length cut", "anthropic", ANTHROPIC_LENGTH, "response.incomplete", [("message", "one two", None)], Usage(10, 2)),
    ("gemini text then a call", "gemini", GEMINI_STREAM, "response.completed",
     [("message", "Hello", None), ("function_call", "weather", '{"city":"Paris"}')], Usage(8, 4, 2)),
    ("gemini length cut", "gemini", GEMINI_LENGTH, "response.incomplete", [("message", "one two", None)], Usage(8, 2)),
]


def events(raw: bytes) -> list[dict]:
    out = []
    for event in SSESplitter().feed(raw):
        payload = orjson.loads(event.data)
        assert event.event == payload["type"]
        out.append(payload)
    return out


def summary(item: dict) -> tuple:
    if item["type"] == "function_call":
        return "function_call", item["name"], item["arguments"]
    if item["type"] == "reasoning":
        return "reasoning", "".join(p["text"] for p in item["summary"]), None
    return "message", "".join(p["text"] for p in item["content"]), None


@pytest.mark.parametrize("piece", [7, 100_000])
@pytest.mark.parametrize(("name", "provider", "raw", "final", "output", "usage"), HUB, ids=[r[0] for r in HUB])
def test_provider_streams_become_the_responses_grammar(name, provider, raw, final, output, usage, piece):
    translator = pick("responses", provider, "p").stream({"stream": True})
    seen = events(run_stream(translator, raw, piece))
    assert translator.done and translator.usage == usage
    assert [e["sequence_number"] for e in seen] == list(range(len(seen)))
    assert [e["type"] for e in seen[:2]] == ["response.created", "response.in_progress"] and seen[-1]["type"] == final
    assert [e["type"] for e in seen].count(final) == 1
    response = seen[-1]["response"]
    assert [summary(item) for item in response["output"]] == output
    assert (response["usage"]["input_tokens"], response["usage"]["output_tokens"]) == (usage.prompt_tokens, usage.completion_tokens)
    assert response["usage"]["input_tokens_details"]["cached_tokens"] == usage.cached_tokens
    if final == "response.incomplete":
        assert response["status"] == "incomplete" and response["incomplete_details"] == {"reason": "max_output_tokens"}
    added = [e["item"]["id"] for e in seen if e["type"] == "response.output_item.added"]
    done = [e["item"]["id"] for e in seen if e["type"] == "response.output_item.done"]
    assert sorted(added) == sorted(done) == sorted(item["id"] for item in response["output"])


def native_event(kind: str, number: int, **fields) -> bytes:
    return f"event: {kind}\n".encode() + b"data: " + orjson.dumps({"type": kind, "sequence_number": number, **fields}) + b"\n\n"


NATIVE_USAGE = {"input_tokens": 20, "input_tokens_details": {"cached_tokens": 5}, "output_tokens": 10,
                "output_tokens_details": {"reasoning_tokens": 4}, "total_tokens": 30}
REASONING = {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"}
SEARCH = {"type": "web_search_call", "id": "ws_1", "status": "completed"}
MESSAGE = {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
           "content": [{"type": "output_text", "text": "hi", "annotations": []}]}


def native_stream(final: str | None, output: list[dict]) -> bytes:
    opened = {"id": "resp_1", "object": "response", "status": "in_progress", "output": [], "usage": None}
    parts = [native_event("response.created", 0, response=opened)]
    for i, item in enumerate(output):
        parts += [native_event("response.output_item.added", 2 * i + 1, output_index=i, item=item),
                  native_event("response.output_item.done", 2 * i + 2, output_index=i, item=item)]
    if final is not None:
        status = final.rpartition(".")[2]
        parts.append(native_event(final, 99, response={**opened, "status": status, "output": output, "usage": NATIVE_USAGE}))
    return b"".join(parts)


# name, stream, complete, usage
NATIVE = [
    ("reasoning, a web search and a message", native_stream("response.completed", [REASONING, SEARCH, MESSAGE]), True,
     Usage(20, 10, 5, reasoning_tokens=4, web_search_requests=1)),
    ("a length cut", native_stream("response.incomplete", [MESSAGE]), True, Usage(20, 10, 5, reasoning_tokens=4)),
    ("no final event", native_stream(None, [MESSAGE]), False, None),
]


@pytest.mark.parametrize("piece", [9, 100_000])
@pytest.mark.parametrize(("name", "raw", "complete", "usage"), NATIVE, ids=[r[0] for r in NATIVE])
def test_native_streams_pass_as_they_came(name, raw, complete, usage, piece):
    translator = ResponsesPassThrough().stream({})
    assert run_stream(translator, raw, piece) == raw
    assert translator.done is complete and translator.usage == usage and not translator.failed
