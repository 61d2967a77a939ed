"""Parsing: the body becomes a validated request in the caller's format."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from ..errors import InvalidRequest

if TYPE_CHECKING:
    from ..call import Call
    from ..relay import Relay
    from ..types import RelayResponse

__all__ = ["parse"]


async def parse(relay: Relay, call: Call) -> RelayResponse | None:
    """:raises InvalidRequest: for an empty body, bad JSON, or a body its format rejects."""
    raw = call.request.body
    if not raw.strip():
        raise InvalidRequest("The request body is empty; expected a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}.") from exc
    call.format.validate(body)
    call.body = body
    call.stream = body.get("stream") is True
    call.requested_model = body.get("model")
    return None
