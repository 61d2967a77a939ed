"""OpenAI completions (the hub) -> Gemini ``GenerateContentResponse`` answers for Gemini-format
callers, and Google's error shape (``{"error": {"code", "message", "status"}}``).

A completion's text becomes a ``text`` part, each tool call a ``functionCall`` part (its id
kept, its arguments an object), reasoning text (``reasoning_content``) a ``thought`` part; finish reasons map to ``finishReason`` (``tool_calls`` is
Gemini's ``STOP``); usage becomes ``usageMetadata``.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import RelayError
from ..types import Usage
from .hub import new_id, reasoning_text
from .sse import encode_event

__all__ = ["FINISH", "STATUS", "candidate", "error_body", "from_completion", "function_part", "response", "stream_error",
           "usage_metadata"]

#: HTTP status -> the ``status`` Google's APIs write beside it.
STATUS = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    405: "UNIMPLEMENTED", 409: "ABORTED", 413: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED", 500: "INTERNAL", 501: "UNIMPLEMENTED", 502: "UNAVAILABLE", 503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
#: OpenAI ``finish_reason`` -> Gemini ``finishReason``.
FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP", "function_call": "STOP", "content_filter": "SAFETY"}


def usage_metadata(usage: Usage | None) -> dict[str, int] | None:
    if usage is None:
        return None
    return {"promptTokenCount": usage.prompt_tokens, "candidatesTokenCount": usage.completion_tokens,
            "totalTokenCount": usage.total_tokens, "cachedContentTokenCount": usage.cached_tokens}


def function_part(call: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI tool call as a Gemini ``functionCall`` part (its id kept)."""
    function = call.get("function") or {}
    try:
        args = orjson.loads(function.get("arguments") or "{}")
    except orjson.JSONDecodeError:
        args = {"arguments": function.get("arguments")}
    return {"functionCall": {"id": call.get("id"), "name": function.get("name"), "args": args if isinstance(args, dict) else {"value": args}}}


def candidate(parts: list[dict[str, Any]], finish: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish is not None:
        out["finishReason"] = FINISH.get(finish, "STOP")
    return out


def response(response_id: str, model: Any, cand: dict[str, Any], usage: Usage | None) -> dict[str, Any]:
    out: dict[str, Any] = {"candidates": [cand]}
    metadata = usage_metadata(usage)
    if metadata is not None:
        out["usageMetadata"] = metadata
    out["modelVersion"] = model
    out["responseId"] = response_id
    return out


def from_completion(completion: dict[str, Any], usage: Usage | None) -> dict[str, Any]:
    """An OpenAI completion (first choice) as a ``GenerateContentResponse``."""
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    parts: list[dict[str, Any]] = []
    thought = reasoning_text(message)
    if thought:
        parts.append({"text": thought, "thought": True})
    text = message.get("content") or message.get("refusal")
    if text:
        parts.append({"text": text})
    parts.extend(function_part(c) for c in message.get("tool_calls") or ())
    if not parts:
        parts.append({"text": ""})
    return response(new_id(""), completion.get("model"), candidate(parts, choice.get("finish_reason") or "stop"), usage)


def _payload(error: RelayError) -> dict[str, Any]:
    status = error.status_code
    name = STATUS.get(status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT")
    return {"error": {"code": status, "message": error.message, "status": name}}


def error_body(error: RelayError) -> bytes:
    """Google's error shape: ``{"error": {"code", "message", "status"}}``."""
    return orjson.dumps(_payload(error))


def stream_error(error: RelayError) -> bytes:
    """The event that ends a Gemini stream which failed after it started."""
    return encode_event(orjson.dumps(_payload(error)))
