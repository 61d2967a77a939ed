"""Gemini-native routes: ``{prefix}/v1beta/models/{model}:generateContent``,
``:streamGenerateContent`` (``?alt=sse`` for server-sent events, otherwise a JSON array),
``:countTokens``, and ``GET /v1beta/models`` (and ``/v1beta/models/{model}``).

The model and the action are in the URL, not the body: :func:`target` reads them after
parsing, so the model stages run as for every other format. The caller's key comes as
``x-goog-api-key`` or ``?key=`` and is the caller's relay key (see
:func:`asgi_ai_relay.stages.auth.presented_key`); it never goes upstream. A Gemini provider gets
the body as sent (the model rewritten in its URL); every other provider gets it through the
hub (:mod:`asgi_ai_relay.protocol.gemini_inbound`).

``streamGenerateContent`` without ``alt=sse`` is answered whole, as a JSON array holding one
``GenerateContentResponse`` (what the API's array stream is, in one piece).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson

from ..errors import InvalidRequest, NotFound
from ..policy import limits_of
from ..tokens import prompt_tokens
from ..types import RelayResponse
from . import route
from .usage import printable

if TYPE_CHECKING:
    from ..call import Call
    from ..config import ModelConfig
    from ..relay import Relay

__all__ = ["count_tokens", "forward", "get_model", "list_models", "model_path", "target"]

_METHODS = ["generateContent", "streamGenerateContent", "countTokens"]


def model_path(path: str) -> tuple[str, str]:
    """``/v1beta/models/gemini-2.5-flash:generateContent`` -> ``("gemini-2.5-flash", "generateContent")``."""
    name, _, action = path.rpartition("/")[2].rpartition(":")
    return name.removeprefix("models/"), action


def _query(call: Call) -> dict[str, str]:
    return dict(parse_qsl(call.request.query))


async def target(relay: Relay, call: Call) -> RelayResponse | None:
    """The model and the kind of answer from the URL (the body's own ``model`` / ``stream`` are
    not Gemini's and are dropped).

    :raises InvalidRequest: when the URL names no model.
    """
    name, action = model_path(call.request.path)
    if not name:
        raise InvalidRequest("The URL names no model: use /v1beta/models/{model}:" + action + ".", param="model")
    body = call.body
    body.pop("model", None)
    body.pop("stream", None)
    call.requested_model = name
    call.stream = action == "streamGenerateContent" and _query(call).get("alt") == "sse"
    if call.stream:
        body["stream"] = True  # the hub's mark; the Gemini pass-through leaves it out
    return None


async def forward(relay: Relay, call: Call) -> RelayResponse | None:
    """:func:`route.forward`; a ``streamGenerateContent`` asked without ``alt=sse`` gets its
    whole answer as a JSON array of one response."""
    response = await route.forward(relay, call)
    if response is not None and response.stream is None and call.endpoint == "streamGenerateContent" and response.status == 200:
        response.body = b"[" + response.body + b"]"
    return response


async def count_tokens(relay: Relay, call: Call) -> RelayResponse | None:
    """``:countTokens``: asked of a Gemini provider, counted locally for every other one (the
    relay's token estimate, or tiktoken when configured), never charged to limits or budgets.
    ``x-relay-token-count`` says which (``provider``, ``estimate`` or ``tiktoken``)."""
    assert call.model is not None
    model = call.model
    provider = relay.providers[model.provider]
    call.provider = provider.name
    call.headers["x-relay-provider"] = provider.name
    body = {k: v for k, v in call.body.items() if k not in ("model", "stream")}
    count_url = getattr(provider, "count_url", None)
    if provider.format == "gemini" and count_url is not None:
        inner = body.get("generateContentRequest")
        if isinstance(inner, dict):
            body["generateContentRequest"] = {**inner, "model": "models/" + model.upstream.removeprefix("models/")}
        call.attempts += 1
        upstream = await provider.post(count_url(model), model, body, stream=False)  # type: ignore[attr-defined]
        call.headers["x-relay-token-count"] = "provider"
        return _json(relay, call, upstream.body, upstream.status)
    inner = body.get("generateContentRequest")
    counted = prompt_tokens(inner if isinstance(inner, dict) and "contents" not in body else body, relay.config.limits.tokenizer)
    call.headers["x-relay-token-count"] = relay.config.limits.tokenizer
    return _json(relay, call, orjson.dumps({"totalTokens": counted}))


def _json(relay: Relay, call: Call, body: bytes, status: int = 200) -> RelayResponse:
    call.headers["content-type"] = "application/json"
    return RelayResponse(status, call.headers, body)


def _entry(alias: str, model: ModelConfig) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": f"models/{alias}", "baseModelId": alias, "version": "relay", "displayName": alias,
        "description": f"{model.upstream} on {model.provider}", "supportedGenerationMethods": _METHODS,
    }
    if model.max_output_tokens is not None:
        entry["outputTokenLimit"] = model.max_output_tokens
    return entry


async def list_models(relay: Relay, call: Call) -> RelayResponse:
    """``GET /v1beta/models``: the chat models the caller may call, in Gemini's list shape."""
    limits = limits_of(call.caller)
    models = [_entry(alias, m) for alias, m in relay.config.models.items()
              if m.kind == "chat" and (limits is None or limits.allows(alias))]
    return relay.json_response(call, {"models": models})


async def get_model(relay: Relay, call: Call) -> RelayResponse:
    """``GET /v1beta/models/{model}``.

    :raises NotFound: for a model the relay does not serve.
    """
    name = call.request.path.rpartition("/")[2].removeprefix("models/")
    model = relay.config.models.get(name)
    limits = limits_of(call.caller)
    if model is None or model.kind != "chat" or (limits is not None and not limits.allows(name)):
        raise NotFound(f"Model 'models/{printable(name)}' is not found on this relay.", param="model")
    return relay.json_response(call, _entry(name, model))
