"""OpenAI Chat Completions answers (the hub) -> OpenAI Responses ``response`` objects.

A completion's text becomes a ``message`` output item with one ``output_text`` part (a refusal a
``refusal`` part), each tool call a ``function_call`` item (``call_id`` the tool call's id), and
reasoning text (``reasoning_content``, from OpenAI-compatible providers that send it) a
``reasoning`` item before them, its text as one ``summary_text`` part. A
``length`` finish makes the response ``incomplete`` (``max_output_tokens``), ``content_filter``
too (``content_filter``). Usage is written in the Responses shape. The request's own settings
are not echoed back (``instructions``, ``tools``, ``metadata``... come back as their defaults).
Errors are OpenAI's error shape; an error inside a stream is an ``error`` event.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from ..errors import RelayError
from ..types import Usage
from .hub import new_id, reasoning_text
from .sse import encode_event

__all__ = ["from_completion", "response_object", "stream_error", "usage_to_responses"]

_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def usage_to_responses(usage: Usage | None, reasoning: int = 0) -> dict[str, Any] | None:
    if usage is None:
        return None
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": min(max(Usage.count(reasoning), usage.reasoning_tokens), usage.completion_tokens)},
        "total_tokens": usage.total_tokens,
    }


def response_object(
    response_id: str, created: int, model: Any, status: str, output: list[dict[str, Any]],
    usage: dict[str, Any] | None = None, finish_reason: str | None = None,
) -> dict[str, Any]:
    """A ``response`` object (``status`` ``in_progress``, ``completed`` or ``incomplete``)."""
    reason = _INCOMPLETE.get(finish_reason or "")
    if reason is not None and status == "completed":
        status = "incomplete"
    return {
        "id": response_id, "object": "response", "created_at": created, "status": status,
        "background": False, "error": None,
        "incomplete_details": {"reason": reason} if status == "incomplete" else None,
        "instructions": None, "max_output_tokens": None, "metadata": {}, "model": model,
        "output": output, "parallel_tool_calls": True, "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None}, "store": True, "temperature": None,
        "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [], "top_p": None,
        "truncation": "disabled", "usage": usage, "user": None,
    }


def message_item(item_id: str, text: str, status: str, refusal: str | None = None) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if text or refusal is None:
        content.append({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
    if refusal:
        content.append({"type": "refusal", "refusal": refusal})
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def reasoning_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    """The model's reasoning text (``reasoning_content`` in the hub) as a ``reasoning`` item."""
    return {"id": item_id, "type": "reasoning", "status": status,
            "summary": [{"type": "summary_text", "text": text}] if text else []}


def call_item(item_id: str, call_id: Any, name: Any, arguments: str, status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "function_call", "status": status, "call_id": call_id or new_id("call_"),
            "name": name, "arguments": arguments}


def from_completion(completion: dict[str, Any], usage: Usage | None) -> dict[str, Any]:
    """An OpenAI completion (first choice) as a Responses ``response`` object."""
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    output: list[dict[str, Any]] = []
    thought = reasoning_text(message)
    if thought:
        output.append(reasoning_item(new_id("rs_"), thought, "completed"))
    text, refusal = message.get("content"), message.get("refusal")
    if text or refusal or not message.get("tool_calls"):
        output.append(message_item(new_id("msg_"), text or "", "completed", refusal or None))
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        output.append(call_item(new_id("fc_"), call.get("id"), function.get("name"), function.get("arguments") or "", "completed"))
    details = (completion.get("usage") or {}).get("completion_tokens_details")
    reasoning = details.get("reasoning_tokens", 0) if isinstance(details, dict) else 0
    return response_object(new_id("resp_"), int(completion.get("created") or time.time()), completion.get("model"),
                           "completed", output, usage_to_responses(usage, reasoning), choice.get("finish_reason"))


def stream_error(error: RelayError) -> bytes:
    """The ``error`` event that ends a Responses stream that failed after it started."""
    detail = {"type": error.error_type, "code": error.code, "message": error.message, "param": error.param}
    payload = {"type": "error", "code": error.code, "message": error.message, "param": error.param, "error": detail}
    return encode_event(orjson.dumps(payload), "error")
