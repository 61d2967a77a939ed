"""The relay's own endpoints beside the model routes: models, usage, health, metrics, OpenAPI.

Each is a stage like any other (``async def (relay, call) -> RelayResponse``), listed in the
route table of :class:`~asgi_ai_relay.relay.Relay` after authentication.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from .errors import NotFound, PermissionDenied
from .metrics import CONTENT_TYPE
from .policy import limits_of
from .readiness import asked, ready_report
from .report import query_from
from .report import usage_report as ledger_report
from .types import RelayResponse

if TYPE_CHECKING:
    from .call import Call
    from .relay import Relay

__all__ = ["anthropic_models", "health_report", "probe", "list_models", "metrics_text", "openapi_json", "usage_report"]


async def list_models(relay: Relay, call: Call) -> RelayResponse:
    """``GET /v1/models``: OpenAI's list shape, or Anthropic's when the caller sends
    ``anthropic-version`` (Claude Code's model discovery through a gateway); the models a caller
    with limits of its own may not call are left out of both."""
    if "anthropic-version" in call.request.headers:
        return relay.json_response(call, anthropic_models(relay, call, dict(parse_qsl(call.request.query))))
    data = []
    limits = limits_of(call.caller)
    for alias, model in relay.config.models.items():
        if limits is not None and not limits.allows(alias):
            continue
        multiplier = relay.config.providers[model.provider].price_multiplier
        data.append(
            {
                "id": alias,
                "object": "model",
                "created": 0,
                "owned_by": model.provider,
                "provider": model.provider,
                "upstream": model.upstream,
                "kind": model.kind,
                **({"dimensions": model.dimensions} if model.dimensions is not None else {}),
                "pricing": {
                    "currency": "USD",
                    "unit": "per_million_tokens",
                    "input": str(model.price.input * multiplier),
                    "output": str(model.price.output * multiplier),
                    "cached_input": str((model.price.cached_input if model.price.cached_input is not None else model.price.input) * multiplier),
                },
            }
        )
    return relay.json_response(call, {"object": "list", "data": data})


def anthropic_models(relay: Relay, call: Call, params: dict[str, str]) -> dict[str, Any]:
    """The chat models the caller may call, in Anthropic's list shape, paged by ``limit``
    (1-1000, default 20), ``after_id`` and ``before_id`` as Anthropic pages them."""
    limits = limits_of(call.caller)
    ids = [alias for alias, model in relay.config.models.items()
           if model.kind == "chat" and (limits is None or limits.allows(alias))]
    after, before = params.get("after_id"), params.get("before_id")
    limit = params.get("limit", "20")
    size = min(max(int(limit), 1), 1000) if limit.isdigit() else 20
    if after in ids:
        ids = ids[ids.index(after) + 1:]
    if before in ids:  # the page just before it
        ids = ids[: ids.index(before)]
        page = ids[-size:]
    else:
        page = ids[:size]
    data = [{"type": "model", "id": alias, "display_name": alias, "created_at": "1970-01-01T00:00:00Z"} for alias in page]
    return {"data": data, "has_more": len(page) < len(ids), "first_id": page[0] if page else None,
            "last_id": page[-1] if page else None}


async def probe(relay: Relay, call: Call) -> RelayResponse:
    """``HEAD`` / ``GET`` on the prefix root: 200, for clients that probe their base URL before
    the first call (Claude Code does). It needs no key and says nothing but that the relay is there."""
    call.headers["content-type"] = "application/json"
    body = b"" if call.request.method == "HEAD" else b'{"object":"relay","status":"ok"}'
    return RelayResponse(200, call.headers, body)


async def usage_report(relay: Relay, call: Call) -> RelayResponse:
    """Usage from the ledger: ``?caller=&model=&key=&team=&from=&to=&group_by=model,day,key&compare=catalog``.
    A caller that is not an admin reads its own rows only (``key``/``team`` narrow them further).

    :raises PermissionDenied: when a caller that is not an admin asks for another's usage.
    """
    params = dict(parse_qsl(call.request.query))
    caller = call.caller
    if not caller.admin:
        if params.get("caller", caller.id) != caller.id:
            raise PermissionDenied("Only an admin caller may read another caller's usage.")
        params["caller"] = caller.id
    query = query_from(params, tuple(sorted(relay.model_endpoints)))
    group_by = [g for g in params.get("group_by", "").split(",") if g]
    report = await asyncio.to_thread(ledger_report, relay.config, relay.ledger, query, group_by, params.get("compare") or None)
    return relay.json_response(call, report)


async def metrics_text(relay: Relay, call: Call) -> RelayResponse:
    if relay.metrics is None:
        raise NotFound("Metrics are off (set metrics.enabled and install the 'metrics' extra).")
    call.headers["content-type"] = CONTENT_TYPE
    return RelayResponse(200, call.headers, await relay.metrics.scrape())


async def openapi_json(relay: Relay, call: Call) -> RelayResponse:
    call.headers["content-type"] = "application/json"
    return RelayResponse(200, call.headers, relay.openapi)


async def health_report(relay: Relay, call: Call) -> RelayResponse:
    if asked(call.request.query):  # ?ready: the probe's view (503 when not ready)
        return await ready_report(relay, call)
    return relay.json_response(call, await relay.router.health())
