"""One call to one provider: :func:`send_to` translates the request to the provider's format,
sends it and translates the answer back (a stream is handed on as a :class:`RelayStream`);
:func:`count_tokens` asks the provider to count a prompt. :mod:`.route` decides which model
each call goes to and what happens when it fails.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import orjson

from ..tokens import prompt_tokens
from ..types import RelayResponse
from . import translate
from .responses_passthrough import ResponsesPassThrough
from .stream import RelayStream
from .usage import cost_of

if TYPE_CHECKING:
    from ..call import Call
    from ..config import ModelConfig
    from ..relay import Relay

__all__ = ["count_tokens", "send_to"]

_JSON = "application/json"
#: Responses requests to a provider that serves the Responses API itself.
_NATIVE: translate.Translation = ResponsesPassThrough()


async def send_to(relay: Relay, call: Call, model: ModelConfig) -> RelayResponse:
    """One attempt at ``model``: translate, send, and translate the answer back.

    :raises UpstreamError: when the provider fails; nothing has reached the caller then.
    """
    provider = relay.providers[model.provider]
    native = provider.native_responses and call.format.name == "responses"
    translation = _NATIVE if native else translate.pick(call.format.name, provider.format, provider.name)
    upstream_body = translation.request(call.body, model, call.stream)
    call.model = model
    call.provider = provider.name
    call.attempts += 1
    started = time.perf_counter()
    forwarded = _forwarded(call, translation.forward_headers) if translation.forward_headers else None
    if call.trace is not None:  # only a traced call carries more (its traceparent)
        forwarded = relay.telemetry.upstream_headers(call, forwarded)
    send = provider.send_responses if native else provider.send
    upstream = await send(model, upstream_body, stream=call.stream, headers=forwarded)
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


def _forwarded(call: Call, names: tuple[str, ...]) -> dict[str, str]:
    """The inbound headers a translation sends on (never credentials: see ``forward_headers``)."""
    headers = call.request.headers
    return {name: headers[name] for name in names if name in headers}


async def count_tokens(relay: Relay, call: Call) -> RelayResponse | None:
    """``POST /v1/messages/count_tokens``: asked of an Anthropic provider; for every other one
    counted locally (the relay's token estimate, or tiktoken when ``limits.tokenizer`` says so),
    so a client's context meter costs no upstream call. ``x-relay-token-count`` says which
    (``provider``, ``estimate`` or ``tiktoken``); nothing is charged to limits or budgets.
    """
    assert call.model is not None
    model = call.model
    provider = relay.providers[model.provider]
    counter = getattr(provider, "count_tokens", None)
    call.provider = provider.name
    call.headers["x-relay-provider"] = provider.name
    call.headers["content-type"] = _JSON
    if counter is None:
        tokenizer = relay.config.limits.tokenizer
        call.headers["x-relay-token-count"] = tokenizer
        counted = prompt_tokens(call.body, tokenizer)
        return RelayResponse(200, call.headers, orjson.dumps({"input_tokens": counted}))
    body = {k: v for k, v in call.body.items() if k not in ("max_tokens", "stream")}
    body["model"] = model.upstream
    call.attempts += 1
    headers = _forwarded(call, translate.AnthropicPassThrough.forward_headers)
    upstream = await counter(model, body, headers)
    call.headers["x-relay-token-count"] = "provider"
    return RelayResponse(upstream.status, call.headers, upstream.body)
