"""Stage 4: the exact response cache, with single-flight for identical requests in flight.

The key is a SHA-256 over canonical JSON (sorted keys) of the resolved model and every body
parameter that can change the answer; request ids, ``user``, ``metadata`` and credentials are
not part of it. Whole answers are stored as their body bytes, streamed answers as the pieces
the caller received, and replayed piece by piece, so a hit is byte-identical to the original.
Whole and streamed answers are stored under different keys: their bytes differ in shape.

Per request: ``Cache-Control: no-cache`` skips the lookup (the fresh answer is stored),
``no-store`` keeps the answer out of the cache, ``x-relay-cache-ttl: SECONDS`` overrides the
TTL and the relay-only body field ``use_cache`` (``false`` bypasses, ``true`` opts a request
that is not deterministic in) is removed before the body goes upstream. Every answer says
``x-relay-cache: hit`` (served from the cache or from an identical request in flight),
``miss`` (looked up, not found) or ``bypass`` (the cache was not consulted).

While a miss is in flight, identical requests wait for it instead of calling the provider
(streams included: they replay the stream once the leader's has ended). If the leader fails
or its answer cannot be stored, the waiting requests go upstream themselves.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import orjson

from ..errors import InvalidRequest, StorageError
from ..types import RelayResponse, Usage

if TYPE_CHECKING:
    from ..call import Call
    from ..relay import Relay

__all__ = ["CacheReplay", "cache_key", "complete", "lookup"]

logger = logging.getLogger("asgi_ai_relay")

#: Body fields that do not change the answer (or are sent as part of the key another way).
IGNORED = frozenset({"model", "stream", "stream_options", "user", "metadata", "use_cache", "store"})
_STREAM_HEADERS = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache", "x-accel-buffering": "no"}


def cache_key(relay: Relay, call: Call) -> str:
    """The entry key for this request (the model must be resolved)."""
    model = call.model
    assert model is not None
    options = call.body.get("stream_options")
    parts: dict[str, Any] = {
        "model": [model.alias, model.provider, model.upstream],
        "stream": call.stream,
        "usage": bool(call.stream and isinstance(options, dict) and options.get("include_usage")),
        "body": {k: v for k, v in call.body.items() if k not in IGNORED},
    }
    if relay.config.cache.scope == "caller":
        parts["caller"] = call.caller.id
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _directives(call: Call) -> tuple[bool, bool]:
    """(may read, may write) from the request's ``Cache-Control`` header."""
    header = call.request.headers.get("cache-control")
    if not header:
        return True, True
    tokens = {t.strip().lower() for t in header.split(",")}
    return "no-cache" not in tokens, "no-store" not in tokens


def _ttl(relay: Relay, call: Call, default: float) -> float:
    """:raises InvalidRequest: for an ``x-relay-cache-ttl`` that is not whole seconds >= 0."""
    given = call.request.headers.get("x-relay-cache-ttl")
    if given is None:
        return default
    if not given.strip().isdigit():
        raise InvalidRequest("'x-relay-cache-ttl' must be a whole number of seconds.", param="x-relay-cache-ttl")
    return float(min(int(given), relay.config.cache.max_ttl))


def _wanted(relay: Relay, call: Call) -> bool:
    """Whether the body (and the configured mode) make this request cacheable.

    :raises InvalidRequest: for a ``use_cache`` that is not a boolean.
    """
    use = call.body.pop("use_cache", None)
    if use is not None and not isinstance(use, bool):
        raise InvalidRequest("'use_cache' must be a boolean.", param="use_cache")
    mode = relay.config.cache.mode
    if mode == "off" or use is False:
        return False
    if use is True or mode == "all":
        return True
    body = call.body
    return body.get("temperature") == 0 or body.get("seed") is not None


async def lookup(relay: Relay, call: Call) -> RelayResponse | None:
    """A cached (or coalesced) answer, or ``None`` to go on upstream.

    :raises InvalidRequest: for a bad ``use_cache`` field or ``x-relay-cache-ttl`` header.
    """
    if not _wanted(relay, call):
        _bypass(call)
        return None
    read, write = _directives(call)
    cache = relay.cache
    ttl = _ttl(relay, call, cache.default_ttl) if write else 0.0
    if not read and (not write or ttl <= 0):
        _bypass(call)
        return None
    key = cache_key(relay, call)
    flight = relay.flights.get(key) if read else None
    if flight is not None:  # in progress, or just answered: fresher than the backend
        raw = await _follow(relay, flight)
        if raw is not None:
            return _hit(relay, call, raw)
    elif read:
        raw = await _get(relay, key)
        if raw is not None:
            return _hit(relay, call, raw)
    call.cache = "miss"
    call.headers["x-relay-cache"] = "miss"
    if ttl <= 0:
        return None
    call.cache_key, call.cache_ttl = key, ttl
    if read and flight is None:
        # Lead: identical requests from now on wait for this one's answer.
        call.flight = relay.flights[key] = asyncio.get_running_loop().create_future()
    return None


def _bypass(call: Call) -> None:
    call.cache = "bypass"
    call.headers["x-relay-cache"] = "bypass"


async def _get(relay: Relay, key: str) -> bytes | None:
    try:
        return await relay.cache.get(key)
    except StorageError as error:
        logger.debug("cache lookup failed, answering without the cache: %s", error.message)
        return None


async def _follow(relay: Relay, flight: asyncio.Future[bytes | None]) -> bytes | None:
    """The answer of the identical request in flight; ``None`` if it failed (then this request
    goes upstream on its own rather than queueing behind another attempt)."""
    try:
        return await asyncio.wait_for(asyncio.shield(flight), relay.config.timeouts.total)
    except TimeoutError:
        return None


def _hit(relay: Relay, call: Call, raw: bytes) -> RelayResponse:
    entry = orjson.loads(raw)
    prompt, completion, cached, estimated = entry["usage"]
    call.cache = "hit"
    call.cache_key = None
    call.usage = Usage(prompt, completion, cached, estimated=estimated)
    call.provider = entry.get("provider")
    headers = call.headers
    headers["x-relay-cache"] = "hit"
    headers["x-relay-model"] = entry.get("model") or ""
    headers["x-relay-cost-usd"] = "0.00000000"
    if entry["kind"] == "whole":
        headers["content-type"] = "application/json"
        return RelayResponse(200, headers, entry["body"].encode())
    headers.update(_STREAM_HEADERS)
    pieces = [piece.encode() for piece in entry["pieces"]]
    return RelayResponse(200, headers, stream=CacheReplay(relay, call, pieces))


class CacheReplay:
    """A stored stream, replayed with the pieces the original caller received."""

    __slots__ = ("_call", "_pieces", "_relay")

    def __init__(self, relay: Relay, call: Call, pieces: list[bytes]) -> None:
        self._relay = relay
        self._call = call
        self._pieces = iter(pieces)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        piece = next(self._pieces, None)
        if piece is None:
            self._end(200)
            raise StopAsyncIteration
        if self._call.ttfb_ms is None:
            self._call.ttfb_ms = self._call.elapsed_ms()
        return piece

    def _end(self, status: int) -> None:
        if not self._call.finished:
            self._call.status = status
            self._relay.finish(self._call)

    async def aclose(self) -> None:
        self._end(499)


def _entry(call: Call) -> bytes | None:
    """The stored form of a complete, successful answer; ``None`` when it cannot be stored."""
    output = call.output
    if output is None or call.status != 200 or call.error is not None or call.model is None:
        return None
    usage = call.usage or Usage()
    entry: dict[str, Any] = {
        "model": call.model.alias,
        "provider": call.provider,
        "usage": [usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, usage.estimated],
    }
    try:
        if call.stream:
            entry["kind"], entry["pieces"] = "stream", [piece.decode() for piece in output]
        else:
            entry["kind"], entry["body"] = "whole", b"".join(output).decode()
    except UnicodeDecodeError:
        return None
    return orjson.dumps(entry)


def complete(relay: Relay, call: Call) -> None:
    """Store a finished miss and hand it to the requests waiting on its flight (from ``finish``)."""
    key = call.cache_key
    if key is None:
        return
    raw = _entry(call)
    if raw is not None and len(raw) > relay.config.cache.max_entry_bytes:
        raw = None
    flight = call.flight
    if flight is not None and not flight.done():
        flight.set_result(raw)
    if raw is None:
        _land(relay, key, flight)
        return
    store_now = getattr(relay.cache, "set_now", None)
    if store_now is not None:  # an in-process cache: stored before anyone can look again
        store_now(key, raw, call.cache_ttl)
        _land(relay, key, flight)
        return
    current = relay.flights.get(key)
    if flight is None and (current is None or current.done()):
        # A refresh (no-cache): newcomers read it here until the cache write has landed.
        flight = relay.flights[key] = asyncio.get_running_loop().create_future()
        flight.set_result(raw)
    task = asyncio.get_running_loop().create_task(_store(relay, key, raw, call.cache_ttl))
    relay.background.add(task)
    task.add_done_callback(lambda t: _landed(relay, t, key, flight))


def _landed(relay: Relay, task: asyncio.Task[None], key: str, flight: asyncio.Future[bytes | None] | None) -> None:
    relay.background.discard(task)
    _land(relay, key, flight)


def _land(relay: Relay, key: str, flight: asyncio.Future[bytes | None] | None) -> None:
    """Close the flight once its answer is in the cache, so no newcomer misses in between."""
    if flight is not None and relay.flights.get(key) is flight:
        del relay.flights[key]


async def _store(relay: Relay, key: str, raw: bytes, ttl: float) -> None:
    try:
        await relay.cache.set(key, raw, ttl)
    except StorageError as error:
        logger.debug("cache store failed: %s", error.message)
