"""OpenAI Chat Completions: request validation, usage, error bodies and stream chunks."""

from __future__ import annotations

import re
from typing import Any

import orjson

from ..errors import InvalidRequest, RelayError
from ..types import Usage

__all__ = [
    "ROLES",
    "chunk",
    "error_body",
    "include_usage",
    "usage_from_body",
    "usage_of",
    "usage_to_openai",
    "validate_chat_request",
]

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
#: What a content part's ``type`` may look like. Types the relay cannot translate are refused
#: by the translation; on the same-format path new types of the provider's go through.
PART_TYPE = re.compile(r"[a-z][a-z0-9_]{0,63}")

# parameter -> (accepted types, low, high); bounds None where OpenAI sets none.
_NUMBERS: dict[str, tuple[tuple[type[int | float], ...], float | None, float | None]] = {
    "temperature": ((int, float), 0, 2),
    "top_p": ((int, float), 0, 1),
    "presence_penalty": ((int, float), -2, 2),
    "frequency_penalty": ((int, float), -2, 2),
    "n": ((int,), 1, 128),
    "max_tokens": ((int,), 1, None),
    "max_completion_tokens": ((int,), 1, None),
    "seed": ((int,), None, None),
    "top_logprobs": ((int,), 0, 20),
}
_TYPED: dict[str, tuple[type, ...]] = {
    "stream": (bool,),
    "stream_options": (dict,),
    "tools": (list,),
    "tool_choice": (str, dict),
    "user": (str,),
    "logprobs": (bool,),
    "response_format": (dict,),
    "parallel_tool_calls": (bool,),
    "metadata": (dict,),
    "stop": (str, list, type(None)),
}


def _type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number" if isinstance(value, (int, float)) else type(value).__name__
    )


def require_model(body: Any) -> dict[str, Any]:
    """``body`` as a request object that names its model (every format's first check).

    :raises InvalidRequest: when it is not a JSON object, or has no model.
    """
    if not isinstance(body, dict):
        raise InvalidRequest(f"Request body must be a JSON object, not {_type_name(body)}.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required and must be a non-empty string.", param="model")
    return body


def validate_chat_request(body: Any) -> None:
    """Check a Chat Completions body well enough that nothing malformed goes upstream.

    Parameters the relay does not know are left alone (they are passed through).

    :raises InvalidRequest: naming the parameter at fault.
    """
    require_model(body)
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise InvalidRequest("'messages' is required and must be an array.", param="messages")
    if not messages:
        raise InvalidRequest("'messages' must contain at least one message.", param="messages")
    for i, message in enumerate(messages):
        _validate_message(message, f"messages[{i}]")
    for name, (types, low, high) in _NUMBERS.items():
        if name in body and body[name] is not None:
            _check_number(body[name], name, types, low, high)
    for name, types in _TYPED.items():
        if name in body and body[name] is not None and not isinstance(body[name], types):
            raise InvalidRequest(f"'{name}' has the wrong type ({_type_name(body[name])}).", param=name)
    stop = body.get("stop")
    if isinstance(stop, list) and not all(isinstance(s, str) for s in stop):
        raise InvalidRequest("'stop' must be a string or an array of strings.", param="stop")
    for i, tool in enumerate(body.get("tools") or ()):
        if not isinstance(tool, dict) or not isinstance(tool.get("function", tool.get("type")), (dict, str)):
            raise InvalidRequest(f"'tools[{i}]' must be an object with a function.", param=f"tools[{i}]")


def _check_number(value: Any, name: str, types: tuple[type[int | float], ...], low: float | None, high: float | None) -> None:
    if isinstance(value, bool) or not isinstance(value, types):
        expected = "an integer" if types == (int,) else "a number"
        raise InvalidRequest(f"'{name}' must be {expected}, not {_type_name(value)}.", param=name)
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"between {low} and {high}"
        raise InvalidRequest(f"'{name}' must be {bounds}; got {value}.", param=name)


def _validate_message(message: Any, where: str) -> None:
    if not isinstance(message, dict):
        raise InvalidRequest(f"'{where}' must be an object, not {_type_name(message)}.", param=where)
    role = message.get("role")
    if not isinstance(role, str) or role not in ROLES:
        raise InvalidRequest(
            f"'{where}.role' must be one of {', '.join(sorted(ROLES))}; got {repr(role)[:40]}.", param=f"{where}.role"
        )
    content = message.get("content")
    if content is None:
        if role not in ("assistant", "function") :
            raise InvalidRequest(f"'{where}.content' is required for role {role}.", param=f"{where}.content")
    elif isinstance(content, list):
        for j, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise InvalidRequest(
                    f"'{where}.content[{j}]' must be an object with a 'type'.", param=f"{where}.content[{j}]"
                )
            if not PART_TYPE.fullmatch(part["type"]):
                raise InvalidRequest(f"'{where}.content[{j}].type' is not a content part type.", param=f"{where}.content[{j}].type")
    elif not isinstance(content, str):
        raise InvalidRequest(
            f"'{where}.content' must be a string or an array of parts, not {_type_name(content)}.",
            param=f"{where}.content",
        )
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise InvalidRequest(f"'{where}.tool_call_id' is required for tool messages.", param=f"{where}.tool_call_id")


def usage_from_body(usage: Any, service_tier: Any = None) -> Usage | None:
    """Read an OpenAI ``usage`` object (``None`` when there is none): cache reads from
    ``prompt_tokens_details.cached_tokens`` (DeepSeek's ``prompt_cache_hit_tokens`` when that
    is absent), audio and image input from ``prompt_tokens_details``, reasoning from
    ``completion_tokens_details.reasoning_tokens``; ``service_tier`` is the answer's own."""
    if not isinstance(usage, dict):
        return None
    details = usage.get("prompt_tokens_details")
    prompt = details if isinstance(details, dict) else {}
    completion = usage.get("completion_tokens_details")
    output = completion if isinstance(completion, dict) else {}
    cached = prompt.get("cached_tokens")
    if cached is None:
        cached = usage.get("prompt_cache_hit_tokens")
    return Usage.reported(
        usage.get("prompt_tokens"), usage.get("completion_tokens"), cached,
        audio=prompt.get("audio_tokens"), image=prompt.get("image_tokens"),
        reasoning=output.get("reasoning_tokens"), service_tier=service_tier,
    )


def usage_of(payload: Any) -> Usage | None:
    """The usage of an OpenAI answer or chunk, with the ``service_tier`` it says it ran at."""
    if not isinstance(payload, dict):
        return None
    return usage_from_body(payload.get("usage"), payload.get("service_tier"))


def usage_to_openai(usage: Usage) -> dict[str, Any]:
    prompt: dict[str, int] = {"cached_tokens": usage.cached_tokens}
    if usage.audio_input_tokens:
        prompt["audio_tokens"] = usage.audio_input_tokens
    out: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": prompt,
    }
    if usage.reasoning_tokens:
        out["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return out


def error_body(error: RelayError) -> bytes:
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""
    return orjson.dumps(
        {"error": {"message": error.message, "type": error.error_type, "param": error.param, "code": error.code}}
    )


def chunk(chunk_id: str, created: int, model: Any, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    """One ``chat.completion.chunk`` with one choice: the shape every stream translator builds."""
    return {
        "id": chunk_id, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


def include_usage(body: Any) -> bool:
    """Whether a streamed request asked for the final usage chunk (``stream_options.include_usage``)."""
    options = body.get("stream_options") if isinstance(body, dict) else None
    return bool(isinstance(options, dict) and options.get("include_usage"))