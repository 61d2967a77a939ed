"""When a stream commits: the first piece for the caller that carries content.

Until then nothing has been sent, so a provider that fails after a role-only delta or a bare
``message_start`` is a failed attempt like any other and the route may try elsewhere. Content
is text, a tool call, a refusal, usage, the end of the message, or an error the provider put in
the stream (the caller must see that one). A piece that cannot be read commits: when in doubt,
send.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["carries_content"]

_ANTHROPIC_CONTENT = frozenset({"content_block_delta", "message_delta", "message_stop", "error"})
#: Responses events that only open the answer (an opened item or part with nothing in it yet).
_RESPONSES_OPENING = frozenset({"response.created", "response.in_progress", "response.queued", "response.content_part.added"})


def carries_content(wire: str, piece: bytes) -> bool:
    """Whether ``piece`` (SSE events in the caller's format ``wire``) carries content."""
    for line in piece.split(b"\n"):
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            return True
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return True
        if not isinstance(event, dict) or _content(wire, event):
            return True
    return False


def _content(wire: str, event: dict[str, Any]) -> bool:
    if "error" in event:
        return True
    if wire == "anthropic":
        kind = event.get("type")
        if kind == "content_block_start":
            block = event.get("content_block")
            return isinstance(block, dict) and block.get("type") != "text" or bool(
                isinstance(block, dict) and block.get("text"))
        return kind in _ANTHROPIC_CONTENT
    if wire == "openai":
        if event.get("usage"):
            return True
        for choice in event.get("choices") or ():
            if not isinstance(choice, dict):
                return True
            delta = choice.get("delta")
            if choice.get("finish_reason") or not isinstance(delta, dict):
                return True
            if delta.get("content") or delta.get("tool_calls") or delta.get("refusal") or delta.get("function_call"):
                return True
        return False
    if wire == "responses":
        kind = event.get("type")
        if kind == "response.output_item.added":
            item = event.get("item")
            return not (isinstance(item, dict) and item.get("type") in ("message", "function_call", "reasoning"))
        return kind not in _RESPONSES_OPENING
    return True
