"""Answers exactly as each provider sends them, for the cost tests: whole and streamed, each
with the usage object given (``FakeUpstream`` sends them with ``Fault.raw``)."""

from __future__ import annotations

from typing import Any

import orjson

from tests.fake_upstream import Behaviour, Fault

TEXT = ["abc ", "def ", "ghi"]


def _sse(data: Any, event: str | None = None, sep: bytes = b"\n\n") -> bytes:
    return (f"event: {event}\n".encode() if event else b"") + b"data: " + orjson.dumps(data) + sep


def oa_whole(usage: dict[str, Any], tier: str | None = None) -> Behaviour:
    body: dict[str, Any] = {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(TEXT)}, "finish_reason": "stop"}],
        "usage": usage,
    }
    if tier is not None:
        body["service_tier"] = tier
    return Fault.raw(orjson.dumps(body))


def oa_stream(usage: dict[str, Any], tier: str | None = None, *, with_choices: bool = False) -> Behaviour:
    """OpenAI's stream: the usage in a final chunk of its own (``choices: []``), or (some
    compatible servers) in the chunk that carries the finish reason."""
    base: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini"}
    if tier is not None:
        base["service_tier"] = tier
    chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    chunks += [{**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]} for piece in TEXT]
    finish = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    if with_choices:
        chunks.append({**finish, "usage": usage})
    else:
        chunks += [finish, {**base, "choices": [], "usage": usage}]
    return Fault.raw(events=[_sse(c) for c in chunks] + [b"data: [DONE]\n\n"])


def an_whole(usage: dict[str, Any]) -> Behaviour:
    return Fault.raw(orjson.dumps({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "".join(TEXT)}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": usage,
    }))


def an_events(start: dict[str, Any], delta: dict[str, Any]) -> list[bytes]:
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5", "content": [],
               "stop_reason": None, "stop_sequence": None, "usage": start}
    events = [
        _sse({"type": "message_start", "message": message}, "message_start"),
        _sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}, "content_block_start"),
    ]
    events += [_sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}, "content_block_delta")
               for p in TEXT]
    events += [
        _sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        _sse({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": delta}, "message_delta"),
        _sse({"type": "message_stop"}, "message_stop"),
    ]
    return events


def an_stream(start: dict[str, Any], delta: dict[str, Any]) -> Behaviour:
    """Anthropic's stream: usage split across ``message_start`` and ``message_delta``."""
    return Fault.raw(events=an_events(start, delta))


def an_broken_after_start(start: dict[str, Any]) -> Behaviour:
    """A stream that reports its input in ``message_start`` and fails before any content."""
    events = an_events(start, {})[:2]
    events.append(_sse({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, "error"))
    return Fault.raw(events=events)


def _ge(text: str, meta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], "usageMetadata": meta, "modelVersion": "gemini-2.0-flash", "responseId": "r1"}


def ge_whole(meta: dict[str, Any]) -> Behaviour:
    return Fault.raw(orjson.dumps(_ge("".join(TEXT), meta, "STOP")))


def ge_stream(meta: dict[str, Any]) -> Behaviour:
    """Gemini's stream: every chunk carries the usage so far, the last one the whole."""
    partial = {"promptTokenCount": meta.get("promptTokenCount"), "candidatesTokenCount": 1}
    chunks = [_ge(p, partial, None) for p in TEXT[:-1]] + [_ge(TEXT[-1], meta, "STOP")]
    return Fault.raw(events=[_sse(c, sep=b"\r\n\r\n") for c in chunks])
