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
    """Token counts as the provider reported them (``estimated`` when it did not).

    Every class is its own count, and the parts are inside the totals they belong to:
    ``cached_tokens`` (cache reads), ``cache_creation_tokens`` (cache writes, of which
    ``cache_write_1h_tokens`` at the one-hour TTL, the rest at five minutes), ``audio_input_tokens``
    and ``image_input_tokens`` are parts of ``prompt_tokens``; ``reasoning_tokens`` is part of
    ``completion_tokens`` (billed as output, reported apart). ``web_search_requests`` counts
    server-side tool calls priced per call; ``service_tier`` is the tier the provider says it
    served (``flex``, ``priority``, ``batch``...; ``None`` when it did not say).
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    estimated: bool = False
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    audio_input_tokens: int = 0
    image_input_tokens: int = 0
    web_search_requests: int = 0
    service_tier: str | None = None

    #: The largest token count taken from an upstream (a signed 32-bit integer).
    MAX: ClassVar[int] = 2**31 - 1

    @classmethod
    def reported(
        cls, prompt: object, completion: object, cached: object = 0, cache_creation: object = 0, *,
        write_1h: object = 0, reasoning: object = 0, audio: object = 0, image: object = 0,
        web_search: object = 0, service_tier: object = None,
    ) -> Usage:
        """The usage an upstream reported, from its numbers as they came (each through
        :meth:`count`): the one place such numbers become counts. Each part stays within its
        total: cached and cache-write tokens together never exceed the prompt, the one-hour
        writes never exceed the writes, audio and image input never exceed the prompt's
        uncached rest, reasoning never exceeds the completion."""
        top = cls.MAX
        if (type(prompt) is int and type(completion) is int and 0 <= prompt < top and 0 <= completion < top
                and not (cached or cache_creation or write_1h or reasoning or audio or image or web_search or service_tier)):
            return cls(prompt, completion)  # (two plain counts, every falsy part 0: the common case, in one test)
        count = cls.count
        prompt_tokens = prompt if type(prompt) is int and 0 <= prompt < top else count(prompt)
        completion_tokens = completion if type(completion) is int and 0 <= completion < top else count(completion)
        if not (cached or cache_creation or write_1h or reasoning or audio or image or web_search or service_tier):
            return cls(prompt_tokens, completion_tokens)  # (every falsy number counts 0)
        cached_tokens = min(cls.count(cached), prompt_tokens)
        written = min(cls.count(cache_creation), prompt_tokens - cached_tokens)
        rest = prompt_tokens - cached_tokens - written
        audio_tokens = min(cls.count(audio), rest)
        tier = service_tier if isinstance(service_tier, str) and 0 < len(service_tier) <= 32 else None
        return cls(
            prompt_tokens, completion_tokens, cached_tokens, written,
            cache_write_1h_tokens=min(cls.count(write_1h), written),
            reasoning_tokens=min(cls.count(reasoning), completion_tokens),
            audio_input_tokens=audio_tokens,
            image_input_tokens=min(cls.count(image), rest - audio_tokens),
            web_search_requests=cls.count(web_search),
            service_tier=tier.lower() if tier is not None and tier.isprintable() else None,
        )

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

    @property
    def cache_write_5m_tokens(self) -> int:
        """Cache writes at the five-minute TTL (every write the provider did not say was 1h)."""
        return max(0, self.cache_creation_tokens - self.cache_write_1h_tokens)
