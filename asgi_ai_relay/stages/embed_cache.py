"""The embeddings cache: one entry per input item, so a batch that repeats texts seen before
sends only the new ones upstream.

Embeddings are deterministic, so they are cached whatever ``cache.mode`` says short of
``off``; ``use_cache: false``, ``Cache-Control: no-cache`` / ``no-store`` and
``x-relay-cache-ttl`` work as for chat (:mod:`.cache`). An item's key is a SHA-256 over the
endpoint, the resolved model (alias, provider, upstream name), ``dimensions``,
``encoding_format``, the Gemini task type and title, the cache scope (and the caller, for
``scope = "caller"``), :data:`KEY_VERSION` and the item itself (a text or a token array). The
entry holds the vector as the provider sent it and the item's tokens. Every answer says
``x-relay-cache: hit`` (every item found: no upstream call), ``partial`` (some found, only the
others sent), ``miss`` or ``bypass``. Entries are written only for vectors of the model the
keys name (never after a fallback).

Single-flight, per item and in one process: the items a request sends are listed in flight
until their vectors come back; a request whose missing items are all in flight waits for them
(a hit, no upstream call), one with new items of its own sends all it misses at once (it never
waits behind another). When the leader fails, the waiting requests send the items themselves.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson

from ..errors import InvalidRequest, StorageError
from ..protocol import embeddings as wire
from ..types import RelayResponse, Usage
from .cache import _directives, _ttl

if TYPE_CHECKING:
    from ..call import Call
    from ..relay import Relay
    from .embed import Items

__all__ = ["KEY_VERSION", "item_keys", "lookup", "store"]

logger = logging.getLogger("asgi_ai_relay")

KEY_VERSION = 1


def item_keys(relay: Relay, call: Call, items: list[wire.Item]) -> list[str]:
    """One key per item (the model must be resolved)."""
    model = call.model
    assert model is not None
    body = call.body
    scope = relay.config.cache.scope
    parts: dict[str, Any] = {
        "v": KEY_VERSION,
        "endpoint": [call.endpoint, call.format.name],
        "model": [model.alias, model.provider, model.upstream],
        "dimensions": body.get("dimensions"),
        "encoding": body.get("encoding_format") or "float",
        "task": body.get("task_type") or body.get("taskType"),
        "title": body.get("title"),
        "scope": scope,
    }
    if scope == "caller":
        parts["caller"] = call.caller.id
    prefix = orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)
    return [hashlib.sha256(prefix + b"\0" + orjson.dumps(item)).hexdigest() for item in items]


async def lookup(relay: Relay, call: Call) -> RelayResponse | None:
    """The whole answer when every item is cached (or in flight); otherwise marks the items
    found and lists the others as in flight.

    :raises InvalidRequest: for a bad ``use_cache`` field or ``x-relay-cache-ttl`` header.
    """
    state: Items = call.embedding
    use = call.body.pop("use_cache", None)
    if use is not None and not isinstance(use, bool):
        raise InvalidRequest("'use_cache' must be a boolean.", param="use_cache")
    read, write = _directives(call)
    if relay.config.cache.mode == "off" or use is False or not (read or write):
        return _say(call, "bypass")
    cache = relay.cache
    state.ttl = _ttl(relay, call, cache.default_ttl) if write else 0.0
    keys = state.keys = item_keys(relay, call, state.items)
    if not read:
        return _say(call, "bypass")
    _fill(state, range(len(keys)), await asyncio.gather(*(_get(relay, key) for key in keys)))
    missing = state.missing(state.model)
    flights = relay.flights
    if missing and all(keys[i] in flights for i in missing):  # wait only when nothing is new
        answers = await asyncio.gather(*(asyncio.shield(flights[keys[i]]) for i in missing))
        _fill(state, missing, [_parse(raw) for raw in answers])
        missing = state.missing(state.model)
    if not missing:
        return _hit(relay, call, state)
    _lead(relay, call, state, [i for i in missing if keys[i] not in flights])
    return _say(call, "partial" if len(missing) < len(keys) else "miss")


def _fill(state: Items, indexes: Iterable[int], entries: Iterable[tuple[wire.Vector, int] | None]) -> None:
    for index, entry in zip(indexes, entries, strict=True):
        if entry is not None:
            state.vectors[index], state.tokens[index] = entry


def _lead(relay: Relay, call: Call, state: Items, indexes: list[int]) -> None:
    """List these items in flight: a request that needs nothing else waits for them. The
    flights end with the entries when the vectors come back (:func:`store`), or with nothing
    when the request ends without them (the waiting requests then send the items themselves)."""
    if not indexes or state.keys is None:
        return
    loop = asyncio.get_running_loop()
    for index in indexes:
        key = state.keys[index]
        future: asyncio.Future[bytes | None] = loop.create_future()
        state.leads[index] = (key, future)
        relay.flights[key] = future
    call.hold(partial(_land, relay, state, list(indexes), None))


def _land(relay: Relay, state: Items, indexes: list[int], entries: list[bytes] | None) -> None:
    for position, index in enumerate(indexes):
        lead = state.leads.pop(index, None)
        if lead is None:
            continue
        key, future = lead
        if not future.done():
            future.set_result(entries[position] if entries is not None else None)
        if relay.flights.get(key) is future:
            del relay.flights[key]


def _say(call: Call, outcome: str) -> RelayResponse | None:
    """Records the cache's outcome; ``None``: the request goes on upstream."""
    call.cache = outcome
    call.headers["x-relay-cache"] = outcome
    return None


async def _get(relay: Relay, key: str) -> tuple[wire.Vector, int] | None:
    try:
        raw = await relay.cache.get(key)
    except StorageError as error:
        logger.debug("embeddings cache lookup failed: %s", error.message)
        return None
    return _parse(raw)


def _parse(raw: bytes | None) -> tuple[wire.Vector, int] | None:
    if raw is None:
        return None
    try:
        entry = orjson.loads(raw)
        vector, tokens = entry["v"], int(entry["t"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    return (vector, tokens) if isinstance(vector, (str, list)) else None


def _hit(relay: Relay, call: Call, state: Items) -> RelayResponse:
    model = call.model
    assert model is not None
    _say(call, "hit")
    call.provider = model.provider
    total = sum(state.tokens)
    call.usage = Usage(total)
    vectors = [v for v in state.vectors if v is not None]
    body = orjson.dumps(wire.render(vectors, model.upstream, total, state.encoding))
    headers = call.headers
    headers["x-relay-model"] = model.alias
    headers["x-relay-cost-usd"] = "0.00000000"
    headers["content-type"] = "application/json"
    return RelayResponse(200, headers, body)


def store(relay: Relay, state: Items, indexes: list[int], *, keep: bool) -> None:
    """The vectors of the items at ``indexes`` just came back: hand them to the requests
    waiting for them and, when ``keep`` (they are the keyed model's), write their entries."""
    keys = state.keys
    if keys is None or not indexes:
        return
    entries = [orjson.dumps({"v": state.vectors[i], "t": state.tokens[i]}) for i in indexes]
    _land(relay, state, indexes, entries if keep else None)
    if not keep or state.ttl <= 0:
        return
    cache = relay.cache
    store_now = getattr(cache, "set_now", None)
    if store_now is not None:  # an in-process cache: stored before anyone can look again
        for i, raw in zip(indexes, entries, strict=True):
            store_now(keys[i], raw, state.ttl)
        return
    relay.spawn(_store(relay, [(keys[i], raw) for i, raw in zip(indexes, entries, strict=True)], state.ttl))


async def _store(relay: Relay, entries: list[tuple[str, bytes]], ttl: float) -> None:
    try:
        await asyncio.gather(*(relay.cache.set(key, raw, ttl) for key, raw in entries))
    except StorageError as error:
        logger.debug("embeddings cache store failed: %s", error.message)
