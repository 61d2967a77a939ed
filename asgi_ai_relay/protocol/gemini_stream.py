"""Gemini ``streamGenerateContent?alt=sse`` -> OpenAI chunk dicts (the hub), event by event
(:class:`GeminiDecoder`), and back (:class:`GeminiEncoder`, for Gemini-format callers).

Every Gemini event is a whole ``GenerateContentResponse`` holding the new text; function calls
arrive whole, so each becomes one tool-call delta carrying all its arguments. ``usageMetadata``
is cumulative: the last one counts.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from ..errors import UpstreamProtocolError
from ..types import Usage
from . import gemini_answer
from .gemini import finish_reason, tool_call, usage_from_metadata
from .hub import new_id, reasoning_text
from .openai import chunk
from .openai_stream import load_event, stream_failure
from .sse import SSEEvent, SSESplitter, encode_event

__all__ = ["GeminiDecoder", "GeminiEncoder"]


class GeminiDecoder:
    __slots__ = ("_id", "_model", "_started", "_tools", "created", "done", "splitter", "usage")

    def __init__(self) -> None:
        self.splitter = SSESplitter()
        self.usage: Usage | None = None
        self.created = int(time.time())
        self._id = ""
        self._model: Any = None
        self._started = False
        self._tools = 0
        self.done = False

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        return [c for e in self.splitter.feed(chunk) for c in self._event(e)]

    def close(self) -> list[dict[str, Any]]:
        return [c for e in self.splitter.flush() for c in self._event(e)]

    def read(self, sse: SSEEvent) -> list[dict[str, Any]]:
        """One event's chunks (its usage and finish read on the way).

        :raises UpstreamError: for an error event, or one that cannot be read.
        """
        return self._event(sse)

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return chunk(self._id, self.created, self._model, delta, finish)

    def _event(self, sse: SSEEvent) -> list[dict[str, Any]]:
        if not sse.data.strip():
            return []
        payload = load_event(sse)
        if not isinstance(payload, dict):
            raise UpstreamProtocolError("The provider sent a stream event that is not an object.")
        if "error" in payload:
            error = payload["error"]
            raise stream_failure(error, error.get("code") if isinstance(error, dict) else 502)
        self.usage = usage_from_metadata(payload.get("usageMetadata")) or self.usage
        out: list[dict[str, Any]] = []
        if not self._started:
            self._started = True
            self._id = "chatcmpl-" + str(payload.get("responseId") or "")
            self._model = payload.get("modelVersion")
            out.append(self._chunk({"role": "assistant", "content": ""}))
        candidate = (payload.get("candidates") or [{}])[0]
        for part in (candidate.get("content") or {}).get("parts") or ():
            if isinstance(part.get("text"), str) and part["text"] and not part.get("thought"):
                out.append(self._chunk({"content": part["text"]}))
            elif isinstance(part.get("functionCall"), dict):
                out.append(self._chunk({"tool_calls": [tool_call(part["functionCall"], self._tools)]}))
                self._tools += 1
        finish = finish_reason(candidate, self._tools > 0)
        if finish is not None:
            out.append(self._chunk({}, finish))
            self.done = True  # the last event carries the finish reason and the final usage
        return out


class GeminiEncoder:
    """OpenAI chunk dicts (the hub) -> Gemini's ``streamGenerateContent?alt=sse`` events.

    Each text delta is one event (reasoning text a ``thought`` part); a function call goes out whole (Gemini's way) once its
    arguments are complete, in the last event, which also carries ``finishReason`` and the
    ``usageMetadata``.
    """

    __slots__ = ("_calls", "finish_reason", "id", "model")

    def __init__(self) -> None:
        self.id = new_id("")
        self.model: Any = None
        self._calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None

    def _event(self, parts: list[dict[str, Any]], finish: str | None = None, usage: Usage | None = None) -> bytes:
        return encode_event(orjson.dumps(gemini_answer.response(self.id, self.model, gemini_answer.candidate(parts, finish), usage)))

    def encode(self, chunk: dict[str, Any]) -> bytes:
        self.model = chunk.get("model") or self.model
        out = b""
        for choice in chunk.get("choices") or ():
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
            delta = choice.get("delta") or {}
            thought = reasoning_text(delta)
            if thought:
                out += self._event([{"text": thought, "thought": True}])
            text = delta.get("content") or delta.get("refusal")
            if text:
                out += self._event([{"text": text}])
            for call in delta.get("tool_calls") or ():
                whole = self._calls.setdefault(call.get("index", 0), {"id": None, "function": {"name": None, "arguments": ""}})
                function = call.get("function") or {}
                whole["id"] = call.get("id") or whole["id"]
                whole["function"]["name"] = function.get("name") or whole["function"]["name"]
                whole["function"]["arguments"] += function.get("arguments") or ""
        return out

    def finish(self, usage: Usage | None) -> bytes:
        parts = [gemini_answer.function_part(self._calls[i]) for i in sorted(self._calls)] or [{"text": ""}]
        return self._event(parts, self.finish_reason or "stop", usage)
