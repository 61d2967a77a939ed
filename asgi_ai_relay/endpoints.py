"""The relay's own endpoints beside the model routes: models, usage, health, metrics, OpenAPI.

Each is a stage like any other (``async def (relay, call) -> RelayResponse``), listed in the
route table of :class:`~asgi_ai_relay.relay.Relay` after authentication.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING
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

__all__ = ["health_report", "list_models", "metrics_text", "openapi_json", "usage_report"]


async def list_models(relay: Relay, call: Call) -> RelayResponse:
    """The models, those a caller with limits of its own may not call left out."""
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


async def usage_report(relay: Relay, call: Call) -> RelayResponse:
    """Usage from the ledger: ``?caller=&model=&from=&to=&group_by=model,day&compare=catalog``.

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
