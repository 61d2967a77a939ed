"""The state of one request as it moves through the stages."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from .types import ANONYMOUS, Caller, RelayRequest, Usage

if TYPE_CHECKING:
    from .config import ModelConfig
    from .errors import RelayError
    from .protocol import WireFormat

__all__ = ["Call", "Once", "Release", "Sent"]

logger = logging.getLogger("asgi_ai_relay")

#: Gives back one thing a request took; runs once, synchronously (async work it schedules).
Release = Callable[[], None]
R = TypeVar("R", bound=Release)


_NO_ARG: Any = object()


class Once:
    """A release that runs at most once, however many paths call it (early give-back, then the
    request's own exit): ``release()``, or ``release(arg)`` when an ``arg`` is given (one object
    where a ``partial`` would make two; a request holds several)."""

    __slots__ = ("_arg", "_release")

    def __init__(self, release: Callable[..., None], arg: Any = _NO_ARG) -> None:
        self._release: Callable[..., None] | None = release
        self._arg = arg

    @property
    def pending(self) -> bool:
        return self._release is not None

    def discard(self) -> None:
        """Forget the release: what it would give back was handed over some other way."""
        self._release = None

    def __call__(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            arg, self._arg = self._arg, None
            if arg is _NO_ARG:
                release()
            else:
                release(arg)


class Sent:
    """What a stream has given the caller: every byte counted, the first ``SAMPLE`` kept, so
    the tokens of a stream cut short can be estimated without keeping all of it."""

    __slots__ = ("pieces", "sampled", "total")

    SAMPLE = 262_144

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.sampled = 0
        self.total = 0

    def add(self, piece: bytes) -> None:
        self.total += len(piece)
        if self.sampled < self.SAMPLE:
            self.pieces.append(piece)
            self.sampled += len(piece)


class Call:
    """One request's state. Every field but the first four has a class-level default that an
    instance shadows once a stage sets it, so a new request sets only what it must own (its
    mutable parts): a request sets few of these, and walking all of them in ``__init__`` was
    most of the code a new request ran before its first stage."""

    request: RelayRequest
    request_id: str
    endpoint: str
    format: WireFormat
    started: float
    ts: float
    caller: Caller = ANONYMOUS
    body: dict[str, Any]
    stream: bool = False
    #: The alias the caller asked for, then the model that served (differs after a fallback).
    requested_model: str | None = None
    model: ModelConfig | None = None
    provider: str | None = None
    usage: Usage | None = None
    cost: Decimal = Decimal(0)
    #: What failed attempts cost that the provider billed (added to ``cost`` when priced).
    attempts_cost: Decimal = Decimal(0)
    #: The relay's own count of the prompt and the usage check's verdict (:mod:`.stages.usage_check`).
    counted_prompt: int | None = None
    usage_flag: str | None = None
    status: int = 200
    error: RelayError | None = None
    #: ``hit``, ``miss`` or ``bypass`` once the cache stage has run.
    cache: str | None = None
    #: What a cache hit would have cost upstream (USD).
    saved: Decimal = Decimal(0)
    #: USD held against the caller's budget until the answer's real cost is known.
    budget_hold: Decimal = Decimal(0)
    #: The single-flight this request leads (:class:`~.stages.flight.Flight`): identical
    #: requests wait on it; the cache's finishing step ends it.
    flight: asyncio.Future[bytes | None] | None = None
    #: The bytes the caller received (the body, or the stream's pieces); ``None`` when not kept.
    output: list[bytes] | None = None
    #: What a stream sent, counted and sampled (for the estimate of a stream cut short).
    sent: Sent | None = None
    attempts: int = 0
    #: Models to try after ``model`` when no fallbacks of its own apply (a virtual model's).
    candidates: list[ModelConfig] | None = None
    #: The conversation this request continues (a Responses chain's first id), for affinity.
    session: str | None = None
    #: One entry per upstream attempt (and per deployment skipped by its breaker).
    attempt_log: list[dict[str, Any]]
    upstream_ms: float | None = None
    ttfb_ms: float | None = None
    #: Headers every answer to this request carries (limits, cache, serving provider).
    headers: dict[str, str]
    finished: bool = False
    #: Tokens charged to rate limits before the answer (computed once per request).
    token_estimate: int | None = None
    #: The prompt's tokens as the relay counts them (:func:`~asgi_ai_relay.tokens.prompt_tokens`),
    #: once per request: for the limits' estimate and the usage check.
    prompt_count: int | None = None
    #: An embeddings request's items and the vectors found so far (:mod:`.stages.embed`).
    embedding: Any = None
    #: The request's OpenTelemetry spans (:mod:`asgi_ai_relay.telemetry`), once tracing started.
    trace: Any = None
    #: Work a stream's last piece waits for once the request is recorded (a Responses
    #: conversation being stored, so the next request in the chain finds it, on any worker).
    settle: asyncio.Task[None] | None = None
    #: What this request holds, newest last: released once, in reverse, by :meth:`release_all`.
    releases: list[Release]

    def __init__(self, request: RelayRequest, request_id: str, endpoint: str, format: WireFormat) -> None:
        self.request = request
        self.request_id = request_id
        self.endpoint = endpoint
        self.format = format
        self.started = time.perf_counter()
        self.ts = time.time()
        self.body = {}
        self.attempt_log = []
        self.headers = {}
        self.releases = []

    def hold(self, release: R) -> R:
        """Register the release of something just taken; returns ``release`` for an early,
        idempotent give-back (see :class:`Once`)."""
        self.releases.append(release)
        return release

    def release_all(self) -> None:
        """Give back everything still held, newest first; a failing release does not stop the rest."""
        releases, self.releases = self.releases, []
        for release in reversed(releases):
            try:
                release()
            except Exception:
                logger.exception("request_id=%s could not release what it held", self.request_id)

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0
