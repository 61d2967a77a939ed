"""Part of the translate stage: the Responses API to a provider that serves it itself.

OpenAI (and an ``openai_compatible`` or ``azure_openai`` provider with ``responses = true``)
answers ``POST /responses`` natively, so a Responses request goes up with only the model
rewritten, built-in tools included, and the answer comes back as it was sent. It is read only
for its usage (``input_tokens``, ``output_tokens``, ``input_tokens_details.cached_tokens``,
``output_tokens_details.reasoning_tokens``): from the whole answer, or from a stream's
``response.completed`` / ``response.incomplete`` event. A stream is complete only once one of
those (or ``response.failed``) came through; ``response.failed`` and ``error`` events reach the
caller (the upstream keys scrubbed out) and record the request as a provider failure, never
cached.

``previous_response_id`` is not sent up: the relay keeps the conversation itself (see
:mod:`asgi_ai_relay.stages.responses`) and sends the whole input, so a chain may move between
deployments, providers and formats and still hold.
"""

from __future__ import annotations

from typing import Any

import orjson

from .. import redact
from ..config import ModelConfig
from ..protocol.sse import SSEEvent
from ..types import Usage
from .passthrough import SplitStream, StreamTranslator, load, reading

__all__ = ["ResponsesPassThrough", "usage_from_responses"]

_FINAL = frozenset({"response.completed", "response.incomplete"})
_FAILED = frozenset({"response.failed", "error"})


def usage_from_responses(usage: Any, output: Any = None) -> Usage | None:
    """A Responses ``usage`` object as the relay's :class:`Usage` (``None`` when absent), with
    the ``web_search_call`` items of ``output`` counted as web searches (priced per call)."""
    if not isinstance(usage, dict):
        return None
    searches = sum(1 for item in output if isinstance(item, dict) and item.get("type") == "web_search_call") \
        if isinstance(output, list) else 0
    given = usage.get("input_tokens_details")
    cached = given.get("cached_tokens", 0) if isinstance(given, dict) else 0
    made = usage.get("output_tokens_details")
    reasoning = made.get("reasoning_tokens", 0) if isinstance(made, dict) else 0
    return Usage.reported(usage.get("input_tokens"), usage.get("output_tokens"), cached or 0,
                          reasoning=reasoning or 0, web_search=searches)


def _usage_of(response: Any) -> Usage | None:
    return usage_from_responses(response.get("usage"), response.get("output")) if isinstance(response, dict) else None


class _ResponsesStream(SplitStream):
    """Forwards Responses events as they complete, reading the usage from the final one."""

    __slots__ = ()

    def _feed(self, chunk: bytes) -> bytes:
        out = []
        for event in self.splitter.feed(chunk):
            kind = event.event or _type_of(event)
            if kind in _FINAL:
                self._usage = _usage_of(orjson.loads(event.data).get("response"))
                self._done = True
            elif kind in _FAILED:
                self.failed = self._done = True
                out.append(redact.scrub(event.raw.decode("utf-8", "replace")).encode())
                continue
            out.append(event.raw)
        return b"".join(out)

def _type_of(event: SSEEvent) -> str | None:
    """The event's ``type`` when the service sent no ``event:`` line."""
    try:
        payload = orjson.loads(event.data)
    except orjson.JSONDecodeError:
        return None
    kind = payload.get("type") if isinstance(payload, dict) else None
    return kind if isinstance(kind, str) else None


class ResponsesPassThrough:
    """Responses in, Responses out: only the model name changes on the way up."""

    forward_headers: tuple[str, ...] = ()

    def request(self, body: dict[str, Any], model: ModelConfig, stream: bool) -> dict[str, Any]:
        upstream = dict(body)
        upstream["model"] = model.upstream
        return upstream

    def response(self, raw: bytes) -> tuple[bytes, Usage | None]:
        with reading():
            return raw, _usage_of(load(raw))

    def stream(self, body: dict[str, Any]) -> StreamTranslator:
        return _ResponsesStream()
