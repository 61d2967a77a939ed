"""Whole Anthropic answers <-> OpenAI chat completions (the hub).

Text blocks <-> ``content``; ``tool_use`` blocks <-> ``tool_calls`` (ids kept), but a call of
the structured-output tool (:data:`~.anthropic.OUTPUT_TOOL`) is the answer, as JSON text; stop reasons
<-> finish reasons; usage with cache reads and writes <-> ``prompt_tokens_details``. Thinking
blocks are dropped on the way to OpenAI, which has no field for them.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from ..errors import UpstreamProtocolError
from ..types import Usage
from .anthropic import FINISH_TO_STOP, OUTPUT_TOOL, STOP_TO_FINISH, usage_from_body, usage_to_anthropic
from .hub import new_id
from .openai import usage_to_openai

__all__ = ["completion_from_message", "message_from_completion"]


def completion_from_message(payload: Any) -> tuple[dict[str, Any], Usage | None]:
    """An Anthropic message as an OpenAI completion, and its usage.

    :raises UpstreamProtocolError: when it is not a message.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("content"), list):
        raise UpstreamProtocolError("The provider's answer is not an Anthropic message.")
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in payload["content"]:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            texts.append(block.get("text", ""))
        elif block.get("type") == "tool_use" and block.get("name") == OUTPUT_TOOL:  # structured output
            texts.append(orjson.dumps(block.get("input") or {}).decode())
        elif block.get("type") == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append({"id": block.get("id"), "type": "function", "function": {"name": block.get("name"), "arguments": arguments}})
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    usage = usage_from_body(payload.get("usage"))
    completion: dict[str, Any] = {
        "id": "chatcmpl-" + str(payload.get("id") or new_id("")).removeprefix("msg_"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": payload.get("model"),
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": _finish(payload.get("stop_reason"), bool(calls))}],
    }
    if usage is not None:
        completion["usage"] = usage_to_openai(usage)
    return completion, usage


def _finish(stop: Any, calls: bool) -> str:
    """The finish reason; a stop to call only the structured-output tool is a plain stop."""
    reason = STOP_TO_FINISH.get(stop or "", "stop")
    return "stop" if reason == "tool_calls" and not calls else reason


def message_from_completion(completion: dict[str, Any], usage: Usage | None) -> dict[str, Any]:
    """An OpenAI completion (first choice) as an Anthropic message."""
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    text = message.get("content")
    if text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        try:
            arguments = orjson.loads(function.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            arguments = {}
        content.append({"type": "tool_use", "id": call.get("id") or new_id("toolu_"), "name": function.get("name"), "input": arguments})
    return {
        "id": "msg_" + str(completion.get("id") or new_id("")).removeprefix("chatcmpl-"),
        "type": "message",
        "role": "assistant",
        "model": completion.get("model"),
        "content": content,
        "stop_reason": FINISH_TO_STOP.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": usage_to_anthropic(usage),
    }
