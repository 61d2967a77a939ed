"""Content logging: what of a request's prompts and answers the relay writes, and where.

``logging.content`` decides (see :class:`~asgi_ai_relay.config.LoggingSettings`):

- ``none`` (the default): nothing of the content is written anywhere: not in the log line, the
  ledger, a span or a metric. Counts and sizes are not written either.
- ``metadata``: the request's log line and span also get the number of messages, the request
  and answer sizes in bytes, and the names of the tools offered (:func:`metadata`).
- ``full``: the prompt and the answer are also written to the configured sink (records on a
  logger of their own, or events on the request span), after :meth:`Redactor.redact` took out
  every upstream key of the process, common credential shapes and the configured patterns,
  and cut each to ``max_bytes``.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import orjson

from . import redact
from .answer_text import answer_text, streamed_text
from .config.observability import DEFAULT_REDACT

if TYPE_CHECKING:
    from .call import Call
    from .config.observability import LoggingSettings

__all__ = ["ContentLog", "Redactor", "metadata"]

#: The span event the ``span`` sink adds (the GenAI conventions' inference details event).
EVENT = "gen_ai.client.inference.operation.details"


class Redactor:
    """Takes credentials out of text: the upstream keys registered in :mod:`.redact`, the
    :data:`DEFAULT_REDACT` shapes and ``patterns``; then cuts it to ``max_bytes``."""

    __slots__ = ("max_bytes", "pattern")

    def __init__(self, patterns: tuple[str, ...], max_bytes: int) -> None:
        self.pattern = re.compile("|".join(f"(?:{p})" for p in (*DEFAULT_REDACT, *patterns)))
        self.max_bytes = max_bytes

    def redact(self, text: str) -> str:
        text = self.pattern.sub(redact.REDACTED, redact.scrub(text))
        raw = text.encode("utf-8", "replace")
        if len(raw) <= self.max_bytes:
            return text
        kept = raw[: self.max_bytes].decode("utf-8", "ignore")
        return f"{kept}...[truncated {len(raw) - self.max_bytes} bytes]"


def _messages(body: dict[str, Any]) -> list[Any]:
    for key in ("messages", "input", "contents"):
        value = body.get(key)
        if isinstance(value, list):
            return value
        if isinstance(value, str):
            return [value]
    return []


def _tool_names(body: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for tool in body.get("tools") or ():
        if not isinstance(tool, dict):
            continue
        function = tool.get("function")
        name = function.get("name") if isinstance(function, dict) else tool.get("name", tool.get("type"))
        if isinstance(name, str):
            names.append(_printable(name))
    return names


def _printable(value: str) -> str:
    text = value[:64]
    return text if text.isprintable() and "," not in text and " " not in text else text.encode("unicode_escape").decode("ascii").replace(",", "%2C").replace(" ", "%20")


def _response_bytes(call: Call) -> int:
    if call.sent is not None:
        return call.sent.total
    return sum(len(piece) for piece in call.output) if call.output is not None else 0


def metadata(call: Call) -> dict[str, Any]:
    """Counts and sizes of a request's content, and the tool names it offered (no content)."""
    body = call.body if isinstance(call.body, dict) else {}
    return {
        "relay.content.messages": len(_messages(body)),
        "relay.content.request_bytes": len(call.request.body),
        "relay.content.response_bytes": _response_bytes(call),
        "relay.content.tools": _tool_names(body),
    }


def prompt_of(call: Call) -> str:
    """The prompt as JSON: the system prompt and messages (or the Responses input) of the body."""
    body = call.body if isinstance(call.body, dict) else {}
    prompt = {key: body[key] for key in ("system", "instructions", "messages", "input", "contents") if key in body}
    return orjson.dumps(prompt).decode()


def completion_of(call: Call) -> str:
    """The answer's content text (what the model said, tool calls included)."""
    pieces = call.output if call.output is not None else (call.sent.pieces if call.sent is not None else [])
    if not pieces:
        return ""
    return streamed_text(pieces) if call.stream else answer_text(b"".join(pieces))


class ContentLog:
    """One relay's content logging (``[logging]``)."""

    __slots__ = ("logger", "mode", "redactor", "sink")

    def __init__(self, settings: LoggingSettings) -> None:
        self.mode = settings.content
        self.sink = settings.sink
        self.logger = logging.getLogger(settings.logger)
        self.redactor = Redactor(settings.redact, settings.max_bytes)

    @property
    def on(self) -> bool:
        return self.mode != "none"

    def suffix(self, call: Call) -> str:
        """What the request's log line adds: nothing unless ``metadata`` or ``full``."""
        if self.mode == "none":
            return ""
        meta = metadata(call)
        return (
            f" messages={meta['relay.content.messages']} request_bytes={meta['relay.content.request_bytes']}"
            f" response_bytes={meta['relay.content.response_bytes']} tools={','.join(meta['relay.content.tools'])}"
        )

    def write(self, call: Call, span: Any) -> None:
        """``full``: the redacted prompt and answer to the sink (``span`` for the span sink)."""
        if self.mode != "full":
            return
        prompt = self.redactor.redact(prompt_of(call))
        completion = self.redactor.redact(completion_of(call))
        if self.sink == "span":
            if span is not None:
                span.add_event(EVENT, {"gen_ai.input.messages": prompt, "gen_ai.output.messages": completion})
            return
        if self.logger.isEnabledFor(logging.INFO):
            extra = {"request_id": call.request_id}
            self.logger.info("request_id=%s prompt=%s", call.request_id, prompt, extra=extra)
            self.logger.info("request_id=%s completion=%s", call.request_id, completion, extra=extra)
