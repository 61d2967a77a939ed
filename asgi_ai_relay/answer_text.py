"""The content text of an answer: what a model said, in OpenAI, Anthropic or Gemini shapes.

:func:`answer_text` reads a whole answer, :func:`streamed_text` the SSE events of a stream
already sent (an event cut off at the end is left out). Content is the text, refusals,
reasoning and tool calls (name and arguments); SSE framing, JSON keys and ids are not.
:mod:`asgi_ai_relay.tokens` counts what these return, for answers that came without usage.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from .protocol.sse import SSESplitter

__all__ = ["answer_text", "streamed_text"]


def answer_text(raw: bytes) -> str:
    """The content text of a whole answer; a body that is not JSON is all text."""
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")
    texts: list[str] = []
    _content(payload, texts)
    return "".join(texts)


def streamed_text(pieces: Iterable[bytes]) -> str:
    """The content text of the whole SSE events in ``pieces``."""
    splitter = SSESplitter()
    texts: list[str] = []
    for piece in pieces:
        for event in splitter.feed(piece):
            if event.data[:1] != b"{":
                continue  # [DONE], comments, pings
            try:
                _content(orjson.loads(event.data), texts)
            except orjson.JSONDecodeError:
                continue
    return "".join(texts)


def _content(payload: Any, texts: list[str]) -> None:
    """Append the content text of one answer or stream event, whichever format it is in."""
    if not isinstance(payload, dict):
        return
    for choice in _dicts(payload.get("choices")):  # OpenAI: whole (message) or streamed (delta)
        _openai(choice.get("message") or choice.get("delta"), texts)
        _text(choice.get("text"), texts)
    for candidate in _dicts(payload.get("candidates")):  # Gemini
        content = candidate.get("content")
        for part in _dicts(content.get("parts") if isinstance(content, dict) else None):
            _text(part.get("text"), texts)
            _call(part.get("functionCall") or part.get("function_call"), "args", texts)
    if payload.get("object") == "response":  # OpenAI Responses, whole (a stream's events below)
        for item in _dicts(payload.get("output")):
            for part in _dicts(item.get("content")):
                _text(part.get("text") or part.get("refusal"), texts)
            if item.get("type") == "function_call":
                _call(item, "arguments", texts)
    kind = payload.get("type")
    if kind in ("response.output_text.delta", "response.function_call_arguments.delta"):
        _text(payload.get("delta"), texts)
    elif kind == "message":  # Anthropic, whole
        for block in _dicts(payload.get("content")):
            _anthropic(block, texts)
    elif kind == "content_block_start":
        _anthropic(payload.get("content_block"), texts)
    elif kind == "content_block_delta":
        delta = payload.get("delta")
        if isinstance(delta, dict):
            for key in ("text", "partial_json", "thinking"):
                _text(delta.get(key), texts)


def _openai(message: Any, texts: list[str]) -> None:
    if not isinstance(message, dict):
        return
    content = message.get("content")
    if isinstance(content, list):
        for part in _dicts(content):
            _text(part.get("text"), texts)
    else:
        _text(content, texts)
    for key in ("refusal", "reasoning_content", "reasoning"):
        _text(message.get(key), texts)
    for call in _dicts(message.get("tool_calls")):
        _call(call.get("function"), "arguments", texts)
    _call(message.get("function_call"), "arguments", texts)


def _anthropic(block: Any, texts: list[str]) -> None:
    if not isinstance(block, dict):
        return
    _text(block.get("text"), texts)
    _text(block.get("thinking"), texts)
    if block.get("type") in ("tool_use", "server_tool_use"):
        _call(block, "input", texts)


def _call(function: Any, field: str, texts: list[str]) -> None:
    """A tool call's name and arguments (a JSON string, or an object as Anthropic and Gemini
    send it; an empty object is only a stream's placeholder)."""
    if not isinstance(function, dict):
        return
    _text(function.get("name"), texts)
    arguments = function.get(field)
    if isinstance(arguments, str):
        texts.append(arguments)
    elif arguments:
        try:
            texts.append(orjson.dumps(arguments).decode())
        except orjson.JSONEncodeError:  # nested past orjson's depth: its size is unknown
            pass


def _text(value: Any, texts: list[str]) -> None:
    if isinstance(value, str) and value:
        texts.append(value)


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []
