"""The quirks of OpenAI-compatible services, applied from their flags
(:class:`~asgi_ai_relay.config.cloud.Quirks`): to the body before it goes up, and to the stream
on its way back. A service with no quirks pays nothing: its stream is not touched."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from ..config.cloud import Quirks
from ..protocol.sse import SSESplitter, encode_event

__all__ = ["adapt_stream", "prepare_body", "touches_body", "touches_stream"]

_DONE = b"data: [DONE]\n\n"


def prepare_body(quirks: Quirks, body: dict[str, Any]) -> dict[str, Any]:
    """The request as the service takes it (a copy, when anything changes)."""
    out = body
    if not quirks.stream_options and "stream_options" in out:
        out = {k: v for k, v in out.items() if k != "stream_options"}
    field = quirks.max_tokens_field
    other = "max_completion_tokens" if field == "max_tokens" else "max_tokens"
    if field is not None and other in out:
        out = dict(out)
        value = out.pop(other)
        out.setdefault(field, value)
    if quirks.reasoning_content == "strip":
        messages = out.get("messages")
        if isinstance(messages, list) and any(isinstance(m, dict) and "reasoning_content" in m for m in messages):
            out = dict(out)
            out["messages"] = [
                {k: v for k, v in m.items() if k != "reasoning_content"} if isinstance(m, dict) else m for m in messages
            ]
    return out


def touches_body(quirks: Quirks) -> bool:
    """Whether :func:`prepare_body` may change a body (when not, it gives every body back as is)."""
    return not quirks.stream_options or quirks.max_tokens_field is not None or quirks.reasoning_content == "strip"


def touches_stream(quirks: Quirks) -> bool:
    return not quirks.sends_done or quirks.usage_with_choices


async def adapt_stream(quirks: Quirks, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The service's SSE stream as OpenAI sends it: a chunk carrying both ``choices`` and
    ``usage`` split in two, and ``data: [DONE]`` added after a stream that finished without it
    (a stream cut before its finish reason stays cut: the relay then reports it incomplete)."""
    splitter = SSESplitter()
    finished = done = False
    async for piece in chunks:
        out: list[bytes] = []
        for event in splitter.feed(piece):
            data = event.data.strip()
            if data == b"[DONE]":
                done = True
            elif data.startswith(b"{"):
                finished = finished or b'"finish_reason":"' in data or b'"finish_reason": "' in data
                if quirks.usage_with_choices and b'"usage"' in data:
                    out.extend(_split_usage(data))
                    continue
            out.append(event.raw)
        if out:
            yield b"".join(out)
    tail = b"".join(event.raw for event in splitter.flush())
    if tail:
        yield tail
    if finished and not done and not quirks.sends_done:
        yield _DONE


def _split_usage(data: bytes) -> list[bytes]:
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError:
        return [encode_event(data)]
    if not isinstance(payload, dict) or not payload.get("choices") or not isinstance(payload.get("usage"), dict):
        return [encode_event(data)]
    usage = payload.pop("usage")
    tail = {k: payload.get(k) for k in ("id", "object", "created", "model")} | {"choices": [], "usage": usage}
    return [encode_event(orjson.dumps(payload)), encode_event(orjson.dumps(tail))]
