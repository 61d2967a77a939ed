"""Stage 5: which model and provider serve the request, and the call to it."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..errors import ModelNotFound
from ..types import RelayResponse
from . import translate
from .stream import RelayStream
from .usage import cost_of

if TYPE_CHECKING:
    from ..call import Call
    from ..config import ModelConfig
    from ..relay import Relay

__all__ = ["forward", "resolve"]

_JSON = "application/json"


async def resolve(relay: Relay, call: Call) -> RelayResponse | None:
    """:raises ModelNotFound: naming the model and the ones that exist."""
    model = relay.config.models.get(call.requested_model or "")
    if model is None:
        available = ", ".join(sorted(relay.config.models))
        raise ModelNotFound(
            f"The model '{call.requested_model}' does not exist on this relay. Available models: {available}.",
            param="model",
        )
    call.model = model
    return None


async def forward(relay: Relay, call: Call) -> RelayResponse | None:
    assert call.model is not None
    return await send_to(relay, call, call.model)


async def send_to(relay: Relay, call: Call, model: ModelConfig) -> RelayResponse:
    """One attempt at ``model``: translate, send, and translate the answer back.

    :raises UpstreamError: when the provider fails; nothing has reached the caller then.
    """
    provider = relay.providers[model.provider]
    translation = translate.pick(call.format.name, provider.format, provider.name)
    upstream_body = translation.request(call.body, model, call.stream)
    call.model = model
    call.provider = provider.name
    call.attempts += 1
    started = time.perf_counter()
    upstream = await provider.send(model, upstream_body, stream=call.stream)
    call.upstream_ms = (time.perf_counter() - started) * 1000.0
    headers = call.headers
    headers["x-relay-provider"] = provider.name
    headers["x-relay-model"] = model.alias
    headers["x-relay-upstream-ms"] = f"{call.upstream_ms:.1f}"
    if upstream.chunks is not None:
        headers["content-type"] = "text/event-stream; charset=utf-8"
        headers["cache-control"] = "no-cache"
        headers["x-accel-buffering"] = "no"
        stream = RelayStream(relay, call, upstream, translation.stream(call.body))
        return RelayResponse(200, headers, stream=stream)
    body, call.usage = translation.response(upstream.body)
    call.cost = cost_of(relay, model, call.usage)
    headers["content-type"] = _JSON
    headers["x-relay-cost-usd"] = f"{call.cost:.8f}"
    return RelayResponse(upstream.status, headers, body)
