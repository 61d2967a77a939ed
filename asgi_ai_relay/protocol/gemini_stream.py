"""Gemini ``streamGenerateContent?alt=sse`` -> OpenAI chunk dicts (the hub), event by event.

Every Gemini event is a whole ``GenerateContentResponse`` holding the new text; function calls
arrive whole, so each becomes one tool-call delta carrying all its arguments. ``usageMetadata``
is cumulative: the last one counts.
"""

from __future__ import annotations

import time
from typing import Any

from ..errors import UpstreamProtocolError
from ..types import Usage
from .gemini import finish_reason, tool_call, usage_from_metadata
from .openai import chunk
from .openai_stream import load_event, stream_failure
from .sse import SSEEvent, SSESplitter

__all__ = ["GeminiDecoder"]


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
