"""AWS Bedrock Converse: OpenAI requests (the hub) -> ``Converse`` bodies, ``Converse`` answers ->
OpenAI completions, usage and stop reasons.

Mapped: system/developer messages -> ``system`` text blocks; user/assistant turns ->
``messages`` with ``content`` blocks (consecutive turns of one role merged, as Converse wants
them alternating); text; base64 images -> ``image`` blocks (``format`` from the MIME type);
assistant ``tool_calls`` -> ``toolUse`` blocks; ``tool`` messages -> ``toolResult`` blocks in a
user turn; ``tools`` -> ``toolConfig.tools[].toolSpec`` (``inputSchema.json``); ``tool_choice``
``auto`` / ``required`` / a named function -> ``toolChoice`` ``auto`` / ``any`` / ``tool``;
``max_tokens`` (or ``max_completion_tokens``), ``temperature``, ``top_p``, ``stop`` ->
``inferenceConfig``. Usage: ``inputTokens`` is the uncached part; ``cacheReadInputTokens`` and
``cacheWriteInputTokens`` are added to the prompt and recorded as cached and cache-write tokens.

Dropped deliberately: ``user``, ``metadata``, ``seed``, penalties, ``parallel_tool_calls``,
``stream_options``, ``tool_choice: none`` (Converse has no such choice: the tools stay
offered) and reasoning blocks in answers. Refused with a 400: ``n`` > 1, ``logprobs``, audio
output, ``response_format`` other than text, image URLs that are not ``data:`` URLs,
non-function tools and content types Converse cannot carry.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from ..config import ModelConfig
from ..errors import UpstreamProtocolError
from ..types import Usage
from .hub import new_id, parse_data_url, plain_text, refuse_single_choice_text, untranslatable
from .openai import usage_to_openai

__all__ = ["STOP", "completion_from_response", "from_openai", "stop_reason", "usage_from_converse"]

_FORMAT = "bedrock"

#: Converse ``stopReason`` -> OpenAI ``finish_reason``.
STOP = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
    "model_context_window_exceeded": "length",
}
_IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/gif": "gif", "image/webp": "webp"}


def from_openai(body: dict[str, Any], model: ModelConfig, stream: bool) -> dict[str, Any]:
    """An OpenAI request as the Converse body for ``model`` (the model goes in the URL).

    :raises InvalidRequest: for what Converse cannot express, naming the parameter.
    """
    provider = model.provider
    refuse_single_choice_text(body, provider, _FORMAT)
    fmt = (body.get("response_format") or {}).get("type")
    if fmt not in (None, "text"):
        raise untranslatable("response_format", provider, _FORMAT, "text output only")
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for i, message in enumerate(body["messages"]):
        if message.get("role") in ("system", "developer"):
            system.append({"text": plain_text(message.get("content"))})
            continue
        role, blocks = _turn(message, f"messages[{i}]", provider)
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        elif blocks:
            messages.append({"role": role, "content": blocks})
    out: dict[str, Any] = {"messages": messages}
    if system:
        out["system"] = system
    config = _inference_config(body)
    if config:
        out["inferenceConfig"] = config
    if body.get("tools"):
        tool_config: dict[str, Any] = {"tools": [_tool(t, i, provider) for i, t in enumerate(body["tools"])]}
        choice = _tool_choice(body.get("tool_choice"))
        if choice:
            tool_config["toolChoice"] = choice
        out["toolConfig"] = tool_config
    return out


def _inference_config(body: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if limit:
        config["maxTokens"] = limit
    if body.get("temperature") is not None:
        config["temperature"] = body["temperature"]
    if body.get("top_p") is not None:
        config["topP"] = body["top_p"]
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else stop
    return config


def _tool(tool: dict[str, Any], i: int, provider: str) -> dict[str, Any]:
    function = tool.get("function")
    if tool.get("type", "function") != "function" or not isinstance(function, dict):
        raise untranslatable(f"tools[{i}]", provider, _FORMAT, "function tools only")
    spec: dict[str, Any] = {"name": function.get("name"), "inputSchema": {"json": function.get("parameters") or {"type": "object"}}}
    if function.get("description"):
        spec["description"] = function["description"]
    return {"toolSpec": spec}


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if isinstance(choice, dict):
        return {"tool": {"name": (choice.get("function") or {}).get("name")}}
    return {"auto": {}} if choice == "auto" else {"any": {}} if choice == "required" else None


def _turn(message: dict[str, Any], where: str, provider: str) -> tuple[str, list[dict[str, Any]]]:
    role = message.get("role")
    if role == "tool":
        result = {"toolUseId": message.get("tool_call_id"), "content": [{"text": plain_text(message.get("content"))}]}
        return "user", [{"toolResult": result}]
    if role not in ("user", "assistant"):
        raise untranslatable(f"{where}.role", provider, _FORMAT, f"role {role!r} has no equivalent")
    blocks = _blocks(message.get("content"), where, provider)
    for k, call in enumerate(message.get("tool_calls") or () if role == "assistant" else ()):
        function = call.get("function") or {}
        try:
            arguments = orjson.loads(function.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            raise untranslatable(f"{where}.tool_calls[{k}].function.arguments", provider, _FORMAT, "not JSON") from None
        blocks.append({"toolUse": {"toolUseId": call.get("id"), "name": function.get("name"), "input": arguments}})
    return str(role), blocks


def _blocks(content: Any, where: str, provider: str) -> list[dict[str, Any]]:
    if content is None or content == "":
        return []
    if isinstance(content, str):
        return [{"text": content}]
    blocks = [_block(p, f"{where}.content[{j}]", provider) for j, p in enumerate(content)]
    return [b for b in blocks if b.get("text") != ""]  # Converse refuses blank text blocks


def _block(part: dict[str, Any], where: str, provider: str) -> dict[str, Any]:
    kind = part.get("type")
    if kind in ("text", "refusal"):
        return {"text": part.get("text") or part.get("refusal") or ""}
    if kind == "image_url":
        parsed = parse_data_url((part.get("image_url") or {}).get("url", ""))
        image_format = _IMAGE_FORMATS.get(parsed[0]) if parsed else None
        if parsed is None or image_format is None:
            raise untranslatable(f"{where}.image_url", provider, _FORMAT, "base64 data: URLs of png, jpeg, gif or webp only")
        return {"image": {"format": image_format, "source": {"bytes": parsed[1]}}}
    raise untranslatable(f"{where}.type", provider, _FORMAT, f"{kind!r} content has no equivalent")


def usage_from_converse(usage: Any) -> Usage | None:
    """Converse ``usage``: the prompt is the uncached input plus cache reads and writes."""
    if not isinstance(usage, dict):
        return None
    read, written = usage.get("cacheReadInputTokens"), usage.get("cacheWriteInputTokens")
    return Usage.reported((usage.get("inputTokens"), read, written), usage.get("outputTokens"), read, written)


def stop_reason(reason: Any, calls: bool) -> str:
    finish = STOP.get(str(reason), "stop")
    return "tool_calls" if calls and finish == "stop" else finish


def tool_call(use: dict[str, Any], index: int | None = None) -> dict[str, Any]:
    """A Converse ``toolUse`` as an OpenAI tool call (with ``index`` for stream deltas)."""
    out: dict[str, Any] = {
        "id": use.get("toolUseId") or new_id("call_"),
        "type": "function",
        "function": {"name": use.get("name"), "arguments": orjson.dumps(use.get("input") or {}).decode()},
    }
    return out if index is None else {"index": index, **out}


def completion_from_response(payload: Any) -> tuple[dict[str, Any], Usage | None]:
    """A Converse answer as an OpenAI completion, and its usage.

    :raises UpstreamProtocolError: when it is not a Converse answer.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("output"), dict):
        raise UpstreamProtocolError("The provider's answer is not a Converse response.")
    blocks = (payload["output"].get("message") or {}).get("content") or []
    text = "".join(b["text"] for b in blocks if isinstance(b.get("text"), str))
    calls = [tool_call(b["toolUse"]) for b in blocks if isinstance(b.get("toolUse"), dict)]
    message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
    if calls:
        message["tool_calls"] = calls
    usage = usage_from_converse(payload.get("usage"))
    completion: dict[str, Any] = {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": payload.get("modelId"),
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": stop_reason(payload.get("stopReason"), bool(calls))}],
    }
    if usage is not None:
        completion["usage"] = usage_to_openai(usage)
    return completion, usage
