"""Gemini ``generateContent`` requests from callers -> OpenAI Chat Completions (the hub); the
answers and errors going back are in :mod:`.gemini_answer`.

The model and the action come from the URL (``/v1beta/models/{model}:generateContent``), not
the body; :mod:`asgi_ai_relay.stages.gemini` reads them.

Mapped: ``systemInstruction`` -> a leading system message; ``contents`` with roles ``user`` /
``model`` -> user / assistant messages; ``text`` parts; ``inlineData`` -> images (``image/*``),
``input_audio`` (``audio/*``) or a ``file`` part; ``fileData`` -> an image URL; ``functionCall``
parts -> assistant ``tool_calls`` (the part's ``id``, or a fresh ``call_`` id);
``functionResponse`` parts -> ``tool`` messages answering the call of that id, or the earliest
unanswered call of that name; ``tools[].functionDeclarations`` (``parametersJsonSchema``, or
``parameters`` in Gemini's schema dialect with upper-case type names) -> function tools;
``toolConfig.functionCallingConfig`` -> ``tool_choice``; ``generationConfig``:
``temperature``, ``topP``, ``maxOutputTokens``, ``stopSequences``, ``seed``, penalties,
``candidateCount`` -> ``n``, ``responseMimeType: application/json`` with ``responseJsonSchema``
/ ``responseSchema`` -> ``response_format``.

Dropped: ``safetySettings``, ``thinkingConfig``, ``topK``, ``labels``, thought parts (and
their signatures), ``responseLogprobs``. Refused with a 400 naming them: ``cachedContent``,
tools other than function declarations (``googleSearch``, ``codeExecution``, ...), part kinds
the hub cannot carry (``executableCode``...), roles other than ``user`` and ``model``.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import InvalidRequest
from .hub import data_url, new_id, plain_text

__all__ = ["json_schema", "to_chat", "validate_gemini_request"]

_CONFIG = {
    "temperature": "temperature", "topP": "top_p", "seed": "seed", "presencePenalty": "presence_penalty",
    "frequencyPenalty": "frequency_penalty", "maxOutputTokens": "max_tokens", "candidateCount": "n",
}
_ROLES = {"user": "user", "model": "assistant", "function": "user"}
_MODES = {"AUTO": "auto", "ANY": "required", "NONE": "none", "VALIDATED": "auto"}


def _bad(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param)


def validate_gemini_request(body: Any) -> None:
    """Check a ``generateContent`` body (its model is in the URL), or a ``countTokens`` one.

    :raises InvalidRequest: naming the field at fault.
    """
    if not isinstance(body, dict):
        raise _bad("The request body must be a JSON object.", "body")
    inner = body.get("generateContentRequest")  # countTokens' other form
    if isinstance(inner, dict) and "contents" not in body:
        body = inner
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise _bad("'contents' is required and must be a non-empty array.", "contents")
    for i, content in enumerate(contents):
        _check_content(content, f"contents[{i}]", roles=True)
    for name in ("generationConfig", "systemInstruction", "toolConfig"):
        if body.get(name) is not None and not isinstance(body[name], dict):
            raise _bad(f"'{name}' must be an object.", name)
    if body.get("systemInstruction") is not None:
        _check_content(body["systemInstruction"], "systemInstruction", roles=False)
    _check_config(body.get("generationConfig") or {})
    calling = (body.get("toolConfig") or {}).get("functionCallingConfig")
    if calling is not None and not (isinstance(calling, dict) and isinstance(calling.get("mode", ""), str)
                                    and _strings(calling.get("allowedFunctionNames", []))):
        raise _bad("'toolConfig.functionCallingConfig' must be an object with a string 'mode'.", "toolConfig")
    if body.get("tools") is not None and not (isinstance(body["tools"], list) and all(isinstance(t, dict) for t in body["tools"])):
        raise _bad("'tools' must be an array of objects.", "tools")
    if body.get("cachedContent") is not None:
        raise _bad("'cachedContent' is not supported by this relay.", "cachedContent")


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _check_content(content: Any, where: str, roles: bool) -> None:
    if not isinstance(content, dict) or not isinstance(content.get("parts"), list):
        raise _bad(f"'{where}' must be an object with 'parts'.", where)
    role = content.get("role")
    if roles and role is not None and role not in ("user", "model", "function"):
        raise _bad(f"'{where}.role' must be 'user' or 'model'.", f"{where}.role")
    for j, part in enumerate(content["parts"]):
        at = f"{where}.parts[{j}]"
        if not isinstance(part, dict):
            raise _bad(f"'{at}' must be an object.", at)
        if "text" in part and not isinstance(part["text"], str):
            raise _bad(f"'{at}.text' must be a string.", f"{at}.text")
        for kind in ("functionCall", "functionResponse"):
            if kind in part and not (isinstance(part[kind], dict) and isinstance(part[kind].get("name"), str)):
                raise _bad(f"'{at}.{kind}' must be an object with a 'name'.", f"{at}.{kind}")
        call = part.get("functionCall")
        if isinstance(call, dict) and call.get("args") is not None and not isinstance(call["args"], dict):
            raise _bad(f"'{at}.functionCall.args' must be an object.", f"{at}.functionCall.args")
        for kind in ("inlineData", "inline_data", "fileData", "file_data"):
            blob = part.get(kind)
            if blob is not None and not (isinstance(blob, dict) and all(isinstance(v, str) for v in blob.values())):
                raise _bad(f"'{at}.{kind}' must be an object of strings.", f"{at}.{kind}")


_LIMITS: dict[str, tuple[tuple[type[int | float], ...], float | None, float | None]] = {
    "temperature": ((int, float), 0, 2), "topP": ((int, float), 0, 1), "topK": ((int, float), 0, None),
    "maxOutputTokens": ((int,), 1, None), "candidateCount": ((int,), 1, 8), "seed": ((int,), None, None),
    "presencePenalty": ((int, float), -2, 2), "frequencyPenalty": ((int, float), -2, 2),
}


def _check_config(config: dict[str, Any]) -> None:
    for name, (types, low, high) in _LIMITS.items():
        value = config.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, types) or (low is not None and value < low) or (high is not None and value > high):
            raise _bad(f"'generationConfig.{name}' is not valid.", f"generationConfig.{name}")
    if config.get("stopSequences") is not None and not _strings(config["stopSequences"]):
        raise _bad("'generationConfig.stopSequences' must be an array of strings.", "generationConfig.stopSequences")
    if config.get("responseMimeType") is not None and not isinstance(config["responseMimeType"], str):
        raise _bad("'generationConfig.responseMimeType' must be a string.", "generationConfig.responseMimeType")


def to_chat(body: dict[str, Any], provider: str = "", fmt: str = "") -> dict[str, Any]:
    """A validated Gemini body as a Chat Completions body (``model`` is filled in by the route).

    :raises InvalidRequest: for what the hub cannot express, naming the field.
    """
    messages: list[dict[str, Any]] = []
    system = body.get("systemInstruction") or body.get("system_instruction")
    if isinstance(system, dict):
        text = "".join(p.get("text", "") for p in system.get("parts") or () if isinstance(p, dict) and isinstance(p.get("text"), str))
        if text:
            messages.append({"role": "system", "content": text})
    pending: list[tuple[str, str]] = []  # (call id, name) of calls not yet answered
    for i, content in enumerate(body["contents"]):
        _content(content, f"contents[{i}]", messages, pending)
    out: dict[str, Any] = {"model": body.get("model", ""), "messages": messages}
    _generation(body.get("generationConfig") or {}, out)
    tools = [_tool(t, i) for i, t in enumerate(body.get("tools") or ())]
    declared = [d for group in tools for d in group]
    if declared:
        out["tools"] = declared
        choice = _choice((body.get("toolConfig") or {}).get("functionCallingConfig"))
        if choice is not None:
            out["tool_choice"] = choice
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


def _content(content: dict[str, Any], where: str, messages: list[dict[str, Any]], pending: list[tuple[str, str]]) -> None:
    role = _ROLES.get(content.get("role") or "user")
    if role is None:
        raise _bad(f"'{where}.role' must be 'user' or 'model'.", f"{where}.role")
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for j, part in enumerate(content["parts"]):
        at = f"{where}.parts[{j}]"
        if part.get("thought") or (set(part) <= {"thoughtSignature", "thought_signature"}):
            continue
        if isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif isinstance(part.get("functionCall"), dict):
            call = part["functionCall"]
            call_id = str(call.get("id") or new_id("call_"))
            pending.append((call_id, str(call.get("name"))))
            calls.append({"id": call_id, "type": "function",
                          "function": {"name": call.get("name"), "arguments": orjson.dumps(call.get("args") or {}).decode()}})
        elif isinstance(part.get("functionResponse"), dict):
            _flush(role, parts, calls, messages)
            parts, calls = [], []
            messages.append(_tool_message(part["functionResponse"], at, pending))
        elif isinstance(part.get("inlineData") or part.get("inline_data"), dict):
            parts.append(_inline(part.get("inlineData") or part["inline_data"]))
        elif isinstance(part.get("fileData") or part.get("file_data"), dict):
            blob = part.get("fileData") or part["file_data"]
            parts.append({"type": "image_url", "image_url": {"url": str(blob.get("fileUri") or blob.get("file_uri") or "")}})
        else:
            kinds = ", ".join(sorted(k for k in part if k not in ("thoughtSignature", "thought_signature")))[:80]
            raise _bad(f"'{at}' ({kinds}) cannot go through this relay.", at)
    _flush(role, parts, calls, messages)


def _flush(role: str, parts: list[dict[str, Any]], calls: list[dict[str, Any]], messages: list[dict[str, Any]]) -> None:
    if role == "assistant" and (parts or calls):
        message: dict[str, Any] = {"role": "assistant", "content": plain_text(parts) or None}
        if calls:
            message["tool_calls"] = calls
        messages.append(message)
    elif parts:
        only_text = all(p["type"] == "text" for p in parts)
        messages.append({"role": role, "content": plain_text(parts) if only_text else parts})


def _tool_message(answer: dict[str, Any], where: str, pending: list[tuple[str, str]]) -> dict[str, Any]:
    name, given = str(answer.get("name")), answer.get("id")
    match = next((p for p in pending if p[0] == given), None) or next((p for p in pending if p[1] == name), None)
    if match is None:
        raise _bad(f"'{where}.functionResponse' answers no earlier functionCall named {name[:60]!r}.", f"{where}.functionResponse")
    pending.remove(match)
    response = answer.get("response")
    text = response if isinstance(response, str) else orjson.dumps(response if response is not None else {}).decode()
    return {"role": "tool", "tool_call_id": match[0], "content": text}


def _inline(blob: dict[str, Any]) -> dict[str, Any]:
    mime = str(blob.get("mimeType") or blob.get("mime_type") or "application/octet-stream")
    data = str(blob.get("data") or "")
    if mime.startswith("image/"):
        return {"type": "image_url", "image_url": {"url": data_url(mime, data)}}
    if mime.startswith("audio/"):
        return {"type": "input_audio", "input_audio": {"data": data, "format": mime.partition("/")[2] or "wav"}}
    return {"type": "file", "file": {"file_data": data_url(mime, data)}}


def _generation(config: dict[str, Any], out: dict[str, Any]) -> None:
    for name, target in _CONFIG.items():
        if config.get(name) is not None:
            out[target] = config[name]
    stop = config.get("stopSequences")
    if stop:
        out["stop"] = stop
    if config.get("responseMimeType") == "application/json":
        schema = config.get("responseJsonSchema") or config.get("responseSchema")
        if isinstance(schema, dict):
            out["response_format"] = {"type": "json_schema", "json_schema": {"name": "response", "schema": json_schema(schema)}}
        else:
            out["response_format"] = {"type": "json_object"}


def _tool(tool: dict[str, Any], i: int) -> list[dict[str, Any]]:
    declarations = tool.get("functionDeclarations") or tool.get("function_declarations")
    others = sorted(k for k in tool if k not in ("functionDeclarations", "function_declarations"))
    if others or not isinstance(declarations, list):
        raise InvalidRequest(f"Only function declarations can go through this relay; refused tools: {', '.join(others)[:80]}.",
                             param=f"tools[{i}]", code="unsupported_tool_type")
    out = []
    for d in declarations:
        if not isinstance(d, dict) or not isinstance(d.get("name"), str):
            raise _bad(f"'tools[{i}].functionDeclarations' must be objects with a 'name'.", f"tools[{i}]")
        function: dict[str, Any] = {"name": d["name"]}
        if d.get("description"):
            function["description"] = d["description"]
        schema = d.get("parametersJsonSchema") or d.get("parameters")
        function["parameters"] = json_schema(schema) if isinstance(schema, dict) else {"type": "object", "properties": {}}
        out.append({"type": "function", "function": function})
    return out


def json_schema(schema: Any) -> Any:
    """Gemini's schema dialect (``type: "OBJECT"``, ``nullable``) as JSON Schema (lower-case types)."""
    if isinstance(schema, list):
        return [json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "type" and isinstance(value, str):
            out[key] = value.lower()
        elif key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            out[key] = {k: json_schema(v) for k, v in value.items()}
        elif key in ("items", "anyOf", "oneOf", "allOf", "additionalProperties", "not"):
            out[key] = json_schema(value)
        elif key not in ("nullable", "propertyOrdering"):
            out[key] = value
    if schema.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def _choice(config: Any) -> Any:
    if not isinstance(config, dict):
        return None
    mode = _MODES.get(str(config.get("mode") or "AUTO").upper(), "auto")
    names = config.get("allowedFunctionNames")
    if mode == "required" and isinstance(names, list) and len(names) == 1:
        return {"type": "function", "function": {"name": names[0]}}
    return mode
