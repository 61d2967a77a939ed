"""Bedrock ``ConverseStream`` (AWS event stream framing) -> OpenAI chunk dicts (the hub).

Events, by ``:event-type``: ``messageStart`` (the role), ``contentBlockStart`` (a tool use's
id and name), ``contentBlockDelta`` (text, or a piece of a tool use's input JSON),
``contentBlockStop``, ``messageStop`` (the stop reason) and ``metadata`` (usage, last: the
stream is complete once it arrived). A message of type ``exception`` (``throttlingException``,
``modelStreamErrorException``...) is the provider failing mid-stream.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from ..errors import UpstreamProtocolError, UpstreamStatusError
from ..types import Usage
from .bedrock import stop_reason, usage_from_converse
from .eventstream import EventMessage, EventStreamDecoder
from .hub import new_id
from .openai import chunk
from .openai_stream import stream_failure

__all__ = ["EXCEPTION_STATUS", "ConverseStreamDecoder"]

#: Bedrock's stream exceptions and the HTTP status each stands for.
EXCEPTION_STATUS = {
    "throttlingException": 429,
    "serviceUnavailableException": 503,
    "internalServerException": 500,
    "modelStreamErrorException": 502,
    "modelTimeoutException": 504,
    "validationException": 400,
    "accessDeniedException": 403,
}


class ConverseStreamDecoder:
    __slots__ = ("_blocks", "_finish", "_id", "_stopped", "created", "done", "frames", "usage")

    def __init__(self) -> None:
        self.frames = EventStreamDecoder()
        self.usage: Usage | None = None
        self.created = int(time.time())
        self.done = False
        self._id = new_id("chatcmpl-")
        #: contentBlockIndex -> tool call index, for tool use blocks
        self._blocks: dict[int, int] = {}
        self._finish: str | None = None
        self._stopped = False

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        return [c for message in self.frames.feed(data) for c in self._message(message)]

    def close(self) -> list[dict[str, Any]]:
        if self.frames.pending:
            raise UpstreamProtocolError("The provider's event stream ended inside a message.")
        return []

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return chunk(self._id, self.created, None, delta, finish)

    def _message(self, message: EventMessage) -> list[dict[str, Any]]:
        try:
            payload = orjson.loads(message.payload) if message.payload else {}
        except orjson.JSONDecodeError as exc:
            raise UpstreamProtocolError("The provider sent an event that is not valid JSON.") from exc
        if not isinstance(payload, dict):
            raise UpstreamProtocolError("The provider sent an event that is not an object.")
        if message.message_type != "event":
            raise self._failure(message, payload)
        kind = message.event_type
        if kind == "messageStart":
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "contentBlockStart":
            return self._start(payload)
        if kind == "contentBlockDelta":
            return self._delta(payload)
        if kind == "messageStop":
            self._stopped = True
            return [self._chunk({}, stop_reason(payload.get("stopReason"), bool(self._blocks)))]
        if kind == "metadata":
            self.usage = usage_from_converse(payload.get("usage")) or self.usage
            self.done = self._stopped
        return []

    def _start(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        use = (payload.get("start") or {}).get("toolUse")
        if not isinstance(use, dict):
            return []
        index = self._blocks[int(payload.get("contentBlockIndex") or 0)] = len(self._blocks)
        call = {"index": index, "id": use.get("toolUseId") or new_id("call_"), "type": "function",
                "function": {"name": use.get("name"), "arguments": ""}}
        return [self._chunk({"tool_calls": [call]})]

    def _delta(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        delta = payload.get("delta") or {}
        if isinstance(delta.get("text"), str):
            return [self._chunk({"content": delta["text"]})] if delta["text"] else []
        use = delta.get("toolUse")
        if isinstance(use, dict):
            index = self._blocks.get(int(payload.get("contentBlockIndex") or 0))
            if index is None:
                raise UpstreamProtocolError("The provider sent tool input for a block that is not a tool use.")
            return [self._chunk({"tool_calls": [{"index": index, "function": {"arguments": str(use.get("input") or "")}}]})]
        return []  # reasoning content and block kinds the hub does not carry

    @staticmethod
    def _failure(message: EventMessage, payload: dict[str, Any]) -> UpstreamStatusError:
        kind = message.event_type or "exception"
        status = EXCEPTION_STATUS.get(kind, 502)
        text = payload.get("message") or payload.get("Message") or kind
        return stream_failure({"message": text, "type": kind}, status)
