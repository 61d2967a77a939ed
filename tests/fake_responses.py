"""The fake upstream's OpenAI Responses API: ``POST /v1/responses``, whole and streamed.

The reply is planned as for Chat Completions (:func:`tests.fake_upstream.plan_reply` over
:func:`chat_view` of the body): the same echo text, the same tool call, the same token counts,
so a test computes what to expect the same way. A streamed answer is OpenAI's event grammar
with ``sequence_number``: ``response.created`` ... ``response.completed`` (or
``response.incomplete`` when cut by ``max_output_tokens``) carrying the usage.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

__all__ = ["chat_view", "error_event", "response_events", "response_object"]


def _id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def _text(content: Any) -> Any:
    if isinstance(content, str):
        return content
    parts = [p for p in content or () if isinstance(p, dict)]
    return [{"type": "text", "text": p.get("text", "")} for p in parts if p.get("type") in ("input_text", "output_text")]


def chat_view(body: dict[str, Any]) -> dict[str, Any]:
    """The Responses body as the Chat Completions body the reply is planned from."""
    messages: list[dict[str, Any]] = []
    if body.get("instructions"):
        messages.append({"role": "system", "content": body["instructions"]})
    given = body.get("input")
    items = [{"type": "message", "role": "user", "content": given}] if isinstance(given, str) else list(given or ())
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            messages.append({"role": item.get("role"), "content": _text(item.get("content"))})
        elif kind == "function_call":
            messages.append({"role": "assistant", "content": None, "tool_calls": [
                {"id": item.get("call_id"), "type": "function",
                 "function": {"name": item.get("name"), "arguments": item.get("arguments")}}]})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": item.get("output")})
    view: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    tools = [{"type": "function", "function": {"name": t.get("name"), "parameters": t.get("parameters")}}
             for t in body.get("tools") or () if t.get("type") == "function"]
    if tools:
        view["tools"] = tools
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function":
        view["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif choice is not None:
        view["tool_choice"] = choice
    if isinstance(body.get("max_output_tokens"), int):
        view["max_completion_tokens"] = body["max_output_tokens"]
    return view


def _usage(plan: Any) -> dict[str, Any]:
    return {
        "input_tokens": plan.prompt_tokens,
        "input_tokens_details": {"cached_tokens": plan.cached_tokens},
        "output_tokens": plan.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": plan.total_tokens,
    }


def _item(plan: Any, item_id: str, call_id: str, status: str) -> dict[str, Any]:
    if plan.tool_call is not None:
        return {"type": "function_call", "id": item_id, "call_id": call_id, "name": plan.tool_call.name,
                "arguments": plan.tool_call.arguments_json, "status": status}
    return {"type": "message", "id": item_id, "role": "assistant", "status": status,
            "content": [{"type": "output_text", "text": plan.text or "", "annotations": []}]}


def response_object(plan: Any, body: dict[str, Any], response_id: str | None = None, *, done: bool = True,
                    item_id: str | None = None, call_id: str | None = None) -> dict[str, Any]:
    """The whole ``response`` object of ``plan`` (``done=False``: as ``response.created`` shows it)."""
    status = ("incomplete" if plan.truncated else "completed") if done else "in_progress"
    output = [_item(plan, item_id or _id("msg_"), call_id or _id("call_"), "incomplete" if plan.truncated else "completed")]
    return {
        "id": response_id or _id("resp_"), "object": "response", "created_at": int(time.time()), "status": status,
        "model": body.get("model"), "output": output if done else [],
        "incomplete_details": {"reason": "max_output_tokens"} if done and plan.truncated else None,
        "usage": _usage(plan) if done else None, "error": None, "instructions": body.get("instructions"),
        "tools": body.get("tools") or [], "parallel_tool_calls": True, "tool_choice": body.get("tool_choice", "auto"),
        "metadata": body.get("metadata") or {}, "store": body.get("store", True), "text": {"format": {"type": "text"}},
        "temperature": body.get("temperature", 1.0), "top_p": 1.0, "truncation": "disabled",
        "max_output_tokens": body.get("max_output_tokens"), "previous_response_id": None, "reasoning": None,
    }


def _event(kind: str, number: int, **fields: Any) -> bytes:
    data = {"type": kind, "sequence_number": number, **fields}
    return f"event: {kind}\n".encode() + b"data: " + orjson.dumps(data) + b"\n\n"


def response_events(plan: Any, body: dict[str, Any], pieces: list[str], arg_piece: int) -> list[bytes]:
    """The SSE events of a streamed answer, one event per write."""
    response_id, item_id, call_id = _id("resp_"), _id("fc_" if plan.tool_call else "msg_"), _id("call_")
    opened = response_object(plan, body, response_id, done=False)
    final = response_object(plan, body, response_id, item_id=item_id, call_id=call_id)
    item = final["output"][0]
    empty = {**item, "status": "in_progress"}
    steps: list[tuple[str, dict[str, Any]]] = [("response.created", {"response": opened}),
                                               ("response.in_progress", {"response": opened})]
    if plan.tool_call is None:
        empty["content"] = []
        part = {"type": "output_text", "text": "", "annotations": []}
        at = {"item_id": item_id, "output_index": 0, "content_index": 0}
        steps += [("response.output_item.added", {"output_index": 0, "item": empty}),
                  ("response.content_part.added", {**at, "part": part})]
        steps += [("response.output_text.delta", {**at, "delta": p, "logprobs": []}) for p in pieces]
        steps += [("response.output_text.done", {**at, "text": plan.text or "", "logprobs": []}),
                  ("response.content_part.done", {**at, "part": item["content"][0]})]
    else:
        args = plan.tool_call.arguments_json
        empty["arguments"] = ""
        at = {"item_id": item_id, "output_index": 0}
        steps.append(("response.output_item.added", {"output_index": 0, "item": empty}))
        steps += [("response.function_call_arguments.delta", {**at, "delta": args[i:i + arg_piece]})
                  for i in range(0, len(args), arg_piece)]
        steps.append(("response.function_call_arguments.done", {**at, "arguments": args}))
    steps.append(("response.output_item.done", {"output_index": 0, "item": item}))
    steps.append(("response.incomplete" if plan.truncated else "response.completed", {"response": final}))
    return [_event(kind, n, **fields) for n, (kind, fields) in enumerate(steps)]


def error_event(status: int) -> bytes:
    """An ``error`` event in the middle of a stream."""
    return _event("error", 99, code="server_error", message=f"Injected in-stream error ({status})", param=None)
