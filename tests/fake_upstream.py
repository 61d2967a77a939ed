"""A fake upstream LLM provider: a real HTTP server for end-to-end tests.

``FakeUpstream`` runs a raw ASGI app under uvicorn in a background thread (its
own event loop) on ``127.0.0.1`` and a free port.  It speaks the wire formats of
the three provider families the relay talks to:

* OpenAI Chat Completions: ``POST /v1/chat/completions`` (JSON or SSE with
  ``stream_options.include_usage``) and ``GET /v1/models``;
* OpenAI Responses: ``POST /v1/responses`` (JSON or its SSE event grammar; see
  :mod:`tests.fake_responses`);
* Anthropic Messages: ``POST /v1/messages`` (JSON or the exact SSE event
  sequence) and ``POST /v1/messages/count_tokens``;
* Gemini: ``POST /{v1,v1beta}/models/{model}:generateContent`` and
  ``:streamGenerateContent`` (``?alt=sse`` for SSE, otherwise a JSON array), ``:countTokens``;
* embeddings: OpenAI ``POST /v1/embeddings`` and Gemini ``:batchEmbedContents``
  (see :mod:`tests.fake_embeddings`).

Replies are deterministic so tests can compute what to expect: the text is
``"Echo: " + <text of the last user message>`` and the token counts come from
:func:`prompt_token_count` / :func:`completion_token_count` (or, all at once,
:func:`plan_reply`).  When the request offers tools, the last message is a user
turn and the tool choice is not "none", the reply is a call of the forced tool,
or else of the first one that takes arguments (the first of all when none does, so a
placeholder such as Claude Code's ``DeferredToolPlaceholder`` is not called), with
arguments built by :func:`fake_tool_arguments`.

Usage::

    from tests.fake_upstream import FakeUpstream, Fault

    with FakeUpstream(api_key="sk-test") as up:
        base = up.url                       # "http://127.0.0.1:PORT"
        up.script(Fault.status(429, retry_after=2), Fault.drop(after_chunks=2))
        ...                                 # drive the relay against `base`
        assert up.requests[0].headers["authorization"] == "Bearer sk-test"

In a conftest, either ``with FakeUpstream() as up: yield up`` inside a fixture,
or ``fake_upstream = fake_upstream_fixture()`` (see :func:`fake_upstream_fixture`).

Every request is recorded (thread-safely) as a :class:`RecordedRequest` before
any behaviour is applied, so even failed attempts are visible.  ``up.script()``
queues one :class:`Behaviour` per incoming request (FIFO; afterwards the server
behaves normally again); build them with the :class:`Fault` factories and
combine several with ``|``, e.g. ``Fault.reply("hi") | Fault.delay(0.2)``.
``up.stop()`` / ``up.start()`` close and reopen the same port (connection
refused, then recovery) and ``up.delay_all`` delays every response.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import logging
import re
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal
from urllib.parse import parse_qsl

import orjson
import uvicorn

from tests import fake_responses
from tests.fake_embeddings import gemini_embeddings, openai_embeddings

__all__ = [
    "DEFAULT_MODELS",
    "Behaviour",
    "FakeUpstream",
    "Fault",
    "RawReply",
    "RecordedRequest",
    "ReplyPlan",
    "ToolCall",
    "completion_token_count",
    "count_words",
    "echo_reply",
    "error_payload",
    "fake_tool_arguments",
    "fake_upstream_fixture",
    "last_user_text",
    "message_texts",
    "padded_completion",
    "plan_reply",
    "prompt_token_count",
]

Api = Literal["openai", "anthropic", "gemini"]
Json = Any
Message = dict[str, Any]
Send = Callable[[Message], Awaitable[None]]
Receive = Callable[[], Awaitable[Message]]

DEFAULT_MODELS: tuple[str, ...] = (
    "gpt-4o-mini",
    "gpt-4o",
    "claude-sonnet-4-5",
    "claude-haiku-4-5",
    "gemini-2.0-flash",
)
REPLY_PREFIX = "Echo: "
TOOL_ARGUMENT_PIECE = 8  # characters per streamed tool-argument delta
TOOL_ARG_INTEGER = 1


def _dumps(value: Json) -> bytes:
    return orjson.dumps(value)


def _new_id(prefix: str, length: int = 24) -> str:
    return prefix + uuid.uuid4().hex[:length]


# --------------------------------------------------------------------------
# Deterministic token counts and replies
# --------------------------------------------------------------------------


def count_words(text: str) -> int:
    """Number of whitespace-separated words in ``text``."""
    return len(text.split())


def completion_token_count(text: str) -> int:
    """Completion tokens the fake reports for a reply text: its word count."""
    return count_words(text)


def prompt_token_count(body: Mapping[str, Any], api: Api) -> int:
    """Prompt tokens the fake reports: words in every message + 3 per message.

    "Messages" are the request's messages / contents plus the system prompt
    (Anthropic ``system``, Gemini ``systemInstruction``) when one is given;
    words are counted over text parts (and Anthropic ``tool_result`` text).
    """
    texts = message_texts(body, api)
    return sum(count_words(t) for t in texts) + 3 * len(texts)


def message_texts(body: Mapping[str, Any], api: Api) -> list[str]:
    """The text of each prompt message, in order, as used for token counts."""
    if api == "openai":
        return [_openai_text(m) for m in _list(body.get("messages"))]
    if api == "anthropic":
        texts = [_anthropic_text(m.get("content"), True) for m in _list(body.get("messages"))]
        system = body.get("system")
        return ([_anthropic_text(system, True)] if system else []) + texts
    texts = [_gemini_text(c) for c in _list(body.get("contents"))]
    system = body.get("systemInstruction") or body.get("system_instruction")
    return ([_gemini_text(system)] if isinstance(system, dict) else []) + texts


def last_user_text(body: Mapping[str, Any], api: Api) -> str:
    """Plain text of the last user message that has any (tool results excluded)."""
    for message in reversed(_list(body.get("messages") or body.get("contents"))):
        if not isinstance(message, dict) or not _is_user(message, api):
            continue
        text = _plain_text(message, api)
        if text:
            return text
    return ""


def echo_reply(body: Mapping[str, Any], api: Api) -> str:
    """The reply text the fake sends by default: ``"Echo: " + last_user_text``."""
    return REPLY_PREFIX + last_user_text(body, api)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _is_user(message: Mapping[str, Any], api: Api) -> bool:
    return message.get("role", "user" if api == "gemini" else None) == "user"


def _plain_text(message: Mapping[str, Any], api: Api) -> str:
    if api == "openai":
        return _openai_text(message)
    if api == "anthropic":
        return _anthropic_text(message.get("content"), False)
    return _gemini_text(message)


def _openai_text(message: Any) -> str:
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return content
    parts = [p.get("text", "") for p in _list(content) if isinstance(p, dict) and p.get("type") == "text"]
    return " ".join(p for p in parts if isinstance(p, str))


def _anthropic_text(content: Any, with_tool_results: bool) -> str:
    if isinstance(content, str):
        return content
    texts: list[str] = []
    for block in _list(content):
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif with_tool_results and block.get("type") == "tool_result":
            texts.append(_anthropic_text(block.get("content"), False))
    return " ".join(t for t in texts if t)


def _gemini_text(content: Any) -> str:
    parts = _list(content.get("parts")) if isinstance(content, dict) else []
    texts = [p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return " ".join(texts)


# --------------------------------------------------------------------------
# Tool calls
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolCall:
    """A tool call the fake decided to make."""

    name: str
    arguments: dict[str, Any]

    @property
    def arguments_json(self) -> str:
        """Arguments as the compact JSON string OpenAI sends."""
        return _dumps(self.arguments).decode()


def fake_tool_arguments(schema: Any, text: str) -> dict[str, Any]:
    """Arguments for a JSON schema: each property gets a value of its type.

    strings -> ``text`` (the last user text), integer/number -> 1,
    boolean -> True, array -> [], object -> {}, anything else -> None.
    """
    props = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(props, dict):
        return {}
    return {name: _value_for(prop, text) for name, prop in props.items()}


def _value_for(prop: Any, text: str) -> Any:
    kind = prop.get("type") if isinstance(prop, dict) else None
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    kind = kind.lower() if isinstance(kind, str) else None
    defaults: dict[str | None, Any] = {
        "string": text,
        "integer": TOOL_ARG_INTEGER,
        "number": TOOL_ARG_INTEGER,
        "boolean": True,
        "array": [],
        "object": {},
    }
    return defaults.get(kind)


def _tool_specs(body: Mapping[str, Any], api: Api) -> list[tuple[str, Any]]:
    """(name, parameter schema) of each function tool in the request."""
    specs: list[tuple[str, Any]] = []
    for tool in _list(body.get("tools")):
        if not isinstance(tool, dict):
            continue
        if api == "openai" and isinstance(tool.get("function"), dict):
            specs.append((tool["function"].get("name", ""), tool["function"].get("parameters")))
        elif api == "anthropic" and isinstance(tool.get("name"), str):
            specs.append((tool["name"], tool.get("input_schema")))
        elif api == "gemini":
            decls = tool.get("functionDeclarations") or tool.get("function_declarations")
            for decl in _list(decls):
                schema = decl.get("parameters") or decl.get("parametersJsonSchema")
                specs.append((decl.get("name", ""), schema))
    return specs


def _forced_tool(body: Mapping[str, Any], api: Api) -> str | None:
    """"none" when tools are disabled, a tool name when one is forced, else None."""
    if api == "gemini":
        config = (body.get("toolConfig") or body.get("tool_config") or {}).get("functionCallingConfig") or {}
        if str(config.get("mode", "")).upper() == "NONE":
            return "none"
        allowed = _list(config.get("allowedFunctionNames"))
        return allowed[0] if allowed else None
    choice = body.get("tool_choice")
    if choice == "none" or (isinstance(choice, dict) and choice.get("type") == "none"):
        return "none"
    if isinstance(choice, dict) and api == "openai":
        return (choice.get("function") or {}).get("name")
    if isinstance(choice, dict) and choice.get("type") == "tool":
        return choice.get("name")
    return None


def _last_turn_is_user_text(body: Mapping[str, Any], api: Api) -> bool:
    """Whether the conversation ends in a user's text (system turns after it do not count:
    Claude Code puts one after the user's prompt)."""
    messages = _list(body.get("messages") or body.get("contents"))
    while messages and isinstance(messages[-1], dict) and messages[-1].get("role") in ("system", "developer"):
        messages = messages[:-1]
    if not messages or not isinstance(messages[-1], dict) or not _is_user(messages[-1], api):
        return False
    last = messages[-1]
    if api == "anthropic":
        return not any(isinstance(b, dict) and b.get("type") == "tool_result" for b in _list(last.get("content")))
    if api == "gemini":
        return not any(isinstance(p, dict) and ("functionResponse" in p) for p in _list(last.get("parts")))
    return True


def _choose_tool_call(body: Mapping[str, Any], api: Api) -> ToolCall | None:
    specs = _tool_specs(body, api)
    forced = _forced_tool(body, api)
    if not specs or forced == "none" or not _last_turn_is_user_text(body, api):
        return None
    takes_arguments = [(n, s) for n, s in specs if isinstance(s, dict) and s.get("properties")]
    name, schema = next(((n, s) for n, s in specs if n == forced), (takes_arguments or specs)[0])
    return ToolCall(name=name, arguments=fake_tool_arguments(schema, last_user_text(body, api)))


# --------------------------------------------------------------------------
# Reply planning
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplyPlan:
    """What the fake will answer to a request (shared by every wire format)."""

    text: str | None
    tool_call: ToolCall | None
    prompt_tokens: int
    completion_tokens: int
    truncated: bool = False
    #: Prompt tokens read from / written to the provider's prompt cache (part of prompt_tokens).
    cached_tokens: int = 0
    cache_creation_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def pieces(self) -> list[str]:
        """The text split the way it is streamed: one word (plus spacing) each."""
        return _split_words(self.text or "")


def _split_words(text: str) -> list[str]:
    return re.findall(r"\S+\s*|\s+", text)


def _max_output_tokens(body: Mapping[str, Any], api: Api) -> int | None:
    if api == "gemini":
        value = (body.get("generationConfig") or {}).get("maxOutputTokens")
    elif api == "openai":
        value = body.get("max_completion_tokens", body.get("max_tokens"))
    else:
        value = body.get("max_tokens")
    return value if isinstance(value, int) and value >= 0 else None


def plan_reply(body: Mapping[str, Any], api: Api, behaviour: Behaviour | None = None) -> ReplyPlan:
    """Decide the reply (text or tool call) and its usage for ``body``.

    A text reply longer than the request's max output tokens is cut to that
    many words (finish reason "length" / "max_tokens" / "MAX_TOKENS").  A tool
    call counts ``completion_token_count(name + " " + arguments_json)`` tokens.
    """
    behaviour = behaviour or Behaviour()
    prompt = prompt_token_count(body, api)
    tool = None if behaviour.reply_text is not None else _choose_tool_call(body, api)
    if tool is not None:
        text, truncated = None, False
        completion = completion_token_count(f"{tool.name} {tool.arguments_json}")
    else:
        text, truncated = _truncate(behaviour.reply_text or echo_reply(body, api), _max_output_tokens(body, api))
        completion = completion_token_count(text)
    return ReplyPlan(
        text=text,
        tool_call=tool,
        prompt_tokens=prompt if behaviour.prompt_tokens is None else behaviour.prompt_tokens,
        completion_tokens=completion if behaviour.completion_tokens is None else behaviour.completion_tokens,
        truncated=truncated,
        cached_tokens=behaviour.cached_tokens,
        cache_creation_tokens=behaviour.cache_creation_tokens,
    )


def _truncate(text: str, limit: int | None) -> tuple[str, bool]:
    if limit is None or count_words(text) <= limit:
        return text, False
    words = [p for p in _split_words(text) if p.strip()]
    return "".join(words[:limit]).rstrip(), True


# --------------------------------------------------------------------------
# Behaviours (fault injection)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class RawReply:
    """An answer sent exactly as given: ``body`` (with a length) or ``events`` (chunked, one
    write each, nothing added: no separators, no final newline)."""

    status: int = 200
    headers: tuple[tuple[str, str], ...] = (("content-type", "application/json"),)
    body: bytes = b""
    events: tuple[bytes, ...] | None = None


@dataclass(frozen=True)
class Behaviour:
    """How the fake answers one request; build with :class:`Fault`, merge with ``|``."""

    status: int | None = None
    retry_after: float | str | None = None
    retry_after_ms: int | None = None
    error_body: bytes | str | Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    stall_after: int | None = None
    stall_seconds: float = 0.0
    drop_after: int | None = None
    truncate_after: int | None = None
    stream_error_after: int | None = None
    stream_error_status: int = 529
    malformed: bool = False
    reply_text: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    raw: RawReply | None = None
    drip: float = 0.0
    usage_fields: tuple[tuple[str, Any], ...] = ()

    def __or__(self, other: Behaviour) -> Behaviour:
        """Combine: fields that ``other`` sets (non-default) override ``self``."""
        default = Behaviour()
        merged = {f.name: getattr(self, f.name) for f in fields(self)}
        for f in fields(other):
            value = getattr(other, f.name)
            if value != getattr(default, f.name):
                merged[f.name] = value
        merged["headers"] = {**self.headers, **other.headers}
        return Behaviour(**merged)


class Fault:
    """Factories for :class:`Behaviour` values to pass to ``FakeUpstream.script``."""

    @staticmethod
    def normal() -> Behaviour:
        """Answer normally (useful as a placeholder in a script)."""
        return Behaviour()

    @staticmethod
    def status(
        code: int,
        *,
        retry_after: float | str | None = None,
        retry_after_ms: int | None = None,
        body: bytes | str | Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Behaviour:
        """Answer ``code`` with the provider's error body (or ``body``).

        ``retry_after`` sets ``Retry-After``; ``retry_after_ms`` sets ``retry-after-ms``.
        """
        return Behaviour(
            status=code,
            retry_after=retry_after,
            retry_after_ms=retry_after_ms,
            error_body=body,
            headers=dict(headers or {}),
        )

    @staticmethod
    def delay(seconds: float) -> Behaviour:
        """Wait ``seconds`` before sending the response headers."""
        return Behaviour(delay=seconds)

    @staticmethod
    def stream_stall(after_chunks: int = 2, seconds: float = 5.0) -> Behaviour:
        """Send ``after_chunks`` events, go silent for ``seconds``, then finish.

        For a non-streamed reply the headers are sent and the body is held back.
        """
        return Behaviour(stall_after=after_chunks, stall_seconds=seconds)

    @staticmethod
    def drop(after_chunks: int = 2) -> Behaviour:
        """Close the connection abruptly after ``after_chunks`` events.

        For a non-streamed reply, after the headers and half of the body.
        """
        return Behaviour(drop_after=after_chunks)

    @staticmethod
    def truncate(after_chunks: int = 2) -> Behaviour:
        """End the stream cleanly after ``after_chunks`` events, without its terminal event."""
        return Behaviour(truncate_after=after_chunks)

    @staticmethod
    def stream_error(after_chunks: int = 2, status: int = 529) -> Behaviour:
        """Send ``after_chunks`` events, then the provider's in-stream error event.

        A non-streamed request gets a plain ``status`` error instead.
        """
        return Behaviour(stream_error_after=after_chunks, stream_error_status=status)

    @staticmethod
    def malformed() -> Behaviour:
        """Answer 200 with a body that is not valid JSON (or an invalid SSE event)."""
        return Behaviour(malformed=True)

    @staticmethod
    def reply(text: str) -> Behaviour:
        """Answer with ``text`` (never a tool call) instead of the echo."""
        return Behaviour(reply_text=text)

    @staticmethod
    def usage(prompt_tokens: int | None = None, completion_tokens: int | None = None) -> Behaviour:
        """Report these token counts instead of the computed ones."""
        return Behaviour(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)

    @staticmethod
    def cache(read: int = 0, written: int = 0) -> Behaviour:
        """Report ``read`` prompt tokens as cache hits and ``written`` as cache writes
        (both counted inside the prompt tokens, reported in each format's own fields)."""
        return Behaviour(cached_tokens=read, cache_creation_tokens=written)

    @staticmethod
    def raw(
        body: bytes = b"",
        *,
        events: Sequence[bytes] | None = None,
        status: int = 200,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Behaviour:
        """Answer exactly ``body`` (or the stream ``events``, each written as given) with
        ``status``; ``content_type`` defaults to JSON for a body and SSE for events."""
        kind = content_type or ("text/event-stream" if events is not None else "application/json")
        fields = (("content-type", kind), *((k.lower(), v) for k, v in (headers or {}).items()))
        return Behaviour(raw=RawReply(status, fields, body, None if events is None else tuple(events)))

    @staticmethod
    def gzip_bomb(expanded: int) -> Behaviour:
        """A valid OpenAI completion of about ``expanded`` bytes, gzip-encoded into a few KiB."""
        return Fault.raw(_gzip_bomb(expanded), headers={"content-encoding": "gzip"})

    @staticmethod
    def drip(seconds: float) -> Behaviour:
        """Wait ``seconds`` before each stream event after the first (a slow, steady stream)."""
        return Behaviour(drip=seconds)

    @staticmethod
    def raw_usage(**fields: Any) -> Behaviour:
        """Set these fields, as given (strings, negatives, 1e30...), in every usage object of
        the answer (``usage``, ``usageMetadata``; in a stream, in every event that has one)."""
        return Behaviour(usage_fields=tuple(fields.items()))

    @staticmethod
    def headers(values: Mapping[str, str]) -> Behaviour:
        """Add (or override) response headers."""
        return Behaviour(headers={k.lower(): v for k, v in values.items()})


# --------------------------------------------------------------------------
# Recorded requests
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    json: Json
    query_string: str = ""
    api: Api | None = None
    #: The path exactly as sent, percent-encoding kept.
    raw_path: str = ""

    @property
    def stream(self) -> bool:
        """Whether the request asked for a streamed answer."""
        if self.path.endswith(":streamGenerateContent"):
            return True
        return isinstance(self.json, dict) and self.json.get("stream") is True


def _recorded_request(scope: Mapping[str, Any], body: bytes) -> RecordedRequest:
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    query_string = scope.get("query_string", b"").decode("latin-1")
    try:
        parsed: Json = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
    return RecordedRequest(
        method=scope["method"],
        path=scope["path"],
        query=dict(parse_qsl(query_string, keep_blank_values=True)),
        headers=headers,
        body=body,
        json=parsed,
        query_string=query_string,
        api=_api_for(scope["path"], headers),
        raw_path=(scope.get("raw_path") or scope["path"].encode()).decode("latin-1"),
    )


_GEMINI_PATH = re.compile(r"^/v1(?:beta|alpha)?/models/(?P<model>[^/:]+):(?P<method>[A-Za-z]+)$")


def _api_for(path: str, headers: Mapping[str, str]) -> Api:
    if _GEMINI_PATH.match(path) or path.startswith(("/v1beta/", "/v1alpha/")):
        return "gemini"
    if path.startswith("/v1/messages") or "anthropic-version" in headers:
        return "anthropic"
    return "openai"


# --------------------------------------------------------------------------
# Replies (status, headers, body or list of stream events)
# --------------------------------------------------------------------------


@dataclass
class _Reply:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    events: list[bytes] | None = None
    stream_error: bytes | None = None


_OPENAI_ERRORS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}
_ANTHROPIC_ERRORS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_GEMINI_STATUSES: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def error_payload(api: Api, status: int, message: str) -> dict[str, Any]:
    """The provider's JSON error body for ``status``."""
    if api == "anthropic":
        kind = _ANTHROPIC_ERRORS.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return {"type": "error", "error": {"type": kind, "message": message}, "request_id": _new_id("req_")}
    if api == "gemini":
        name = _GEMINI_STATUSES.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")
        return {"error": {"code": status, "message": message, "status": name}}
    kind, code = _OPENAI_ERRORS.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _json_reply(status: int, payload: Json) -> _Reply:
    return _Reply(status=status, headers={"content-type": "application/json"}, body=_dumps(payload))


def _error_reply(api: Api, status: int, message: str) -> _Reply:
    return _json_reply(status, error_payload(api, status, message))


def _fault_reply(api: Api, behaviour: Behaviour, status: int) -> _Reply:
    body = behaviour.error_body
    if body is None:
        reply = _error_reply(api, status, f"Injected fault: HTTP {status}")
    elif isinstance(body, bytes | str):
        reply = _Reply(status, {"content-type": "application/json"}, body.encode() if isinstance(body, str) else body)
    else:
        reply = _json_reply(status, dict(body))
    if behaviour.retry_after is not None:
        reply.headers["retry-after"] = _format_seconds(behaviour.retry_after)
    if behaviour.retry_after_ms is not None:
        reply.headers["retry-after-ms"] = str(behaviour.retry_after_ms)
    return reply


def _format_seconds(value: float | str) -> str:
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _sse(data: Json, event: str | None = None, sep: bytes = b"\n\n") -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + _dumps(data) + sep


def _stream_reply(events: list[bytes], content_type: str = "text/event-stream") -> _Reply:
    headers = {"content-type": content_type, "cache-control": "no-cache"}
    return _Reply(status=200, headers=headers, events=events)


def _stream_error_event(api: Api, status: int, sse: bool, separator: bytes) -> bytes:
    """The provider's in-stream error event (Gemini without SSE: a last array item)."""
    message = "Overloaded" if status == 529 else "Injected in-stream error"
    payload = error_payload(api, status, message)
    if api == "anthropic":
        return _sse(payload, "error")
    if api == "gemini" and not sse:
        return b",\r\n" + _dumps(payload) + b"]"
    return _sse(payload, sep=separator if api == "gemini" else b"\n\n")


def _patch_usage(reply: _Reply, fields: dict[str, Any]) -> None:
    """Set ``fields`` in every usage object of a rendered reply (see ``Fault.raw_usage``)."""
    if reply.events is None:
        payload = orjson.loads(reply.body)
        _patch_usage_in(payload, fields)
        reply.body = _dumps(payload)
        return
    patched = []
    for event in reply.events:
        head, marker, rest = event.partition(b"data: ")
        data = rest.rstrip(b"\r\n")
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            patched.append(event)
            continue
        _patch_usage_in(payload, fields)
        patched.append(head + marker + _dumps(payload) + rest[len(data):])
    reply.events = patched


def _patch_usage_in(value: Any, fields: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            if key in ("usage", "usageMetadata") and isinstance(inner, dict):
                inner.update(fields)
            else:
                _patch_usage_in(inner, fields)
    elif isinstance(value, list):
        for inner in value:
            _patch_usage_in(inner, fields)


def padded_completion(size: int, text: str = "padded") -> bytes:
    """A valid OpenAI completion of at least ``size`` bytes (the rest is spaces in a field)."""
    head = _dumps(_openai_completion(ReplyPlan(text, None, 1, 1), "gpt-4o-mini"))[:-1] + b',"padding":"'
    return head + b" " * max(0, size - len(head) - 2) + b'"}'


@functools.lru_cache(maxsize=4)
def _gzip_bomb(expanded: int) -> bytes:
    return gzip.compress(padded_completion(expanded), compresslevel=9)


# ---- OpenAI ---------------------------------------------------------------


def _openai_usage(plan: ReplyPlan) -> dict[str, Any]:
    return {
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": plan.completion_tokens,
        "total_tokens": plan.total_tokens,
        "prompt_tokens_details": {"cached_tokens": plan.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _openai_finish(plan: ReplyPlan) -> str:
    return "tool_calls" if plan.tool_call else ("length" if plan.truncated else "stop")


def _openai_completion(plan: ReplyPlan, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": plan.text, "refusal": None, "annotations": []}
    if plan.tool_call:
        message["tool_calls"] = [_openai_tool_call(plan.tool_call, plan.tool_call.arguments_json)]
    return {
        "id": _new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": _openai_finish(plan)}],
        "usage": _openai_usage(plan),
        "service_tier": "default",
        "system_fingerprint": "fp_fake",
    }


def _openai_tool_call(tool: ToolCall, arguments: str) -> dict[str, Any]:
    return {"id": _new_id("call_"), "type": "function", "function": {"name": tool.name, "arguments": arguments}}


def _openai_deltas(plan: ReplyPlan) -> list[dict[str, Any]]:
    """The ``delta`` of every chunk before the finishing one."""
    if plan.tool_call is None:
        return [{"role": "assistant", "content": "", "refusal": None}] + [{"content": p} for p in plan.pieces]
    args = plan.tool_call.arguments_json
    head = {"index": 0, **_openai_tool_call(plan.tool_call, "")}
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": None, "refusal": None, "tool_calls": [head]}]
    for start in range(0, len(args), TOOL_ARGUMENT_PIECE):
        piece = args[start : start + TOOL_ARGUMENT_PIECE]
        deltas.append({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
    return deltas


def _openai_stream(plan: ReplyPlan, model: str, include_usage: bool) -> _Reply:
    base: dict[str, Any] = {
        "id": _new_id("chatcmpl-"),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "service_tier": "default",
        "system_fingerprint": "fp_fake",
    }
    if include_usage:
        base["usage"] = None
    choices = [{"index": 0, "delta": d, "logprobs": None, "finish_reason": None} for d in _openai_deltas(plan)]
    choices.append({"index": 0, "delta": {}, "logprobs": None, "finish_reason": _openai_finish(plan)})
    chunks = [{**base, "choices": [choice]} for choice in choices]
    if include_usage:
        chunks.append({**base, "choices": [], "usage": _openai_usage(plan)})
    events = [_sse(chunk) for chunk in chunks] + [b"data: [DONE]\n\n"]
    return _stream_reply(events)


# ---- Anthropic ------------------------------------------------------------


def _anthropic_stop(plan: ReplyPlan) -> str:
    return "tool_use" if plan.tool_call else ("max_tokens" if plan.truncated else "end_turn")


def _anthropic_message(plan: ReplyPlan, model: str, streaming: bool = False) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if not streaming:
        content = [_anthropic_block(plan, full=True)]
    return {
        "id": _new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": None if streaming else _anthropic_stop(plan),
        "stop_sequence": None,
        "usage": {
            "input_tokens": plan.prompt_tokens - plan.cached_tokens - plan.cache_creation_tokens,
            "output_tokens": 1 if streaming else plan.completion_tokens,
            "cache_creation_input_tokens": plan.cache_creation_tokens,
            "cache_read_input_tokens": plan.cached_tokens,
        },
    }


def _anthropic_block(plan: ReplyPlan, full: bool) -> dict[str, Any]:
    if plan.tool_call is None:
        return {"type": "text", "text": plan.text if full else ""}
    tool = plan.tool_call
    return {"type": "tool_use", "id": _new_id("toolu_"), "name": tool.name, "input": tool.arguments if full else {}}


def _anthropic_deltas(plan: ReplyPlan) -> list[dict[str, Any]]:
    if plan.tool_call is None:
        return [{"type": "text_delta", "text": p} for p in plan.pieces]
    args = plan.tool_call.arguments_json
    pieces = [args[i : i + TOOL_ARGUMENT_PIECE] for i in range(0, len(args), TOOL_ARGUMENT_PIECE)]
    return [{"type": "input_json_delta", "partial_json": p} for p in pieces]


def _anthropic_stream(plan: ReplyPlan, model: str) -> _Reply:
    events = [
        _sse({"type": "message_start", "message": _anthropic_message(plan, model, streaming=True)}, "message_start"),
        _sse(
            {"type": "content_block_start", "index": 0, "content_block": _anthropic_block(plan, full=False)},
            "content_block_start",
        ),
        _sse({"type": "ping"}, "ping"),
    ]
    for delta in _anthropic_deltas(plan):
        events.append(_sse({"type": "content_block_delta", "index": 0, "delta": delta}, "content_block_delta"))
    events += [
        _sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        _sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": _anthropic_stop(plan), "stop_sequence": None},
                "usage": {"output_tokens": plan.completion_tokens},
            },
            "message_delta",
        ),
        _sse({"type": "message_stop"}, "message_stop"),
    ]
    return _stream_reply(events)


# ---- Gemini ---------------------------------------------------------------


def _gemini_usage(plan: ReplyPlan, completion: int | None = None) -> dict[str, Any]:
    done = plan.completion_tokens if completion is None else completion
    return {
        "promptTokenCount": plan.prompt_tokens,
        "candidatesTokenCount": done,
        "totalTokenCount": plan.prompt_tokens + done,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": plan.prompt_tokens}],
        **({"cachedContentTokenCount": plan.cached_tokens} if plan.cached_tokens else {}),
    }


def _gemini_response(
    parts: list[dict[str, Any]], model: str, finish: str | None, usage: dict[str, Any], response_id: str
) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": model, "responseId": response_id}


def _gemini_parts(plan: ReplyPlan) -> list[dict[str, Any]]:
    if plan.tool_call is not None:
        return [{"functionCall": {"name": plan.tool_call.name, "args": plan.tool_call.arguments}}]
    return [{"text": plan.text or ""}]


def _gemini_finish(plan: ReplyPlan) -> str:
    return "MAX_TOKENS" if plan.truncated else "STOP"


def _gemini_chunks(plan: ReplyPlan, model: str) -> list[dict[str, Any]]:
    response_id = _new_id("", 22)
    if plan.tool_call is not None or len(plan.pieces) <= 1:
        return [_gemini_response(_gemini_parts(plan), model, _gemini_finish(plan), _gemini_usage(plan), response_id)]
    chunks: list[dict[str, Any]] = []
    words_so_far = 0
    for index, piece in enumerate(plan.pieces):
        last = index == len(plan.pieces) - 1
        words_so_far += count_words(piece)
        usage = _gemini_usage(plan, None if last else min(words_so_far, plan.completion_tokens))
        finish = _gemini_finish(plan) if last else None
        chunks.append(_gemini_response([{"text": piece}], model, finish, usage, response_id))
    return chunks


def _gemini_stream(plan: ReplyPlan, model: str, sse: bool, separator: bytes) -> _Reply:
    chunks = _gemini_chunks(plan, model)
    if sse:
        return _stream_reply([_sse(c, sep=separator) for c in chunks])
    events = [(b"[" if i == 0 else b",\r\n") + _dumps(c) for i, c in enumerate(chunks)] + [b"]"]
    return _stream_reply(events, content_type="application/json")


# --------------------------------------------------------------------------
# Malformed bodies
# --------------------------------------------------------------------------

_MALFORMED_JSON = b'{"id": "broken", "choices": [{"message": {"content": "unterminated'


def _malformed_reply(api: Api, stream: bool, sse: bool) -> _Reply:
    if not stream or not sse:
        return _Reply(200, {"content-type": "application/json"}, _MALFORMED_JSON)
    if api == "anthropic":
        events = [b'event: message_start\ndata: {"type": "message_start", "message": {\n\n']
    else:
        events = [b"data: " + _MALFORMED_JSON + b"\n\n"]
    if api == "openai":
        events.append(b"data: [DONE]\n\n")
    return _stream_reply(events)


# --------------------------------------------------------------------------
# The ASGI application
# --------------------------------------------------------------------------


class _AbortConnection(Exception):
    """Raised inside the app to make uvicorn close the socket mid-response."""


class _QuietAbortFilter(logging.Filter):
    """Keeps uvicorn's error log free of the deliberate connection aborts."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, _AbortConnection)


_QUIET_ABORTS = _QuietAbortFilter()


@dataclass
class _Route:
    api: Api
    kind: Literal["chat", "models", "messages", "count_tokens", "generate", "embeddings", "responses"]
    model: str = ""
    stream: bool = False
    sse: bool = True


def _route(request: RecordedRequest) -> _Route | _Reply:
    api = request.api or "openai"
    method, path = request.method, request.path
    if path in ("/v1/chat/completions", "/v1/messages", "/v1/messages/count_tokens") and method != "POST":
        return _error_reply(api, 405, f"Method {method} not allowed for {path}")
    if path == "/v1/chat/completions":
        return _Route("openai", "chat", stream=request.stream)
    if path == "/v1/responses" and method == "POST":
        return _Route("openai", "responses", stream=request.stream)
    if path == "/v1/embeddings" and method == "POST":
        return _Route("openai", "embeddings")
    if path == "/v1/messages":
        return _Route("anthropic", "messages", stream=request.stream)
    if path == "/v1/messages/count_tokens":
        return _Route("anthropic", "count_tokens")
    if path == "/v1/models" and method == "GET":
        return _Route(api, "models")
    match = _GEMINI_PATH.match(path)
    if match and method == "POST" and match["method"] == "batchEmbedContents":
        return _Route("gemini", "embeddings", match["model"])
    if match and method == "POST" and match["method"] == "countTokens":
        return _Route("gemini", "count_tokens", match["model"])
    if match and method == "POST" and match["method"] in ("generateContent", "streamGenerateContent"):
        stream = match["method"] == "streamGenerateContent"
        return _Route("gemini", "generate", match["model"], stream, request.query.get("alt") == "sse")
    return _error_reply(api, 404, f"Unknown path {method} {path}")


class _App:
    """Raw ASGI app; all shared state lives in the owning :class:`FakeUpstream`."""

    def __init__(self, owner: FakeUpstream) -> None:
        self._owner = owner
        self.stopping: asyncio.Event | None = None

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = _recorded_request(scope, await _read_body(receive))
        seq = self._owner._record(request)
        behaviour = self._owner._next_behaviour()
        await self._pause(self._owner.delay_all + behaviour.delay)
        reply = self._owner._reply_for(request, behaviour)
        reply.headers["x-fake-upstream-request"] = str(seq)
        reply.headers.update(behaviour.headers)
        await self._send(send, reply, behaviour)

    async def _pause(self, seconds: float) -> None:
        """Sleep, but give up (and abort the connection) when the server stops."""
        if seconds <= 0:
            return
        assert self.stopping is not None
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
        except TimeoutError:
            return
        raise _AbortConnection("server stopping")

    async def _send(self, send: Send, reply: _Reply, behaviour: Behaviour) -> None:
        if reply.events is None:
            reply.headers["content-length"] = str(len(reply.body))
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items()]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        if reply.events is None:
            await self._send_body(send, reply.body, behaviour)
        else:
            await self._send_events(send, reply, behaviour)

    async def _send_body(self, send: Send, body: bytes, behaviour: Behaviour) -> None:
        if behaviour.stall_after is not None:
            await self._pause(behaviour.stall_seconds)
        if behaviour.drop_after is not None:
            await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
            raise _AbortConnection("dropped by script")
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _send_events(self, send: Send, reply: _Reply, behaviour: Behaviour) -> None:
        events = reply.events or []
        stall_at, drop_at, error_at = (
            None if at is None else min(at, len(events))
            for at in (behaviour.stall_after, behaviour.drop_after, behaviour.stream_error_after)
        )
        for index in range(len(events) + 1):
            if index and behaviour.drip:
                await self._pause(behaviour.drip)
            if index == stall_at:
                await self._pause(behaviour.stall_seconds)
            if index == drop_at:
                raise _AbortConnection("dropped by script")
            if index == error_at:
                await send({"type": "http.response.body", "body": reply.stream_error or b"", "more_body": True})
                break
            if index == behaviour.truncate_after:
                break
            if index < len(events):
                await send({"type": "http.response.body", "body": events[index], "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


class _Server(uvicorn.Server):
    """uvicorn server that signals readiness and owns a 'stopping' event."""

    def __init__(self, config: uvicorn.Config, app: _App) -> None:
        super().__init__(config)
        self.ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._fake_app = app

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self._fake_app.stopping = asyncio.Event()
        await super().startup(sockets=sockets)
        self.ready.set()

    def request_stop(self) -> None:
        self.should_exit = True
        loop, stopping = self.loop, self._fake_app.stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stopping.set)
            except RuntimeError:  # loop closed between the check and the call
                pass


def _bearer(headers: Mapping[str, str]) -> str | None:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token if scheme.lower() == "bearer" else None


def _listening_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


# --------------------------------------------------------------------------
# FakeUpstream
# --------------------------------------------------------------------------


class FakeUpstream:
    """A fake OpenAI / Anthropic / Gemini server on 127.0.0.1 (see module docs).

    ``api_key``: when set, requests must carry it (``Authorization: Bearer`` on
    OpenAI paths, ``x-api-key`` or ``Authorization: Bearer`` on Anthropic paths
    (the anthropic SDK sends the latter), ``x-goog-api-key`` or ``?key=`` on
    Gemini paths) or get 401 in the provider's error format.
    ``require_anthropic_version``: answer 400 when ``anthropic-version`` is missing.
    ``gemini_sse_separator``: event separator for Gemini SSE (Google sends CRLF).
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        models: Sequence[str] = DEFAULT_MODELS,
        host: str = "127.0.0.1",
        port: int = 0,
        require_anthropic_version: bool = False,
        gemini_sse_separator: bytes = b"\r\n\r\n",
        startup_timeout: float = 5.0,
        shutdown_timeout: float = 5.0,
        tls: Mapping[str, Any] | None = None,
    ) -> None:
        self.api_key = api_key
        #: uvicorn's ``ssl_*`` options (``ssl_certfile``, ``ssl_keyfile``, ``ssl_ca_certs``,
        #: ``ssl_cert_reqs``): serve HTTPS.
        self.tls = dict(tls or {})
        self.models = tuple(models)
        self.host = host
        self.require_anthropic_version = require_anthropic_version
        self.gemini_sse_separator = gemini_sse_separator
        self.startup_timeout = startup_timeout
        self.shutdown_timeout = shutdown_timeout
        self.delay_all: float = 0.0
        self._port = port
        self._lock = threading.Condition()
        self._requests: list[RecordedRequest] = []
        self._script: deque[Behaviour] = deque()
        self._app = _App(self)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ----------------------------------------------------

    def __enter__(self) -> FakeUpstream:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (``https`` with ``tls``; valid once started; kept across stop/start)."""
        return f"{'https' if self.tls else 'http'}://{self.host}:{self._port}"

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    @property
    def gemini_base_url(self) -> str:
        return self.url + "/v1beta"

    def start(self) -> None:
        """Listen (on the same port as before, if any) and wait until serving."""
        if self._server is not None:
            return
        sock = _listening_socket(self.host, self._port)
        self._port = sock.getsockname()[1]
        logging.getLogger("uvicorn.error").addFilter(_QUIET_ABORTS)
        config = uvicorn.Config(
            self._app,
            lifespan="off",
            log_config=None,
            access_log=False,
            loop="asyncio",
            timeout_graceful_shutdown=self.shutdown_timeout,
            **self.tls,
        )
        server = _Server(config, self._app)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=f"fake-upstream-{self._port}", daemon=True
        )
        self._server, self._thread = server, thread
        thread.start()
        if not server.ready.wait(self.startup_timeout):
            self.stop()
            raise RuntimeError(f"fake upstream did not start within {self.startup_timeout}s")

    def stop(self) -> None:
        """Stop serving and close the port (clients then get connection refused)."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.request_stop()
        thread.join(self.shutdown_timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(self.shutdown_timeout)
        self._server = self._thread = None

    # ---- recording and scripting ----------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def last_request(self) -> RecordedRequest:
        with self._lock:
            if not self._requests:
                raise LookupError("the fake upstream has received no request")
            return self._requests[-1]

    @property
    def pending(self) -> int:
        """Scripted behaviours not consumed yet."""
        with self._lock:
            return len(self._script)

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until at least ``count`` requests arrived; raise TimeoutError otherwise."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._requests) >= count, timeout):
                raise TimeoutError(f"expected {count} requests, got {len(self._requests)}")
            return list(self._requests)

    def script(self, *behaviours: Behaviour) -> None:
        """Queue behaviours; each incoming request consumes the next one."""
        with self._lock:
            self._script.extend(behaviours)

    def reset(self) -> None:
        """Forget recorded requests, the script and ``delay_all``."""
        with self._lock:
            self._requests.clear()
            self._script.clear()
            self.delay_all = 0.0

    def _record(self, request: RecordedRequest) -> int:
        with self._lock:
            self._requests.append(request)
            self._lock.notify_all()
            return len(self._requests) - 1

    def _next_behaviour(self) -> Behaviour:
        with self._lock:
            return self._script.popleft() if self._script else Behaviour()

    # ---- answering ------------------------------------------------------

    def _reply_for(self, request: RecordedRequest, behaviour: Behaviour) -> _Reply:
        route = _route(request)
        if isinstance(route, _Reply):
            return route
        if behaviour.raw is not None:
            raw = behaviour.raw
            events = None if raw.events is None else list(raw.events)
            return _Reply(raw.status, dict(raw.headers), raw.body, events)
        if behaviour.status is not None:
            return _fault_reply(route.api, behaviour, behaviour.status)
        if behaviour.stream_error_after is not None and not route.stream:
            return _fault_reply(route.api, behaviour, behaviour.stream_error_status)
        problem = self._auth_error(request, route.api) or self._invalid(request, route)
        if problem is not None:
            return problem
        if behaviour.malformed:
            return _malformed_reply(route.api, route.stream, route.sse)
        reply = self._render(request, route, behaviour)
        if behaviour.usage_fields:
            _patch_usage(reply, dict(behaviour.usage_fields))
        if behaviour.stream_error_after is not None:
            status = behaviour.stream_error_status
            reply.stream_error = (fake_responses.error_event(status) if route.kind == "responses"
                                  else _stream_error_event(route.api, status, route.sse, self.gemini_sse_separator))
        return reply

    def _auth_error(self, request: RecordedRequest, api: Api) -> _Reply | None:
        if self.api_key is None:
            return None
        headers = request.headers
        if api == "anthropic":  # the anthropic SDK sends its key as a Bearer token
            ok = self.api_key in (headers.get("x-api-key"), _bearer(headers))
        elif api == "gemini":
            ok = self.api_key in (headers.get("x-goog-api-key"), request.query.get("key"))
        else:
            ok = _bearer(headers) == self.api_key
        return None if ok else _error_reply(api, 401, "Incorrect API key provided.")

    def _invalid(self, request: RecordedRequest, route: _Route) -> _Reply | None:
        if route.kind == "models":
            return None
        body = request.json
        if not isinstance(body, dict):
            return _error_reply(route.api, 400, "We could not parse the JSON body of your request.")
        if route.kind == "embeddings":
            required = ("model", "input") if route.api == "openai" else ("requests",)
        elif route.kind == "responses":
            required = ("model", "input")
        elif route.api == "openai":
            required = ("model", "messages")
        elif route.api == "anthropic":
            required = ("model", "messages", "max_tokens") if route.kind == "messages" else ("model", "messages")
        else:
            required = ("contents",)
        missing = [name for name in required if name not in body]
        if missing:
            return _error_reply(route.api, 400, f"{missing[0]}: Field required")
        if route.api == "anthropic" and self.require_anthropic_version and "anthropic-version" not in request.headers:
            return _error_reply("anthropic", 400, "anthropic-version: header is required")
        return None

    def _render(self, request: RecordedRequest, route: _Route, behaviour: Behaviour) -> _Reply:
        if route.kind == "models":
            return _json_reply(200, self._models_payload(route.api))
        body: dict[str, Any] = request.json
        if route.kind == "count_tokens" and route.api == "gemini":
            return _json_reply(200, {"totalTokens": prompt_token_count(body, "gemini")})
        if route.kind == "count_tokens":
            return _json_reply(200, {"input_tokens": prompt_token_count(body, "anthropic")})
        if route.kind == "embeddings":
            return _json_reply(200, (openai_embeddings if route.api == "openai" else gemini_embeddings)(body))
        plan = plan_reply(fake_responses.chat_view(body) if route.kind == "responses" else body, route.api, behaviour)
        model = route.model or str(body.get("model"))
        reply = self._render_plan(plan, route, model, body)
        reply.headers["x-request-id" if route.api == "openai" else "request-id"] = _new_id("req_")
        return reply

    def _render_plan(self, plan: ReplyPlan, route: _Route, model: str, body: Mapping[str, Any]) -> _Reply:
        if route.kind == "responses":
            if route.stream:
                return _stream_reply(fake_responses.response_events(plan, dict(body), plan.pieces, TOOL_ARGUMENT_PIECE))
            return _json_reply(200, fake_responses.response_object(plan, dict(body)))
        if route.api == "openai":
            if route.stream:
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                return _openai_stream(plan, model, include_usage)
            return _json_reply(200, _openai_completion(plan, model))
        if route.api == "anthropic":
            return _anthropic_stream(plan, model) if route.stream else _json_reply(200, _anthropic_message(plan, model))
        if route.stream:
            return _gemini_stream(plan, model, route.sse, self.gemini_sse_separator)
        chunk = _gemini_response(_gemini_parts(plan), model, _gemini_finish(plan), _gemini_usage(plan), _new_id("", 22))
        return _json_reply(200, chunk)

    def _models_payload(self, api: Api) -> dict[str, Any]:
        if api == "anthropic":
            data = [
                {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"} for m in self.models
            ]
            first, last = (self.models[0], self.models[-1]) if self.models else (None, None)
            return {"data": data, "has_more": False, "first_id": first, "last_id": last}
        created = 1_700_000_000
        return {
            "object": "list",
            "data": [{"id": m, "object": "model", "created": created, "owned_by": "fake"} for m in self.models],
        }


def fake_upstream_fixture(
    name: str = "fake_upstream", scope: Literal["function", "module", "session"] = "function", **kwargs: Any
) -> Any:
    """A pytest fixture yielding a running :class:`FakeUpstream`.

    In a conftest: ``fake_upstream = fake_upstream_fixture()``; keyword
    arguments go to ``FakeUpstream``.  With a wider ``scope``, call
    ``reset()`` between tests (e.g. from an autouse fixture).
    """
    import pytest

    @pytest.fixture(name=name, scope=scope)
    def _fixture() -> Iterator[FakeUpstream]:
        with FakeUpstream(**kwargs) as upstream:
            yield upstream

    return _fixture
