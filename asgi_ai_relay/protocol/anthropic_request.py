"""Anthropic Messages requests <-> OpenAI Chat Completions requests (the hub).

Mapped both ways: ``system`` (string or text blocks) <-> system/developer messages; text and
image blocks (base64 and URL) <-> ``text`` / ``image_url`` parts; ``tool_use`` /
``tool_result`` <-> assistant ``tool_calls`` / ``tool`` messages (several per turn);
``tools`` <-> function tools; ``tool_choice`` (auto / any / tool / none and
``disable_parallel_tool_use``) <-> ``tool_choice`` and ``parallel_tool_calls``;
``stop_sequences`` <-> ``stop``; ``max_tokens``; ``temperature``; ``top_p``;
``metadata.user_id`` <-> ``user``. PDF ``file`` parts become ``document`` blocks.

Dropped deliberately, having no equivalent on the other side: ``thinking`` and thinking blocks,
``cache_control`` (OpenAI caches on its own), ``top_k``, ``service_tier``, tool options such as
``defer_loading``, ``is_error`` on tool results, OpenAI's ``seed``, penalties,
``reasoning_effort``, ``stream_options`` and parameters unknown to the relay. System turns in the
middle of an OpenAI conversation join Anthropic's top-level ``system``; in the middle of an
Anthropic conversation they stay where they are.

Structured output: ``response_format`` ``json_schema`` (an object schema) or ``json_object``
becomes one tool (:data:`~.anthropic.OUTPUT_TOOL`) whose input schema is the caller's schema,
forced with ``tool_choice``; the answer's call of it comes back as JSON text (see
:mod:`.anthropic_response` and :mod:`.anthropic_stream`).

Refused with a 400 naming the parameter and the provider: ``n`` > 1, ``logprobs``,
``response_format`` together with tools or with a schema whose root is not an object, audio
output, ``temperature`` > 1, non-function tools and content types the target cannot carry
(documents, server tool blocks, audio).
"""

from __future__ import annotations

from typing import Any

import orjson

from ..config import ModelConfig
from .anthropic import OUTPUT_TOOL
from .hub import parse_data_url, plain_text, refuse_single_choice_text, untranslatable

__all__ = ["from_openai", "to_openai"]

_FORMAT = "anthropic"


# ---- Anthropic -> OpenAI -----------------------------------------------------------


def to_openai(body: dict[str, Any], provider: str, fmt: str) -> dict[str, Any]:
    """An Anthropic request as an OpenAI one, to be sent to ``provider`` (in ``fmt`` format).

    :raises InvalidRequest: for content ``fmt`` cannot carry.
    """
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        messages.append({"role": "system", "content": _system_text(system)})
    for i, message in enumerate(body["messages"]):
        messages.extend(_message_to_openai(message, f"messages.{i}", provider, fmt))
    out: dict[str, Any] = {"model": body["model"], "messages": messages}
    for name in ("max_tokens", "temperature", "top_p", "stream"):
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("stop_sequences"):
        out["stop"] = body["stop_sequences"]
    user = (body.get("metadata") or {}).get("user_id")
    if isinstance(user, str):
        out["user"] = user
    if body.get("tools"):
        out["tools"] = [_tool_to_openai(t, i, provider, fmt) for i, t in enumerate(body["tools"])]
    _tool_choice_to_openai(body.get("tool_choice"), out)
    return out


def _system_text(system: Any) -> str:
    if isinstance(system, str):
        return system
    return "\n\n".join(b.get("text", "") for b in system if isinstance(b, dict) and b.get("type") == "text")


def _tool_to_openai(tool: dict[str, Any], i: int, provider: str, fmt: str) -> dict[str, Any]:
    if tool.get("type") not in (None, "custom"):
        raise untranslatable(f"tools.{i}.type", provider, fmt, f"server tool {tool.get('type')!r} has no equivalent")
    function: dict[str, Any] = {"name": tool["name"], "parameters": tool.get("input_schema") or {"type": "object"}}
    if tool.get("description"):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _tool_choice_to_openai(choice: Any, out: dict[str, Any]) -> None:
    if not isinstance(choice, dict):
        return
    kind = choice.get("type")
    if kind == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif kind in ("auto", "any", "none"):
        out["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[kind]
    if choice.get("disable_parallel_tool_use") and out.get("tools"):
        out["parallel_tool_calls"] = False


def _message_to_openai(message: dict[str, Any], where: str, provider: str, fmt: str) -> list[dict[str, Any]]:
    role, content = message["role"], message["content"]
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if role == "system":
        return [{"role": "system", "content": _system_text(content)}]
    if role == "assistant":
        return [_assistant_to_openai(content, where, provider, fmt)]
    tool_messages: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        kind = block["type"]
        if kind == "tool_result":
            text, images = _tool_result_to_openai(block, f"{where}.content.{j}", provider, fmt)
            tool_messages.append({"role": "tool", "tool_call_id": block.get("tool_use_id", ""), "content": text})
            parts.extend(images)
        else:
            parts.append(_part_to_openai(block, f"{where}.content.{j}", provider, fmt))
    return tool_messages + ([{"role": "user", "content": parts}] if parts else [])


def _assistant_to_openai(content: list[dict[str, Any]], where: str, provider: str, fmt: str) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        kind = block["type"]
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append({"id": block.get("id"), "type": "function", "function": {"name": block.get("name"), "arguments": arguments}})
        elif kind not in ("thinking", "redacted_thinking"):
            raise untranslatable(f"{where}.content.{j}.type", provider, fmt, f"{kind!r} blocks have no equivalent")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tool_result_to_openai(block: dict[str, Any], where: str, provider: str, fmt: str) -> tuple[str, list[dict[str, Any]]]:
    """The text of a tool result; its images go to the user turn that follows (OpenAI tool
    messages carry text only)."""
    content = block.get("content")
    if content is None or isinstance(content, str):
        return content or "", []
    texts, images = [], []
    for k, item in enumerate(content):
        part = _part_to_openai(item, f"{where}.content.{k}", provider, fmt)
        if part["type"] == "text":
            texts.append(part["text"])
        else:
            images.append(part)
    return "\n".join(texts), images


def _part_to_openai(block: dict[str, Any], where: str, provider: str, fmt: str) -> dict[str, Any]:
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "text": block.get("text", "")}
    if kind == "image":
        source = block.get("source") or {}
        if source.get("type") == "base64":
            url = f"data:{source.get('media_type')};base64,{source.get('data')}"
        elif source.get("type") == "url":
            url = source.get("url", "")
        else:
            raise untranslatable(f"{where}.source.type", provider, fmt, "only base64 and URL images translate")
        return {"type": "image_url", "image_url": {"url": url}}
    if kind == "document" and (block.get("source") or {}).get("type") == "base64":
        source = block["source"]
        file_data = f"data:{source.get('media_type')};base64,{source.get('data')}"
        return {"type": "file", "file": {"file_data": file_data, "filename": block.get("title") or "document.pdf"}}
    raise untranslatable(f"{where}.type", provider, fmt, f"{kind!r} content has no equivalent")


# ---- OpenAI -> Anthropic -----------------------------------------------------------


def from_openai(body: dict[str, Any], model: ModelConfig, stream: bool) -> dict[str, Any]:
    """An OpenAI request as the Anthropic body for ``model``.

    :raises InvalidRequest: for what Anthropic cannot express, naming the parameter.
    """
    provider = model.provider
    _refuse(body, provider)
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for i, message in enumerate(body["messages"]):
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(plain_text(message.get("content")))
            continue
        target, blocks = _message_from_openai(message, f"messages[{i}]", provider)
        if messages and messages[-1]["role"] == target:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": target, "content": blocks})
    limit = body.get("max_completion_tokens") or body.get("max_tokens") or model.default_max_tokens
    out: dict[str, Any] = {"model": model.upstream, "max_tokens": limit, "messages": messages}
    if system:
        out["system"] = "\n\n".join(system)
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else stop
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    if body.get("tools"):
        out["tools"] = [_tool_from_openai(t, i, provider) for i, t in enumerate(body["tools"])]
    _tool_choice_from_openai(body, out)
    _structured(body, out, provider)
    if stream:
        out["stream"] = True
    return out


def _refuse(body: dict[str, Any], provider: str) -> None:
    refuse_single_choice_text(body, provider, _FORMAT)
    if (body.get("temperature") or 0) > 1:
        raise untranslatable("temperature", provider, _FORMAT, "it accepts 0 to 1")


def _structured(body: dict[str, Any], out: dict[str, Any], provider: str) -> None:
    """``response_format`` as a forced call of :data:`OUTPUT_TOOL`, whose input is the answer."""
    spec = body.get("response_format") or {}
    kind = spec.get("type", "text")
    if kind == "text":
        return
    if kind not in ("json_object", "json_schema"):
        raise untranslatable("response_format", provider, _FORMAT, f"type {str(kind)[:40]!r} has no equivalent")
    if body.get("tools"):
        raise untranslatable("response_format", provider, _FORMAT, "structured output together with tools")
    schema = (spec.get("json_schema") or {}).get("schema") or {"type": "object"}
    if not isinstance(schema, dict) or schema.get("type", "object") != "object":
        raise untranslatable("response_format", provider, _FORMAT, "the schema's root must be an object")
    out["tools"] = [{"name": OUTPUT_TOOL, "description": "Give the answer: its input is the whole answer.", "input_schema": schema}]
    out["tool_choice"] = {"type": "tool", "name": OUTPUT_TOOL}


def _tool_from_openai(tool: dict[str, Any], i: int, provider: str) -> dict[str, Any]:
    function = tool.get("function")
    if tool.get("type", "function") != "function" or not isinstance(function, dict):
        raise untranslatable(f"tools[{i}]", provider, _FORMAT, "function tools only")
    out: dict[str, Any] = {"name": function.get("name"), "input_schema": function.get("parameters") or {"type": "object"}}
    if function.get("description"):
        out["description"] = function["description"]
    return out


def _tool_choice_from_openai(body: dict[str, Any], out: dict[str, Any]) -> None:
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        result: dict[str, Any] = {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    elif choice in ("auto", "none", "required"):
        result = {"type": {"auto": "auto", "none": "none", "required": "any"}[choice]}
    else:
        result = {"type": "auto"}
    if body.get("parallel_tool_calls") is False and result["type"] != "none" and out.get("tools"):
        result["disable_parallel_tool_use"] = True
    if choice is not None or "disable_parallel_tool_use" in result:
        out["tool_choice"] = result


def _message_from_openai(message: dict[str, Any], where: str, provider: str) -> tuple[str, list[dict[str, Any]]]:
    role = message.get("role")
    if role == "tool":
        result = {"type": "tool_result", "tool_use_id": message.get("tool_call_id"), "content": plain_text(message.get("content"))}
        return "user", [result]
    if role not in ("user", "assistant"):
        raise untranslatable(f"{where}.role", provider, _FORMAT, f"role {role!r} has no equivalent")
    content = message.get("content")
    blocks = _blocks_from_openai(content, where, provider)
    if role == "assistant":
        for k, call in enumerate(message.get("tool_calls") or ()):
            blocks.append(_tool_use_from_openai(call, f"{where}.tool_calls[{k}]", provider))
    return role, blocks


def _blocks_from_openai(content: Any, where: str, provider: str) -> list[dict[str, Any]]:
    if content is None or content == "":
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    blocks = []
    for j, part in enumerate(content):
        kind = part.get("type")
        if kind in ("text", "refusal"):
            text = part.get("text") or part.get("refusal") or ""
            if text:
                blocks.append({"type": "text", "text": text})
        elif kind == "image_url":
            blocks.append(_image_from_openai(part))
        elif kind == "file" and (parse_data_url((part.get("file") or {}).get("file_data", "")) or ("",))[0] == "application/pdf":
            _, data = parse_data_url(part["file"]["file_data"]) or ("", "")
            blocks.append({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": data}})
        else:
            raise untranslatable(f"{where}.content[{j}].type", provider, _FORMAT, f"{kind!r} content has no equivalent")
    return blocks


def _image_from_openai(part: dict[str, Any]) -> dict[str, Any]:
    url = (part.get("image_url") or {}).get("url", "")
    parsed = parse_data_url(url)
    if parsed is not None:
        return {"type": "image", "source": {"type": "base64", "media_type": parsed[0], "data": parsed[1]}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _tool_use_from_openai(call: dict[str, Any], where: str, provider: str) -> dict[str, Any]:
    function = call.get("function") or {}
    try:
        arguments = orjson.loads(function.get("arguments") or "{}")
    except orjson.JSONDecodeError:
        raise untranslatable(f"{where}.function.arguments", provider, _FORMAT, "arguments must be a JSON object") from None
    if not isinstance(arguments, dict):
        raise untranslatable(f"{where}.function.arguments", provider, _FORMAT, "arguments must be a JSON object")
    return {"type": "tool_use", "id": call.get("id"), "name": function.get("name"), "input": arguments}
