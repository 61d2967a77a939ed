"""Conversation state for the Responses API: ``previous_response_id`` on every provider.

The :func:`restore` stage runs after parsing on ``POST /v1/responses``. A request that names a
``previous_response_id`` gets that response's conversation (its input items and output items,
as the relay stored them) put in front of its own ``input``, so providers without server-side
state see the whole conversation; an id this caller did not store is a 404, whoever else
stored it. Unless the request says ``store: false``, the request registers (with
:meth:`Call.hold`, run once when the request finishes) the keeping of its own conversation
under the id of the response it was answered with: only for an answer that completed (status
200, with a ``response`` object in the whole body or in the stream's final event). A stream
larger than ``cache.max_entry_bytes`` is not kept in full by the stream stage, so it is not
stored either (a later ``previous_response_id`` to it is a 404).

``GET /v1/responses/{id}`` answers the caller's own stored response, ``DELETE`` forgets it.
Stores sit behind :class:`ResponseStore`; :class:`MemoryResponseStore` (``memory://``, per
process, bounded, oldest dropped first) is the default.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from ..errors import ConfigurationError, NotFound
from ..protocol.sse import SSESplitter

if TYPE_CHECKING:
    from ..call import Call
    from ..relay import Relay
    from ..types import RelayResponse

__all__ = [
    "MemoryResponseStore", "ResponseStore", "delete_response", "get_response", "response_store_from_uri", "restore",
    "stored_response",
]

_FINAL = frozenset({"response.completed", "response.incomplete"})


class ResponseStore(Protocol):
    """Stored responses by (caller, response id); a caller reads only its own. A record is
    ``{"conversation": [input items..., output items...], "response": {...}}``."""

    async def get(self, caller: str, response_id: str) -> dict[str, Any] | None: ...

    async def put(self, caller: str, response_id: str, record: dict[str, Any]) -> None: ...

    async def delete(self, caller: str, response_id: str) -> bool:
        """Whether there was such a response."""


class MemoryResponseStore:
    """Per process: at most ``max_entries`` conversations, each kept ``ttl`` seconds."""

    def __init__(self, max_entries: int = 10_000, ttl: float = 30 * 24 * 3600.0) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self._entries: OrderedDict[tuple[str, str], tuple[float, bytes]] = OrderedDict()

    async def get(self, caller: str, response_id: str) -> dict[str, Any] | None:
        entry = self._entries.get((caller, response_id))
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            del self._entries[(caller, response_id)]
            return None
        record: dict[str, Any] = orjson.loads(entry[1])
        return record

    async def put(self, caller: str, response_id: str, record: dict[str, Any]) -> None:
        key = (caller, response_id)
        self._entries.pop(key, None)
        self._entries[key] = (time.monotonic() + self.ttl, orjson.dumps(record))
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def delete(self, caller: str, response_id: str) -> bool:
        entry = self._entries.pop((caller, response_id), None)
        return entry is not None and entry[0] >= time.monotonic()


def response_store_from_uri(uri: str) -> ResponseStore:
    """:raises ConfigurationError: for a scheme without a response store."""
    if uri.startswith("memory://"):
        return MemoryResponseStore()
    raise ConfigurationError(f"No response store for {uri.split(':', 1)[0]!r} URIs (known: memory://).")


async def restore(relay: Relay, call: Call) -> RelayResponse | None:
    """Put the previous response's conversation in front of the input; register the keeping.

    :raises NotFound: when the caller has no stored response with that id.
    """
    body = call.body
    given = body["input"]
    items: list[dict[str, Any]] = [{"type": "message", "role": "user", "content": given}] if isinstance(given, str) else given
    previous = body.pop("previous_response_id", None)
    store = relay.responses
    if previous is not None:
        record = await store.get(call.caller.id, previous)
        if record is None:
            error = NotFound(f"Previous response with id '{previous[:80]}' not found.", param="previous_response_id")
            error.code = "previous_response_not_found"
            raise error
        items = [*record["conversation"], *items]
        body["input"] = items
    if body.get("store") is not False:
        call.hold(lambda: _keep(relay, call, items))
    return None


def _keep(relay: Relay, call: Call, items: list[dict[str, Any]]) -> None:
    if call.status != 200 or not call.output:
        return
    response = stored_response(call.output, call.stream)
    if response is None or not isinstance(response.get("id"), str):
        return
    output = [item for item in response.get("output") or () if isinstance(item, dict)]
    record = {"conversation": [*items, *output], "response": response}
    relay.spawn(relay.responses.put(call.caller.id, response["id"], record))


def _requested_id(call: Call) -> str:
    return call.request.path.rpartition("/")[2]


async def get_response(relay: Relay, call: Call) -> RelayResponse:
    """``GET /v1/responses/{id}``: the caller's own stored response.

    :raises NotFound: when the caller stored no response with that id.
    """
    response_id = _requested_id(call)
    record = await relay.responses.get(call.caller.id, response_id)
    if record is None:
        raise NotFound(f"Response with id '{response_id[:80]}' not found.", param="response_id")
    return relay.json_response(call, record["response"])


async def delete_response(relay: Relay, call: Call) -> RelayResponse:
    """``DELETE /v1/responses/{id}``: forget the caller's own stored response.

    :raises NotFound: when the caller stored no response with that id.
    """
    response_id = _requested_id(call)
    if not await relay.responses.delete(call.caller.id, response_id):
        raise NotFound(f"Response with id '{response_id[:80]}' not found.", param="response_id")
    return relay.json_response(call, {"id": response_id, "object": "response.deleted", "deleted": True})


def stored_response(pieces: list[bytes], stream: bool) -> dict[str, Any] | None:
    """The ``response`` object of a whole answer, or of a stream's final event."""
    try:
        if not stream:
            payload = orjson.loads(b"".join(pieces))
            return payload if isinstance(payload, dict) and payload.get("object") == "response" else None
        splitter = SSESplitter()
        for piece in pieces:
            for event in splitter.feed(piece):
                if event.event in _FINAL:
                    response = orjson.loads(event.data).get("response")
                    return response if isinstance(response, dict) else None
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return None
