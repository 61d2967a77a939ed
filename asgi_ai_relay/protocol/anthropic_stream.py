"""Anthropic Messages streams <-> OpenAI chunk dicts (the hub), event by event as they arrive.

Anthropic's sequence is ``message_start``, ``ping``, then per content block
``content_block_start`` / ``content_block_delta`` (``text_delta``, ``input_json_delta``) /
``content_block_stop``, then ``message_delta`` (stop reason, usage) and ``message_stop``.
Thinking blocks and their deltas are dropped on the way to OpenAI; a call of the
structured-output tool (:data:`~.anthropic.OUTPUT_TOOL`) streams as the answer's text.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from ..types import Usage
from .anthropic import FINISH_TO_STOP, OUTPUT_TOOL, STOP_TO_FINISH, merge_usage, usage_from_body, usage_to_anthropic
from .hub import new_id
from .openai import chunk
from .openai_stream import load_event, stream_failure
from .sse import SSEEvent, SSESplitter, encode_event

__all__ = ["AnthropicDecoder", "AnthropicEncoder", "event"]

_ERROR_STATUS = {"overloaded_error": 529, "rate_limit_error": 429, "api_error": 500, "timeout_error": 504}


def event(name: str, payload: dict[str, Any]) -> bytes:
    return encode_event(orjson.dumps(payload), name)


class AnthropicDecoder:
    """Anthropic SSE -> OpenAI chunk dicts; usage from ``message_start`` and ``message_delta``."""

    __slots__ = ("_blocks", "_id", "_model", "_raw_usage", "_tools", "created", "done", "splitter")

    def __init__(self) -> None:
        self.splitter = SSESplitter()
        self.created = int(time.time())
        self._id = ""
        self._model: Any = None
        self._raw_usage: dict[str, Any] | None = None
        self._blocks: dict[int, int | None] = {}  # block index -> OpenAI tool index (None: text)
        self._tools = 0
        self.done = False

    @property
    def usage(self) -> Usage | None:
        return usage_from_body(self._raw_usage)

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        return [c for e in self.splitter.feed(chunk) for c in self.read(e)]

    def close(self) -> list[dict[str, Any]]:
        return [c for e in self.splitter.flush() for c in self.read(e)]

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return chunk(self._id, self.created, self._model, delta, finish)

    def read(self, sse: SSEEvent) -> list[dict[str, Any]]:
        if sse.event == "ping" or not sse.data.strip():
            return []
        data = load_event(sse)
        kind = data.get("type") if isinstance(data, dict) else None
        if kind == "message_start":
            message = data.get("message") or {}
            self._id = "chatcmpl-" + str(message.get("id") or new_id("")).removeprefix("msg_")
            self._model = message.get("model")
            self._raw_usage = dict(message.get("usage") or {})
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            return self._block_start(int(data.get("index", 0)), data.get("content_block") or {})
        if kind == "content_block_delta":
            return self._block_delta(int(data.get("index", 0)), data.get("delta") or {})
        if kind == "message_delta":
            self._raw_usage = merge_usage(self._raw_usage, data.get("usage"))
            stop = (data.get("delta") or {}).get("stop_reason")
            finish = STOP_TO_FINISH.get(stop or "", "stop")
            if finish == "tool_calls" and not self._tools:  # only the structured-output tool was called
                finish = "stop"
            return [self._chunk({}, finish)] if stop else []
        if kind == "message_stop":
            self.done = True
            return []
        if kind == "error":
            error = data.get("error")
            kind = error.get("type") if isinstance(error, dict) else None
            raise stream_failure(error or {}, _ERROR_STATUS.get(kind, 502) if isinstance(kind, str) else 502)
        return []

    def _block_start(self, index: int, block: dict[str, Any]) -> list[dict[str, Any]]:
        if block.get("type") == "text":
            self._blocks[index] = None
            return [self._chunk({"content": block["text"]})] if block.get("text") else []
        if block.get("type") != "tool_use":
            return []
        if block.get("name") == OUTPUT_TOOL:  # structured output: its input streams as the answer's text
            self._blocks[index] = None
            return []
        tool = self._blocks[index] = self._tools
        self._tools += 1
        head = {"index": tool, "id": block.get("id"), "type": "function", "function": {"name": block.get("name"), "arguments": ""}}
        return [self._chunk({"tool_calls": [head]})]

    def _block_delta(self, index: int, delta: dict[str, Any]) -> list[dict[str, Any]]:
        if index not in self._blocks:
            return []
        if delta.get("type") == "text_delta" and delta.get("text"):
            return [self._chunk({"content": delta["text"]})]
        if delta.get("type") == "input_json_delta" and delta.get("partial_json") and self._blocks[index] is None:
            return [self._chunk({"content": delta["partial_json"]})]
        if delta.get("type") == "input_json_delta" and delta.get("partial_json"):
            piece = {"index": self._blocks[index], "function": {"arguments": delta["partial_json"]}}
            return [self._chunk({"tool_calls": [piece]})]
        return []


class AnthropicEncoder:
    """OpenAI chunk dicts -> Anthropic's event sequence, each piece as soon as it arrives.

    OpenAI reports usage only at the end, so ``message_start`` carries zeros and the final
    ``message_delta`` the whole usage (the SDKs take its counts over ``message_start``'s).
    """

    __slots__ = ("_finish", "_next", "_open", "_started", "_tools")

    def __init__(self) -> None:
        self._started = False
        self._open: int | None = None  # the content block being written
        self._next = 0
        self._tools: dict[int, int] = {}  # OpenAI tool index -> block index
        self._finish: str | None = None

    def _start(self, chunk: dict[str, Any]) -> bytes:
        self._started = True
        message: dict[str, Any] = {
            "id": "msg_" + str(chunk.get("id") or new_id("")).removeprefix("chatcmpl-"),
            "type": "message", "role": "assistant", "model": chunk.get("model"), "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": usage_to_anthropic(None),
        }
        return event("message_start", {"type": "message_start", "message": message}) + event("ping", {"type": "ping"})

    def _open_block(self, block: dict[str, Any]) -> bytes:
        out = self._close_block()
        self._open = self._next
        self._next += 1
        return out + event("content_block_start", {"type": "content_block_start", "index": self._open, "content_block": block})

    def _close_block(self) -> bytes:
        if self._open is None:
            return b""
        index, self._open = self._open, None
        return event("content_block_stop", {"type": "content_block_stop", "index": index})

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})

    def encode(self, chunk: dict[str, Any]) -> bytes:
        out = b"" if self._started else self._start(chunk)
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if delta.get("content"):
                if self._open is None or self._open in self._tools.values():
                    out += self._open_block({"type": "text", "text": ""})
                out += self._delta(self._open, {"type": "text_delta", "text": delta["content"]})  # type: ignore[arg-type]
            for call in delta.get("tool_calls") or ():
                out += self._tool_delta(call)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return out

    def _tool_delta(self, call: dict[str, Any]) -> bytes:
        out = b""
        index = int(call.get("index", 0))
        function = call.get("function") or {}
        if index not in self._tools:
            block: dict[str, Any] = {"type": "tool_use", "id": call.get("id") or new_id("toolu_"), "name": function.get("name"), "input": {}}
            out += self._open_block(block)
            self._tools[index] = self._open  # type: ignore[assignment]
        if function.get("arguments"):
            out += self._delta(self._tools[index], {"type": "input_json_delta", "partial_json": function["arguments"]})
        return out

    def finish(self, usage: Usage | None) -> bytes:
        out = b"" if self._started else self._start({})
        out += self._close_block()
        delta = {"stop_reason": FINISH_TO_STOP.get(self._finish or "stop", "end_turn"), "stop_sequence": None}
        out += event("message_delta", {"type": "message_delta", "delta": delta, "usage": usage_to_anthropic(usage)})
        return out + event("message_stop", {"type": "message_stop"})
