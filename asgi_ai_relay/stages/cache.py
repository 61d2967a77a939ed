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

import asyncio
import hashlib
import logging
from operator import attrgetter
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import orjson

from ..errors import InvalidRequest, StorageError
from ..types import RelayResponse, Usage
from . import translate
from .flight import Flight, find

if TYPE_CHECKING:
    from ..call import Call
    from ..config import ModelConfig
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
    options = call.body.get("stream_options")
    scope = relay.config.cache.scope
    parts: dict[str, Any] = {
        "v": KEY_VERSION,
        "endpoint": [call.endpoint, call.format.name],
        "model": [model.alias, model.provider, model.upstream],
        "stream": call.stream,
        "usage": bool(call.stream and isinstance(options, dict) and options.get("include_usage")),
        "headers": _forwarded(relay, call, model),
        "scope": scope,
        "body": {k: v for k, v in call.body.items() if k not in IGNORED},
    }
    if scope == "caller":
        parts["caller"] = call.caller.id
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _forwarded(relay: Relay, call: Call, model: ModelConfig) -> dict[str, str]:
    """The inbound headers the provider will see (they change its answer)."""
    provider = relay.providers[model.provider]
    try:
        names = translate.pick(call.format.name, provider.format, provider.name).forward_headers
    except InvalidRequest:  # no such translation: the route refuses the request
        return _NO_HEADERS
    if not names:  # (most translations forward none)
        return _NO_HEADERS
    headers = call.request.headers
    return {name: headers[name] for name in names if name in headers}


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
    read, write = _directives(call)
    cache = relay.cache
    ttl = _ttl(relay, call, cache.default_ttl) if write else 0.0
    if not read and (not write or ttl <= 0):
        _bypass(call)
        return None
    key = cache_key(relay, call)
    if read:
        raw = await find(relay, call, key, ttl, _entry)
        if raw is not None:
            return _hit(relay, call, raw)
    else:  # a refresh: fetched fresh, then stored
        Flight.start(relay, call, key, ttl, _entry)
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
    call.cache_key = None
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
    classes = list(_CLASSES_OF(usage))
    if any(classes):  # beside "usage", which entries of older versions hold alone
        entry["classes"] = classes
    try:
        if call.stream:
            entry["kind"], entry["pieces"] = "stream", [piece.decode() for piece in output]
        else:
            entry["kind"], entry["body"] = "whole", b"".join(output).decode()
    except UnicodeDecodeError:
        return None
    return orjson.dumps(entry)


def complete(relay: Relay, call: Call) -> None:
    """Store a finished miss whose answer may be stored (from ``finish``, after the releases:
    its flight has judged the answer and handed it to its followers)."""
    key, flight = call.cache_key, call.flight
    if key is None or not isinstance(flight, Flight):
        return
    flight.end()  # a no-op once the request's releases have run
    if call.cache_key is None:  # nothing to store
        return
    call.cache_key = None
    raw = flight.result()
    assert raw is not None
    store_now = getattr(relay.cache, "set_now", None)
    if store_now is not None:  # an in-process cache: stored before anyone can look again
        store_now(key, raw, call.cache_ttl)
        flight.land()
        return
    task = asyncio.get_running_loop().create_task(_store(relay, flight, raw, call.cache_ttl))
    relay.background.add(task)
    task.add_done_callback(lambda t: _landed(relay, t, flight))


def _landed(relay: Relay, task: asyncio.Task[None], flight: Flight) -> None:
    relay.background.discard(task)
    flight.land()


async def _store(relay: Relay, flight: Flight, raw: bytes, ttl: float) -> None:
    locks, flight.locks = flight.locks, None
    try:
        if locks is not None:  # the entry and the lock's release in one step
            await locks.publish(flight.key, raw, ttl, flight.token)
        else:
            await relay.cache.set(flight.key, raw, ttl)
    except StorageError as error:  # a lock left behind expires on its own
        logger.debug("cache store failed: %s", error.message)
