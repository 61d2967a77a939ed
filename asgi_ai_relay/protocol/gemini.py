"""Gemini ``generateContent``: OpenAI requests (the hub) -> Gemini bodies, Gemini answers ->
OpenAI completions, usage and finish reasons.

Mapped: system/developer messages -> ``systemInstruction``; user/assistant turns -> ``contents``
with roles ``user`` / ``model`` (consecutive turns of one role merged); text, images (base64 as
``inlineData``, URLs as ``fileData``), audio and files; assistant ``tool_calls`` ->
``functionCall`` parts; ``tool`` messages -> ``functionResponse`` parts (named after the call
they answer); ``tools`` -> ``functionDeclarations`` with ``parametersJsonSchema``;
``tool_choice`` -> ``toolConfig.functionCallingConfig``; ``max_tokens``, ``temperature``,
``top_p``, ``stop``, ``seed``, penalties and ``response_format`` -> ``generationConfig``.

Dropped deliberately: ``user``, ``metadata``, ``parallel_tool_calls``, ``stream_options``,
``reasoning_effort``, tool-call ids (Gemini matches calls by name and order; answers get fresh
``call_`` ids) and thought parts in answers. Refused with a 400: ``n`` > 1, ``logprobs``, audio
output, non-function tools, content types Gemini cannot carry.
"""

from __future__ import annotations

import mimetypes
import time
from typing import Any

import orjson

from ..config import ModelConfig
from ..errors import UpstreamProtocolError
from ..types import Usage
from .hub import new_id, parse_data_url, plain_text, refuse_single_choice_text, untranslatable
from .openai import usage_to_openai

__all__ = ["FINISH", "completion_from_response", "from_openai", "usage_from_metadata"]

_FORMAT = "gemini"

#: Gemini ``finishReason`` -> OpenAI ``finish_reason``.
FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}
_CONFIG = {
    "temperature": "temperature",
    "top_p": "topP",
    "seed": "seed",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
}


def from_openai(body: dict[str, Any], model: ModelConfig, stream: bool) -> dict[str, Any]:
    """An OpenAI request as the Gemini body for ``model`` (the model goes in the URL).

    :raises InvalidRequest: for what Gemini cannot express, naming the parameter.
    """
    provider = model.provider
    _refuse(body, provider)
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str | None] = {}  # tool call id -> function name
    for i, message in enumerate(body["messages"]):
        if message.get("role") in ("system", "developer"):
            system.append(plain_text(message.get("content")))
            continue
        role, parts = _turn(message, f"messages[{i}]", provider, names)
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        elif parts:
            contents.append({"role": role, "parts": parts})
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    config = _generation_config(body)
    if config:
        out["generationConfig"] = config
    if body.get("tools"):
        out["tools"] = [{"functionDeclarations": [_declaration(t, i, provider) for i, t in enumerate(body["tools"])]}]
    tool_config = _tool_config(body.get("tool_choice"))
    if tool_config:
        out["toolConfig"] = tool_config
    return out


def _refuse(body: dict[str, Any], provider: str) -> None:
    refuse_single_choice_text(body, provider, _FORMAT)


def _generation_config(body: dict[str, Any]) -> dict[str, Any]:
    config = {target: body[name] for name, target in _CONFIG.items() if body.get(name) is not None}
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if limit:
        config["maxOutputTokens"] = limit
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else stop
    fmt = body.get("response_format") or {}
    if fmt.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        schema = (fmt.get("json_schema") or {}).get("schema")
        if schema:
            config["responseJsonSchema"] = schema
    return config


def _declaration(tool: dict[str, Any], i: int, provider: str) -> dict[str, Any]:
    function = tool.get("function")
    if tool.get("type", "function") != "function" or not isinstance(function, dict):
        raise untranslatable(f"tools[{i}]", provider, _FORMAT, "function tools only")
    out: dict[str, Any] = {"name": function.get("name")}
    if function.get("description"):
        out["description"] = function["description"]
    if function.get("parameters"):
        out["parametersJsonSchema"] = function["parameters"]
    return out


def _tool_config(choice: Any) -> dict[str, Any] | None:
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}
    modes = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
    return {"functionCallingConfig": {"mode": modes[choice]}} if choice in modes else None


def _turn(message: dict[str, Any], where: str, provider: str, names: dict[str, str | None]) -> tuple[str, list[dict[str, Any]]]:
    role = message.get("role")
    if role == "tool":
        call_id = message.get("tool_call_id")
        if call_id not in names:
            raise untranslatable(f"{where}.tool_call_id", provider, _FORMAT, "it must answer an earlier tool call")
        return "user", [{"functionResponse": {"name": names[call_id], "response": _tool_response(message.get("content"))}}]
    if role not in ("user", "assistant"):
        raise untranslatable(f"{where}.role", provider, _FORMAT, f"role {role!r} has no equivalent")
    parts = _parts(message.get("content"), where, provider)
    for k, call in enumerate(message.get("tool_calls") or () if role == "assistant" else ()):
        function = call.get("function") or {}
        try:
            args = orjson.loads(function.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            raise untranslatable(f"{where}.tool_calls[{k}].function.arguments", provider, _FORMAT, "not JSON") from None
        names[call.get("id")] = function.get("name")
        parts.append({"functionCall": {"name": function.get("name"), "args": args}})
    return ("model" if role == "assistant" else "user"), parts


def _tool_response(content: Any) -> dict[str, Any]:
    text = plain_text(content)
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = None
    return value if isinstance(value, dict) else {"result": text}


def _parts(content: Any, where: str, provider: str) -> list[dict[str, Any]]:
    if content is None or content == "":
        return []
    if isinstance(content, str):
        return [{"text": content}]
    return [_part(p, f"{where}.content[{j}]", provider) for j, p in enumerate(content)]


def _part(part: dict[str, Any], where: str, provider: str) -> dict[str, Any]:
    kind = part.get("type")
    if kind in ("text", "refusal"):
        return {"text": part.get("text") or part.get("refusal") or ""}
    if kind == "image_url":
        url = (part.get("image_url") or {}).get("url", "")
        return _media(url, mimetypes.guess_type(url)[0] or "image/jpeg")
    if kind == "input_audio":
        audio = part.get("input_audio") or {}
        return {"inlineData": {"mimeType": f"audio/{audio.get('format', 'wav')}", "data": audio.get("data", "")}}
    if kind == "file" and parse_data_url((part.get("file") or {}).get("file_data", "")):
        return _media(part["file"]["file_data"], "application/octet-stream")
    raise untranslatable(f"{where}.type", provider, _FORMAT, f"{kind!r} content has no equivalent")


def _media(url: str, guessed: str) -> dict[str, Any]:
    parsed = parse_data_url(url)
    if parsed is not None:
        return {"inlineData": {"mimeType": parsed[0], "data": parsed[1]}}
    return {"fileData": {"mimeType": guessed, "fileUri": url}}


def usage_from_metadata(metadata: Any) -> Usage | None:
    """Gemini ``usageMetadata``: thinking tokens (``thoughtsTokenCount``) are billed as output
    and kept as reasoning, tool-use prompts are input, ``cachedContentTokenCount`` (implicit or
    explicit cache) is cache reads, audio and image input come from ``promptTokensDetails``."""
    if not isinstance(metadata, dict):
        return None
    modality: dict[str, list[object]] = {"AUDIO": [], "IMAGE": []}
    for key in ("promptTokensDetails", "toolUsePromptTokensDetails"):
        for detail in metadata.get(key) or ():
            if isinstance(detail, dict) and detail.get("modality") in modality:
                modality[detail["modality"]].append(detail.get("tokenCount"))
    thoughts = metadata.get("thoughtsTokenCount")
    return Usage.reported(
        (metadata.get("promptTokenCount"), metadata.get("toolUsePromptTokenCount")),
        (metadata.get("candidatesTokenCount"), thoughts),
        metadata.get("cachedContentTokenCount"),
        reasoning=thoughts, audio=tuple(modality["AUDIO"]), image=tuple(modality["IMAGE"]),
    )


def tool_call(call: dict[str, Any], index: int | None = None) -> dict[str, Any]:
    """A Gemini ``functionCall`` as an OpenAI tool call (with ``index`` for stream deltas)."""
    out: dict[str, Any] = {
        "id": call.get("id") or new_id("call_"),
        "type": "function",
        "function": {"name": call.get("name"), "arguments": orjson.dumps(call.get("args") or {}).decode()},
    }
    return out if index is None else {"index": index, **out}


def finish_reason(candidate: dict[str, Any], calls: bool) -> str | None:
    reason = candidate.get("finishReason")
    if reason is None:
        return None
    return "tool_calls" if calls and reason == "STOP" else FINISH.get(reason, "stop")


def completion_from_response(payload: Any) -> tuple[dict[str, Any], Usage | None]:
    """A Gemini answer as an OpenAI completion, and its usage.

    :raises UpstreamProtocolError: when it is not a ``GenerateContentResponse``.
    """
    if not isinstance(payload, dict):
        raise UpstreamProtocolError("The provider's answer is not a Gemini response.")
    candidate = (payload.get("candidates") or [{}])[0]
    parts = (candidate.get("content") or {}).get("parts") or []
    text = "".join(p["text"] for p in parts if isinstance(p.get("text"), str) and not p.get("thought"))
    calls = [tool_call(p["functionCall"]) for p in parts if isinstance(p.get("functionCall"), dict)]
    message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
    if calls:
        message["tool_calls"] = calls
    blocked = not payload.get("candidates") and (payload.get("promptFeedback") or {}).get("blockReason")
    finish = "content_filter" if blocked else (finish_reason(candidate, bool(calls)) or "stop")
    usage = usage_from_metadata(payload.get("usageMetadata"))
    completion: dict[str, Any] = {
        "id": "chatcmpl-" + str(payload.get("responseId") or new_id("")),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": payload.get("modelVersion"),
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
    }
    if usage is not None:
        completion["usage"] = usage_to_openai(usage)
    return completion, usage
