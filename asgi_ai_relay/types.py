"""The framework-neutral request and response the core speaks, and the values stages pass on."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

__all__ = [
    "ASGIApp",
    "Caller",
    "Receive",
    "RelayRequest",
    "RelayResponse",
    "Scope",
    "Send",
    "Usage",
]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling, as the host's auth (or a relay API key) says.

    ``id`` is what limits, budgets and the ledger are keyed on. ``priority`` is one of
    ``critical``, ``high``, ``normal``, ``low``. ``admin`` callers may read everyone's usage.
    """

    id: str
    priority: str = "normal"
    admin: bool = False
    allow_priority_header: bool = False
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


ANONYMOUS = Caller(id="anonymous")


@dataclass(slots=True)
class RelayRequest:
    """An inbound HTTP request, already read whole.

    ``path`` is relative to the relay prefix (``/v1/chat/completions``). ``headers`` has
    lower-cased names. ``host_user`` is whatever the host's auth put on its request (a Django
    user, ``scope["user"]``...), for the caller hook to read. ``host_caller`` is a caller a
    synchronous adapter already resolved in the host's own context (Flask's request context, a
    Django request thread): a :class:`Caller`, or a ``RelayError`` to refuse the request with.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""
    query: str = ""
    client: str | None = None
    host_user: Any = None
    host_request: Any = None
    host_caller: Any = None
    #: Set by adapters that can tell: returns once the client has gone away (ASGI: the server's
    #: ``http.disconnect``; WSGI: the client's socket, :class:`~asgi_ai_relay.wsgi.ClientSocket`).
    #: Stages that wait (the queue) race it, so a departed client stops waiting at once.
    #: ``None``: the host cannot tell.
    disconnected: Callable[[], Awaitable[None]] | None = None


@dataclass(slots=True)
class RelayResponse:
    """A complete body, or an async iterator of body chunks (SSE) when ``stream`` is set."""

    status: int
    headers: dict[str, str]
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None
    #: Set when the adapter asked to record after sending (see :meth:`Relay.handle`).
    sent: Callable[[], None] | None = None

    def header_list(self) -> list[tuple[bytes, bytes]]:
        return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]


@dataclass(slots=True)
class Usage:
    """Token counts as the provider reported them (``estimated`` when it did not)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    estimated: bool = False

    #: The largest token count taken from an upstream (a signed 32-bit integer).
    MAX: ClassVar[int] = 2**31 - 1

    @classmethod
    def reported(cls, prompt: object, completion: object, cached: object = 0, cache_creation: object = 0) -> Usage:
        """The usage an upstream reported, from its numbers as they came (each through
        :meth:`count`): the one place such numbers become counts. Cached and cache-write tokens
        are part of the prompt, so together they never exceed it."""
        count, top = cls.count, cls.MAX
        prompt_tokens = prompt if type(prompt) is int and 0 <= prompt < top else count(prompt)
        completion_tokens = completion if type(completion) is int and 0 <= completion < top else count(completion)
        if cached == 0 and cache_creation == 0 and type(cached) is int and type(cache_creation) is int:
            return cls(prompt_tokens, completion_tokens)
        cached_tokens = min(count(cached), prompt_tokens)
        written = min(count(cache_creation), prompt_tokens - cached_tokens)
        return cls(prompt_tokens, completion_tokens, cached_tokens, written)

    @classmethod
    def count(cls, value: object) -> int:
        """An upstream's token count made safe: a non-number, NaN or a negative number is 0, a
        count above :attr:`MAX` (``1e30``, infinity) is ``MAX``; a tuple is the sum of its
        parts, each made safe."""
        if isinstance(value, tuple):
            return min(cls.MAX, sum(cls.count(part) for part in value))
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value or value <= 0:
            return 0
        return cls.MAX if value >= cls.MAX else int(value)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens
