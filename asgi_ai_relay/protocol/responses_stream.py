"""OpenAI chunk dicts (the hub) -> the OpenAI Responses event stream.

Every event carries ``type`` and a ``sequence_number`` counted from 0. ``response.created``
and ``response.in_progress`` go out with the first content (so a provider that fails before
any content is still a failed attempt the route may retry). Text opens a ``message`` item
(``response.output_item.added``, ``response.content_part.added``, then
``response.output_text.delta`` per chunk); each tool call index opens a ``function_call`` item
(``response.function_call_arguments.delta`` per chunk; interleaved indices each go to their
own item); reasoning text (``reasoning_content`` deltas) opens a ``reasoning`` item
(``response.reasoning_summary_part.added``, then ``response.reasoning_summary_text.delta`` per
chunk). At the end every open item is closed in output order (``...text.done``,
``content_part.done``, ``...arguments.done``, ``output_item.done``), then
``response.completed`` (``response.incomplete`` for a length cut) carries the whole response
and its usage.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from ..types import Usage
from .hub import new_id, reasoning_text
from .responses_output import call_item, message_item, reasoning_item, response_object, usage_to_responses
from .sse import encode_event

__all__ = ["ResponsesEncoder"]


class _Item:
    __slots__ = ("call_id", "id", "index", "kind", "name", "parts")

    def __init__(self, kind: str, index: int, call_id: Any = None, name: Any = None) -> None:
        self.kind, self.index, self.call_id, self.name = kind, index, call_id, name
        self.id = new_id({"message": "msg_", "reasoning": "rs_"}.get(kind, "fc_"))
        self.parts: list[str] = []

    def whole(self, status: str) -> dict[str, Any]:
        if self.kind == "message":
            return message_item(self.id, "".join(self.parts), status)
        if self.kind == "reasoning":
            return reasoning_item(self.id, "".join(self.parts), status)
        return call_item(self.id, self.call_id, self.name, "".join(self.parts), status)


class ResponsesEncoder:
    __slots__ = ("created", "events", "finish_reason", "id", "items", "message", "model", "reasoning", "started", "tools")

    def __init__(self) -> None:
        self.id = new_id("resp_")
        self.created = int(time.time())
        self.model: Any = None
        self.events = 0
        self.started = False
        self.items: list[_Item] = []
        self.message: _Item | None = None
        self.reasoning: _Item | None = None
        self.tools: dict[int, _Item] = {}
        self.finish_reason: str | None = None

    def _event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self.events, **fields}
        self.events += 1
        return encode_event(orjson.dumps(payload), kind)

    def _response(self, status: str, usage: dict[str, Any] | None = None) -> dict[str, Any]:
        output = [item.whole("completed") for item in self.items] if status != "in_progress" else []
        return response_object(self.id, self.created, self.model, status, output, usage, self.finish_reason)

    def _start(self) -> bytes:
        if self.started:
            return b""
        self.started = True
        return (self._event("response.created", response=self._response("in_progress"))
                + self._event("response.in_progress", response=self._response("in_progress")))

    def _open(self, item: _Item) -> bytes:
        self.items.append(item)
        out = self._start() + self._event("response.output_item.added", output_index=item.index, item=item.whole("in_progress"))
        if item.kind == "message":
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            out += self._event("response.content_part.added", item_id=item.id, output_index=item.index, content_index=0, part=part)
        return out

    def encode(self, chunk: dict[str, Any]) -> bytes:
        self.model = chunk.get("model") or self.model
        out = b""
        for choice in chunk.get("choices") or ():
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
            delta = choice.get("delta") or {}
            thought = reasoning_text(delta)
            if thought:
                out += self._thought(thought)
            text = delta.get("content") or delta.get("refusal")
            if text:
                if self.message is None:
                    self.message = _Item("message", len(self.items))
                    out += self._open(self.message)
                self.message.parts.append(text)
                out += self._event("response.output_text.delta", item_id=self.message.id, output_index=self.message.index,
                                   content_index=0, delta=text, logprobs=[])
            for call in delta.get("tool_calls") or ():
                out += self._tool_delta(call)
        return out

    def _thought(self, text: str) -> bytes:
        item, out = self.reasoning, b""
        if item is None:
            item = self.reasoning = _Item("reasoning", len(self.items))
            out = self._open(item)
            out += self._event("response.reasoning_summary_part.added", item_id=item.id, output_index=item.index,
                               summary_index=0, part={"type": "summary_text", "text": ""})
        item.parts.append(text)
        return out + self._event("response.reasoning_summary_text.delta", item_id=item.id, output_index=item.index,
                                 summary_index=0, delta=text)

    def _tool_delta(self, call: dict[str, Any]) -> bytes:
        index = call.get("index", 0)
        function = call.get("function") or {}
        item = self.tools.get(index)
        out = b""
        if item is None:
            item = self.tools[index] = _Item("function_call", len(self.items), call.get("id"), function.get("name"))
            out += self._open(item)
        arguments = function.get("arguments")
        if arguments:
            item.parts.append(arguments)
            out += self._event("response.function_call_arguments.delta", item_id=item.id, output_index=item.index, delta=arguments)
        return out

    def finish(self, usage: Usage | None) -> bytes:
        out = self._start()
        for item in self.items:
            whole = item.whole("completed")
            if item.kind == "message":
                text = "".join(item.parts)
                out += self._event("response.output_text.done", item_id=item.id, output_index=item.index, content_index=0,
                                   text=text, logprobs=[])
                out += self._event("response.content_part.done", item_id=item.id, output_index=item.index, content_index=0,
                                   part=whole["content"][0])
            elif item.kind == "reasoning":
                text = "".join(item.parts)
                out += self._event("response.reasoning_summary_text.done", item_id=item.id, output_index=item.index,
                                   summary_index=0, text=text)
                out += self._event("response.reasoning_summary_part.done", item_id=item.id, output_index=item.index,
                                   summary_index=0, part={"type": "summary_text", "text": text})
            else:
                out += self._event("response.function_call_arguments.done", item_id=item.id, output_index=item.index,
                                   name=item.name, arguments="".join(item.parts))
            out += self._event("response.output_item.done", output_index=item.index, item=whole)
        response = self._response("completed", usage_to_responses(usage))
        kind = "response.completed" if response["status"] == "completed" else "response.incomplete"
        return out + self._event(kind, response=response)
