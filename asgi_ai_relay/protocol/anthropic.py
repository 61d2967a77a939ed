"""Anthropic Messages: request validation, error bodies, usage and stop reasons.

Translation to and from the OpenAI hub format lives in :mod:`.anthropic_request`,
:mod:`.anthropic_response` and :mod:`.anthropic_stream`.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import InvalidRequest, RelayError
from ..types import Usage
from .sse import encode_event
from .openai import PART_TYPE, require_model

__all__ = [
    "FINISH_TO_STOP",
    "OUTPUT_TOOL",
    "STOP_TO_FINISH",
    "error_body",
    "error_type",
    "stream_error",
    "merge_usage",
    "usage_from_body",
    "usage_to_anthropic",
    "validate_messages_request",
]

ROLES = frozenset({"user", "assistant", "system"})

#: The tool a structured-output request (OpenAI ``response_format``) is forced to call on
#: Anthropic: its input is the answer, given back to the caller as JSON text.
OUTPUT_TOOL = "relay_json_response"

#: Anthropic ``stop_reason`` -> OpenAI ``finish_reason``.
STOP_TO_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
#: OpenAI ``finish_reason`` -> Anthropic ``stop_reason``.
FINISH_TO_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}

# parameter -> (accepted types, low, high)
_NUMBERS: dict[str, tuple[tuple[type[int | float], ...], float | None, float | None]] = {
    "max_tokens": ((int,), 1, None),
    "temperature": ((int, float), 0, 1),
    "top_p": ((int, float), 0, 1),
    "top_k": ((int,), 0, None),
}
_TYPED: dict[str, tuple[type, ...]] = {
    "system": (str, list),
    "stream": (bool,),
    "stop_sequences": (list,),
    "tools": (list,),
    "tool_choice": (dict,),
    "metadata": (dict,),
}


def _where(param: str) -> InvalidRequest:
    return InvalidRequest(f"'{param}' is not valid.", param=param)


def validate_messages_request(body: Any) -> None:
    """Check a Messages body well enough that nothing malformed goes upstream.

    Fields the relay does not know (``thinking``, ``cache_control``, ...) are left alone.

    :raises InvalidRequest: naming the parameter at fault.
    """
    require_model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' is required and must be a non-empty array.", param="messages")
    for i, message in enumerate(messages):
        _validate_message(message, f"messages.{i}")
    for name, (types, low, high) in _NUMBERS.items():
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, types):
            raise InvalidRequest(f"'{name}' must be a number.", param=name)
        if (low is not None and value < low) or (high is not None and value > high):
            raise InvalidRequest(f"'{name}' is out of range; got {value}.", param=name)
    for name, types in _TYPED.items():
        if body.get(name) is not None and not isinstance(body[name], types):
            raise InvalidRequest(f"'{name}' has the wrong type.", param=name)
    if not all(isinstance(s, str) for s in body.get("stop_sequences") or ()):
        raise InvalidRequest("'stop_sequences' must be an array of strings.", param="stop_sequences")
    for i, tool in enumerate(body.get("tools") or ()):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise InvalidRequest(f"'tools.{i}' must be an object with a 'name'.", param=f"tools.{i}")


def _validate_message(message: Any, where: str) -> None:
    if not isinstance(message, dict):
        raise _where(where)
    if not isinstance(message.get("role"), str) or message["role"] not in ROLES:
        raise InvalidRequest(f"'{where}.role' must be 'user' or 'assistant'.", param=f"{where}.role")
    content = message.get("content")
    if isinstance(content, list):
        for j, block in enumerate(content):
            if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                raise InvalidRequest(f"'{where}.content.{j}' must be an object with a 'type'.", param=f"{where}.content.{j}")
            if not PART_TYPE.fullmatch(block["type"]):
                raise InvalidRequest(f"'{where}.content.{j}.type' is not a content block type.", param=f"{where}.content.{j}.type")
    elif not isinstance(content, str):
        raise InvalidRequest(f"'{where}.content' must be a string or an array of blocks.", param=f"{where}.content")


def error_type(error: RelayError) -> str:
    """Anthropic's error type name for an error, chosen by its status."""
    status = error.status_code
    return _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def _payload(error: RelayError) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type(error), "message": error.message}}


def error_body(error: RelayError) -> bytes:
    """``{"type": "error", "error": {"type": ..., "message": ...}}``."""
    return orjson.dumps(_payload(error))


def stream_error(error: RelayError) -> bytes:
    """The ``event: error`` that ends a stream which failed after it started."""
    return encode_event(orjson.dumps(_payload(error)), "error")


def usage_from_body(usage: Any) -> Usage | None:
    """Read an Anthropic ``usage``; prompt tokens include cache reads and writes, as OpenAI
    counts them. Writes are ``cache_creation_input_tokens`` (the sum of ``cache_creation``'s
    ``ephemeral_5m_input_tokens`` and ``ephemeral_1h_input_tokens`` when only those are given),
    the one-hour part priced apart; ``server_tool_use.web_search_requests`` counts searches;
    ``service_tier`` (``standard``, ``priority``, ``batch``) is the tier that served."""
    if not isinstance(usage, dict):
        return None
    read, written = usage.get("cache_read_input_tokens"), usage.get("cache_creation_input_tokens")
    split = usage.get("cache_creation")
    split = split if isinstance(split, dict) else {}
    hour = split.get("ephemeral_1h_input_tokens")
    if written is None and split:
        written = (split.get("ephemeral_5m_input_tokens"), hour)
    tools = usage.get("server_tool_use")
    searches = tools.get("web_search_requests") if isinstance(tools, dict) else 0
    return Usage.reported(
        (usage.get("input_tokens"), read, written), usage.get("output_tokens"), read, written,
        write_1h=hour, web_search=searches, service_tier=usage.get("service_tier"),
    )


def merge_usage(told: dict[str, Any] | None, update: Any) -> dict[str, Any]:
    """``message_start``'s usage updated by a ``message_delta``'s: the delta's counts are
    cumulative and authoritative where present (a field it leaves out, or sends as null, keeps
    the earlier value; nested objects merge field by field), so nothing is counted twice."""
    merged = dict(told or {})
    if not isinstance(update, dict):
        return merged
    for key, value in update.items():
        if value is None:
            continue
        earlier = merged.get(key)
        merged[key] = {**earlier, **value} if isinstance(earlier, dict) and isinstance(value, dict) else value
    return merged


def usage_to_anthropic(usage: Usage | None) -> dict[str, Any]:
    """``input_tokens`` counts only the uncached part, as Anthropic reports it."""
    if usage is None:
        usage = Usage()
    uncached = max(0, usage.prompt_tokens - usage.cached_tokens - usage.cache_creation_tokens)
    out: dict[str, Any] = {
        "input_tokens": uncached,
        "output_tokens": usage.completion_tokens,
        "cache_creation_input_tokens": usage.cache_creation_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
    }
    if usage.cache_write_1h_tokens:
        out["cache_creation"] = {"ephemeral_5m_input_tokens": usage.cache_write_5m_tokens,
                                 "ephemeral_1h_input_tokens": usage.cache_write_1h_tokens}
    if usage.web_search_requests:
        out["server_tool_use"] = {"web_search_requests": usage.web_search_requests}
    return out
