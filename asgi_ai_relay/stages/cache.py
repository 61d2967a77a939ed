"""Stage 4: the exact response cache, with single-flight for identical requests in flight.

The key is a SHA-256 over canonical JSON (sorted keys) of everything that changes the answer:
the endpoint and its wire format (an OpenAI body never answers an Anthropic caller), the
resolved model (alias, provider, upstream name), every body parameter that can change the
answer, the inbound headers the translation forwards to the provider (``anthropic-version``,
``anthropic-beta``), the cache scope (and the caller, for ``scope = "caller"``) and
:data:`KEY_VERSION`. Request ids, ``user``, ``metadata`` and credentials are not part of it.
Whole answers are stored as their body bytes, streamed answers as the pieces the caller
received, and replayed piece by piece, so a hit is byte-identical to the original. Whole and
streamed answers are stored under different keys: their bytes differ in shape. An answer is
stored only when it is complete and came from the model the key names: after a fallback it is
not stored at all.

Per request: ``Cache-Control: no-cache`` skips the lookup (the fresh answer is stored),
``no-store`` keeps the answer out of the cache, ``x-relay-cache-ttl: SECONDS`` overrides the
TTL and the relay-only body field ``use_cache`` (``false`` bypasses, ``true`` opts a request
that is not deterministic in) is removed before the body goes upstream. Every answer says
``x-relay-cache: hit`` (served from the cache or from an identical request in flight),
``miss`` (looked up, not found) or ``bypass`` (the cache was not consulted).

While a miss is in flight, identical requests wait for it instead of calling the provider; a
failed leader hands the lead to one of them; streams are not waited for. Across processes the
Redis cache adds a lock per key. What each follower gets in each case is written in
:mod:`asgi_ai_relay.stages.flight`.
"""

from __future__ import annotations

import hashlib
import logging
from operator import attrgetter
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import orjson

from ..errors import InvalidRequest, StorageError
from ..types import RelayResponse, Usage
from . import translate
from .flight import GET_NOW, Flight, find, get_now_of, lead

if TYPE_CHECKING:
    from ..call import Call
    from ..providers.base import Provider
    from ..relay import Relay

__all__ = ["KEY_VERSION", "CacheReplay", "cache_key", "complete", "lookup"]

logger = logging.getLogger("asgi_ai_relay")

#: Body fields that do not change the answer (or are sent as part of the key another way).
IGNORED = frozenset({"model", "stream", "stream_options", "user", "metadata", "use_cache", "store"})
#: The version of what the key covers: a change to it makes entries written before unreadable.
KEY_VERSION = 2
_NO_HEADERS: dict[str, str] = {}  # (read only)
_STREAM_HEADERS = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache", "x-accel-buffering": "no"}


def cache_key(relay: Relay, call: Call) -> str:
    """The entry key for this request (the model must be resolved)."""
    model = call.model
    assert model is not None
    body, stream, scope = call.body, call.stream, relay.config.cache.scope
    provider = relay.providers[model.provider]
    names = _FORWARDS.get((call.format.name, provider.format))
    if names is None:
        names = _forward_names(call, provider)
    kept = body.copy()  # the body without the fields that do not change the answer
    for name in IGNORED.intersection(body):
        del kept[name]
    parts: dict[str, Any] = {
        "v": KEY_VERSION,
        "endpoint": [call.endpoint, call.format.name],
        "model": [model.alias, model.provider, model.upstream],
        "stream": stream,
        "usage": stream and _with_usage(body),
        "headers": _forwarded(call, names) if names else _NO_HEADERS,  # (most translations forward none)
        "scope": scope,
        "body": kept,
    }
    if scope == "caller":
        parts["caller"] = call.caller.id
    return _sha256(_dumps(parts, None, _SORT_KEYS)).hexdigest()


_sha256, _dumps, _SORT_KEYS = hashlib.sha256, orjson.dumps, orjson.OPT_SORT_KEYS
#: The inbound headers a translation forwards to its provider, per (inbound format, provider format).
_FORWARDS: dict[tuple[str, str], tuple[str, ...]] = {}


def _forward_names(call: Call, provider: Provider) -> tuple[str, ...]:
    try:
        translation = translate.pick(call.format.name, provider.format, provider.name)
    except InvalidRequest:  # no such translation: the route refuses the request
        return ()
    names = _FORWARDS[call.format.name, provider.format] = translation.forward_headers
    return names


def _forwarded(call: Call, names: tuple[str, ...]) -> dict[str, str]:
    """The inbound headers the provider will see (they change its answer)."""
    headers = call.request.headers
    return {name: headers[name] for name in names if name in headers}


def _with_usage(body: dict[str, Any]) -> bool:
    """Whether a stream asks for its usage (its last event differs)."""
    options = body.get("stream_options")
    return bool(isinstance(options, dict) and options.get("include_usage"))


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
    body = call.body
    use = body.pop("use_cache", None)
    mode = relay.config.cache.mode
    if use is None and mode == "deterministic" and "generationConfig" not in body:  # (most requests)
        return body.get("temperature") == 0 or body.get("seed") is not None
    if use is not None and not isinstance(use, bool):
        raise InvalidRequest("'use_cache' must be a boolean.", param="use_cache")
    if mode == "off" or use is False:
        return False
    if use is True or mode == "all":
        return True
    gemini = body.get("generationConfig")  # Gemini keeps its sampling settings here
    settings = gemini if isinstance(gemini, dict) else body
    return settings.get("temperature") == 0 or settings.get("seed") is not None


async def lookup(relay: Relay, call: Call) -> RelayResponse | None:
    """A cached (or coalesced) answer, or ``None`` to go on upstream.

    :raises InvalidRequest: for a bad ``use_cache`` field or ``x-relay-cache-ttl`` header.
    """
    if not _wanted(relay, call):
        _bypass(call)
        return None
    headers = call.request.headers
    if "cache-control" in headers or "x-relay-cache-ttl" in headers:
        read, write = _directives(call)
        ttl = _ttl(relay, call, relay.cache.default_ttl) if write else 0.0
        if not read and (not write or ttl <= 0):
            _bypass(call)
            return None
    else:  # (most requests) looked up, and stored for the default TTL
        read, ttl = True, relay.cache.default_ttl
    key = cache_key(relay, call)
    if not read:  # a refresh: fetched fresh, then stored
        lead(relay.flights, call, key, ttl)
    else:
        cache, flights = relay.cache, relay.flights
        try:
            get_now = GET_NOW[type(cache)]
        except KeyError:
            get_now = get_now_of(cache)
        if get_now is None or key in flights:  # a cache that awaits or locks, or one in flight
            raw = await find(relay, call, key, ttl)
        else:  # (most requests) what find does then, in one step: looked up, and led on a miss
            try:
                raw = get_now(cache, key)
            except StorageError as error:
                logger.debug("cache lookup failed, answering without the cache: %s", error.message)
                raw = None
            if raw is None and ttl > 0:
                lead(flights, call, key, ttl)
        if raw is not None:
            return _hit(relay, call, raw)
    call.cache = "miss"
    call.headers["x-relay-cache"] = "miss"
    return None


#: The usage classes an entry keeps beside its ``usage`` (see :class:`~asgi_ai_relay.types.Usage`).
_CLASSES = ("cache_creation_tokens", "cache_write_1h_tokens", "reasoning_tokens", "audio_input_tokens",
            "image_input_tokens", "web_search_requests", "service_tier")
_CLASSES_OF = attrgetter(*_CLASSES)


def _bypass(call: Call) -> None:
    call.cache = "bypass"
    call.headers["x-relay-cache"] = "bypass"


def _hit(relay: Relay, call: Call, raw: bytes) -> RelayResponse:
    entry = orjson.loads(raw)
    prompt, completion, cached, estimated = entry["usage"]
    call.cache = "hit"
    # The model that produced it: another than the one asked for when a leader fell back.
    call.model = relay.config.models.get(entry.get("model") or "", call.model)
    call.usage = Usage(prompt, completion, cached, estimated=estimated)
    classes = entry.get("classes")
    if isinstance(classes, list) and len(classes) == len(_CLASSES):  # priced apart (what a hit saved)
        for name, value in zip(_CLASSES, classes, strict=True):
            setattr(call.usage, name, value)
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
    classes = _CLASSES_OF(usage)
    if any(classes):  # beside "usage", which entries of older versions hold alone
        entry["classes"] = list(classes)
    try:
        if call.stream:
            entry["kind"], entry["pieces"] = "stream", [piece.decode() for piece in output]
        else:
            entry["kind"], entry["body"] = "whole", b"".join(output).decode()
    except UnicodeDecodeError:
        return None
    return orjson.dumps(entry)


def complete(relay: Relay, call: Call) -> None:
    """End the flight of a finished miss (from ``finish``, after the releases, however the
    request ended): its answer goes to its followers and, when it may be stored, into the
    cache; with none to store (or a fallback's), the flight is left to a follower."""
    flight = call.flight
    if not isinstance(flight, Flight):  # none led, or answered before going upstream
        return
    if flight.renewal is not None:
        flight.stop_renewal()
    try:
        raw = _entry(call)
    except Exception:  # its followers must still be let go
        logger.exception("request_id=%s answer could not be kept for the cache", call.request_id)
        raw = None
    model = call.model
    if raw is None or model is None or model.alias != flight.model or len(raw) > relay.config.cache.max_entry_bytes:
        # not stored: the followers take a fallback's (or a too large) answer as it is, and
        # with none the first to wake leads
        flight.leave(relay)
        flight.set_result(raw)
        return
    flight.set_result(raw)
    store_now = getattr(relay.cache, "set_now", None)
    if store_now is None:
        flight.store_later(relay, raw)
        return
    store_now(flight.key, raw, flight.ttl)  # an in-process cache: stored before anyone can look again
    flight.land(relay.flights)
