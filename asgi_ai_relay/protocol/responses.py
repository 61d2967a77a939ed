"""OpenAI Responses requests -> OpenAI Chat Completions (the hub).

Every provider is reached through the hub: a Responses body becomes a Chat Completions body,
which the existing translations take to OpenAI, Anthropic or Gemini.

Mapped: ``input`` as a string (one user message) or a list of items: ``message`` items
(``input_text`` / ``output_text`` / ``refusal`` -> text parts, ``input_image`` -> ``image_url``,
``input_file`` -> a ``file`` part), ``function_call`` items (consecutive ones become one
assistant turn with ``tool_calls``) and ``function_call_output`` items (tool messages);
``instructions`` -> a leading system message; function ``tools`` (flat shape) -> nested
function tools, the function tools of a ``namespace`` tool each as its own (calls of them come
back under their own names, without the namespace); ``tool_choice`` (flat shape) and ``parallel_tool_calls`` (when there are tools); ``max_output_tokens`` ->
``max_completion_tokens``; ``temperature``; ``top_p``; ``user``; ``reasoning.effort`` ->
``reasoning_effort``; ``text.format`` ``json_schema`` / ``json_object`` -> ``response_format``.

Dropped: ``reasoning`` input items (their content is the provider's own, unreadable by
another), ``metadata`` and ``store`` (the relay keeps the response, see
:mod:`asgi_ai_relay.stages.responses`), ``truncation``, ``include``, ``text.verbosity``,
``prompt_cache_key``, ``safety_identifier``, ``service_tier``.

Refused with a 400 naming them: built-in tool types (``web_search``, ``file_search``,
``computer_use_preview``, ``code_interpreter``, ``mcp``, ...) and a ``tool_choice`` that names
one (a provider that serves the Responses API itself takes them: see
:mod:`asgi_ai_relay.stages.responses_passthrough`), ``item_reference`` items, ``background:
true``, and ``conversation``.
"""

from __future__ import annotations

from typing import Any

from ..errors import InvalidRequest
from .openai import _check_number, _type_name, require_model

__all__ = ["function_tools", "refuse_hosted", "to_chat", "validate_responses_request"]

_NUMBERS: dict[str, tuple[tuple[type[int | float], ...], float | None, float | None]] = {
    "temperature": ((int, float), 0, 2),
    "top_p": ((int, float), 0, 1),
    "max_output_tokens": ((int,), 1, None),
}
_TYPED: dict[str, tuple[type, ...]] = {
    "stream": (bool,), "store": (bool,), "tools": (list,), "tool_choice": (str, dict), "user": (str,),
    "metadata": (dict,), "parallel_tool_calls": (bool,), "text": (dict,), "reasoning": (dict,),
    "instructions": (str,), "previous_response_id": (str,),
}
_ROLES = frozenset({"user", "assistant", "system", "developer"})
_TEXT_PARTS = frozenset({"input_text", "output_text", "text"})


def validate_responses_request(body: Any) -> None:
    """Check a Responses body well enough that nothing malformed goes upstream.

    :raises InvalidRequest: naming the parameter at fault.
    """
    require_model(body)
    given = body.get("input")
    if not isinstance(given, (str, list)):
        raise InvalidRequest("'input' is required and must be a string or an array of items.", param="input")
    if isinstance(given, list):
        for i, item in enumerate(given):
            if not isinstance(item, dict):
                raise InvalidRequest(f"'input[{i}]' must be an object, not {_type_name(item)}.", param=f"input[{i}]")
    for name, (types, low, high) in _NUMBERS.items():
        if body.get(name) is not None:
            _check_number(body[name], name, types, low, high)
    for name, types in _TYPED.items():
        if body.get(name) is not None and not isinstance(body[name], types):
            raise InvalidRequest(f"'{name}' has the wrong type ({_type_name(body[name])}).", param=name)
    if body.get("background"):
        raise InvalidRequest("'background' responses are not supported by this relay.", param="background")
    if body.get("conversation") is not None:
        raise InvalidRequest("'conversation' is not supported by this relay; use 'previous_response_id'.", param="conversation")
    tools = body.get("tools") or ()
    if not all(isinstance(t, dict) for t in tools):
        raise InvalidRequest("'tools' must be an array of objects.", param="tools")
    for i, tool in enumerate(function_tools(tools)):
        if tool.get("type") == "non-object":
            raise InvalidRequest("'tools' of a namespace must be objects.", param=f"tools[{i}]")
        if tool.get("type") == "function" and (not isinstance(tool.get("name"), str) or not tool["name"]):
            raise InvalidRequest(f"'tools[{i}].name' is required.", param=f"tools[{i}].name")


def refuse_hosted(body: dict[str, Any]) -> None:
    """Refuse what only a provider that serves the Responses API itself can run: built-in
    tools, and a ``tool_choice`` that names one (checked per provider: a native one takes them).

    :raises InvalidRequest: naming the tool types.
    """
    flat = function_tools(body.get("tools") or ())
    refused = sorted({str(t.get("type"))[:40] for t in flat if t.get("type") != "function"})
    if refused:
        raise InvalidRequest(
            f"Only function tools can go through this relay; refused tool types: {', '.join(refused)}.", param="tools",
            code="unsupported_tool_type",
        )
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") not in ("function", "allowed_tools"):
        raise InvalidRequest(f"'tool_choice' of type {str(choice.get('type'))[:40]!r} cannot go through this relay.", param="tool_choice")


def function_tools(tools: Any) -> list[dict[str, Any]]:
    """The tools with each ``namespace`` tool replaced by the tools it groups."""
    flat: list[dict[str, Any]] = []
    for tool in tools:
        if tool.get("type") == "namespace" and isinstance(tool.get("tools"), list):
            flat.extend(t if isinstance(t, dict) else {"type": "non-object"} for t in tool["tools"])
        else:
            flat.append(tool)
    return flat


def to_chat(body: dict[str, Any], provider: str = "", fmt: str = "") -> dict[str, Any]:
    """A validated Responses body as a Chat Completions body.

    :raises InvalidRequest: for an input item the hub cannot express, or a built-in tool.
    """
    refuse_hosted(body)
    messages: list[dict[str, Any]] = []
    if body.get("instructions"):
        messages.append({"role": "system", "content": body["instructions"]})
    given = body["input"]
    if isinstance(given, str):
        messages.append({"role": "user", "content": given})
    else:
        for i, item in enumerate(given):
            _item(item, f"input[{i}]", messages)
    if not messages:
        raise InvalidRequest("'input' must contain at least one message.", param="input")
    out: dict[str, Any] = {"model": body["model"], "messages": messages}
    for name in ("temperature", "top_p", "user", "stream"):
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("max_output_tokens") is not None:
        out["max_completion_tokens"] = body["max_output_tokens"]
    if body.get("stream"):
        out["stream_options"] = {"include_usage": True}
    effort = (body.get("reasoning") or {}).get("effort")
    if isinstance(effort, str):
        out["reasoning_effort"] = effort
    if body.get("tools"):  # OpenAI refuses tool settings without tools
        out["tools"] = [_tool(t) for t in function_tools(body["tools"])]
        _tool_choice(body.get("tool_choice"), out)
        if body.get("parallel_tool_calls") is not None:
            out["parallel_tool_calls"] = body["parallel_tool_calls"]
    fmt_spec = (body.get("text") or {}).get("format")
    if isinstance(fmt_spec, dict):
        _response_format(fmt_spec, out)
    return out


def _item(item: dict[str, Any], where: str, messages: list[dict[str, Any]]) -> None:
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        if not isinstance(role, str) or role not in _ROLES:
            raise InvalidRequest(f"'{where}.role' must be one of {', '.join(sorted(_ROLES))}.", param=f"{where}.role")
        content = item.get("content")
        if role == "assistant":
            messages.append({"role": "assistant", "content": _text_of(content, f"{where}.content")})
        else:
            messages.append({"role": role, "content": content if isinstance(content, str) else _parts(content, where)})
    elif kind == "function_call":
        for name in ("call_id", "name"):
            if not isinstance(item.get(name), str) or not item[name]:
                raise InvalidRequest(f"'{where}.{name}' is required.", param=f"{where}.{name}")
        arguments = item.get("arguments")
        if arguments is not None and not isinstance(arguments, str):
            raise InvalidRequest(f"'{where}.arguments' must be a string of JSON.", param=f"{where}.arguments")
        call = {"id": item["call_id"], "type": "function", "function": {"name": item["name"], "arguments": arguments or "{}"}}
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "assistant":
            last.setdefault("tool_calls", []).append(call)
            if not last.get("content"):
                last["content"] = None
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        if not isinstance(item.get("call_id"), str):
            raise InvalidRequest(f"'{where}.call_id' is required.", param=f"{where}.call_id")
        text = _text_of(item.get("output"), f"{where}.output")
        messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": text})
    elif kind == "reasoning":
        return
    else:
        raise InvalidRequest(f"'{where}.type' {str(kind)[:40]!r} cannot go through this relay.", param=f"{where}.type")


def _text_of(content: Any, where: str) -> str:
    """The text of a string, or of the text parts of a list.

    :raises InvalidRequest: for anything else.
    """
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if not isinstance(content, list):
        raise InvalidRequest(f"'{where}' must be a string or an array of parts.", param=where)
    return "".join(_part_text(p) for p in content)


def _part_text(part: Any) -> str:
    if isinstance(part, dict):
        text = part.get("text") or part.get("refusal")
        return text if isinstance(text, str) else ""
    return ""


def _parts(content: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        raise InvalidRequest(f"'{where}.content' must be a string or an array of parts.", param=f"{where}.content")
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in _TEXT_PARTS or kind == "refusal":
            parts.append({"type": "text", "text": _part_text(part)})
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str):
                raise InvalidRequest(f"'{where}.content[{j}]': only images given by 'image_url' can go through this relay.",
                                     param=f"{where}.content[{j}].image_url")
            image: dict[str, Any] = {"url": url}
            if part.get("detail"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        elif kind == "input_file":
            file = {k: part[k] for k in ("file_data", "file_id", "filename") if part.get(k)}
            parts.append({"type": "file", "file": file})
        else:
            raise InvalidRequest(f"'{where}.content[{j}].type' {str(kind)[:40]!r} cannot go through this relay.",
                                 param=f"{where}.content[{j}].type")
    return parts


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if tool.get(k) is not None}
    return {"type": "function", "function": function}


def _tool_choice(choice: Any, out: dict[str, Any]) -> None:
    if isinstance(choice, str):
        out["tool_choice"] = choice
    elif isinstance(choice, dict) and choice.get("type") == "function":
        out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif isinstance(choice, dict):  # allowed_tools: the mode, over the tools given
        out["tool_choice"] = choice.get("mode") or "auto"


def _response_format(spec: dict[str, Any], out: dict[str, Any]) -> None:
    kind = spec.get("type")
    if kind == "json_schema":
        schema = {k: spec[k] for k in ("name", "schema", "strict", "description") if spec.get(k) is not None}
        out["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif kind == "json_object":
        out["response_format"] = {"type": "json_object"}
