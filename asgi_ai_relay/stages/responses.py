"""Conversation state for the Responses API: ``previous_response_id`` on every provider.

The :func:`restore` stage runs after parsing on ``POST /v1/responses``. A request that names a
``previous_response_id`` gets that response's conversation (its input items and output items,
as the relay stored them) put in front of its own ``input``, so providers without server-side
state see the whole conversation; an id this caller did not store is a 404, whoever else
stored it. Unless the request says ``store: false``, its own conversation is kept under the id
of the response it was answered with, once, only for an answer that completed (status 200, with
a ``response`` object in the whole body or in the stream's final event): a whole answer before
it goes out (:func:`forward`, which wraps the route's), a stream or a cache hit when the
request finishes (a release registered with :meth:`Call.hold`): a stream's final event
waits for that write (``call.settle``, up to :data:`~.stream.SETTLE_WAIT` seconds), so the
caller can name the id in its next request, to any worker. A stream
larger than ``cache.max_entry_bytes`` is not kept in full by the stream stage, so it is not
stored either (a later ``previous_response_id`` to it is a 404).

Each stored response also keeps the id of its chain's first response, the chain's session for
conversation affinity (:mod:`asgi_ai_relay.affinity`): a request that continues the chain is
sent to the deployment the chain started on, while it is healthy.

``POST /v1/responses/input_tokens`` counts a request's input without calling a provider.
``GET /v1/responses/{id}`` answers the caller's own stored response, ``DELETE`` forgets it.
The store is the one ``storage.responses`` names (see :mod:`asgi_ai_relay.storage.responses`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import orjson

from ..errors import NotFound, StorageError
from ..protocol.sse import SSESplitter
from ..tokens import prompt_tokens
from . import route

if TYPE_CHECKING:
    from ..call import Call
    from ..relay import Relay
    from ..types import RelayResponse

__all__ = ["count_input", "delete_response", "forward", "get_response", "restore", "stored_response"]

logger = logging.getLogger("asgi_ai_relay")

_FINAL = frozenset({"response.completed", "response.incomplete"})


async def _previous(relay: Relay, call: Call, previous: str) -> dict[str, Any]:
    """:raises NotFound: when the caller has no stored response with that id."""
    record = await relay.responses.get(call.caller.id, previous)
    if record is None:
        error = NotFound(f"Previous response with id '{previous[:80]}' not found.", param="previous_response_id")
        error.code = "previous_response_not_found"
        raise error
    return record


def _items(given: Any) -> list[dict[str, Any]]:
    return [{"type": "message", "role": "user", "content": given}] if isinstance(given, str) else list(given)


async def restore(relay: Relay, call: Call) -> RelayResponse | None:
    """Put the previous response's conversation in front of the input; register the keeping.

    :raises NotFound: when the caller has no stored response with that id.
    """
    body = call.body
    items = _items(body["input"])
    previous = body.pop("previous_response_id", None)
    if previous is not None:
        record = await _previous(relay, call, previous)
        items = [*record["conversation"], *items]
        body["input"] = items
        call.session = record.get("session") or previous  # the chain's first response: its affinity
    if body.get("store") is not False:
        call.hold(_Keeper(relay, call, items))
    return None


async def count_input(relay: Relay, call: Call) -> RelayResponse | None:
    """``POST /v1/responses/input_tokens``: the input's tokens (with the stored conversation a
    ``previous_response_id`` names), counted by the relay for every provider (its estimate, or
    tiktoken when configured; ``x-relay-token-count`` says which), calling none.

    :raises NotFound: when the caller has no stored response with that id.
    """
    body = call.body
    items = _items(body["input"])
    previous = body.get("previous_response_id")
    if isinstance(previous, str):
        items = [*(await _previous(relay, call, previous))["conversation"], *items]
    tokenizer = relay.config.limits.tokenizer
    counted = prompt_tokens({**body, "input": items}, tokenizer)
    call.headers["x-relay-token-count"] = tokenizer
    return relay.json_response(call, {"object": "response.input_tokens", "input_tokens": counted})


async def forward(relay: Relay, call: Call) -> RelayResponse | None:
    """:func:`route.forward`, then a whole answer is stored before it goes out, so the caller
    can name its id in the very next request (to any worker)."""
    response = await route.forward(relay, call)
    keeper = next((r for r in call.releases if isinstance(r, _Keeper)), None)
    if keeper is not None and response is not None and response.stream is None and response.status == 200:
        await keeper.now([response.body])
    return response


class _Keeper:
    """Keeps the conversation once: before a whole answer goes out (:func:`forward`), or, for a
    stream or a cache hit, when the request finishes (a registered release)."""

    __slots__ = ("call", "done", "items", "relay")

    def __init__(self, relay: Relay, call: Call, items: list[dict[str, Any]]) -> None:
        self.relay, self.call, self.items = relay, call, items
        self.done = False

    def _record(self, pieces: list[bytes]) -> tuple[str, dict[str, Any]] | None:
        if self.done:
            return None
        self.done = True
        response = stored_response(pieces, self.call.stream)
        if response is None or not isinstance(response.get("id"), str):
            return None
        output = [item for item in response.get("output") or () if isinstance(item, dict)]
        session = self.call.session
        if session is None:  # a chain starts here: later requests in it go where this one went
            session = response["id"]
            self._pin(session)
        return response["id"], {"conversation": [*self.items, *output], "response": response, "session": session}

    def _pin(self, session: str) -> None:
        call, router = self.call, self.relay.router
        served = next((e.get("deployment") for e in reversed(call.attempt_log) if e.get("status") == 200), None)
        target = router.by_name.get(served) if isinstance(served, str) else None
        if target is not None and call.model is not None:
            router.served(call.model, session, target)

    async def now(self, pieces: list[bytes]) -> None:
        record = self._record(pieces)
        if record is not None:
            await _put(self.relay, self.call, *record)

    def __call__(self) -> None:
        if self.call.status == 200 and self.call.output:
            record = self._record(self.call.output)
            if record is not None:
                self.call.settle = self.relay.spawn_task(_put(self.relay, self.call, *record))


async def _put(relay: Relay, call: Call, response_id: str, record: dict[str, Any]) -> None:
    try:
        await relay.responses.put(call.caller.id, response_id, record)
    except StorageError as exc:
        logger.warning("request_id=%s: response %s not stored (%s)", call.request_id, response_id[:80], exc.message)


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
