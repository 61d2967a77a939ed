"""Pricing and recording a finished request: tokens, cost, the ledger row and the log line."""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from decimal import Decimal
from operator import attrgetter
from typing import TYPE_CHECKING, Any

import orjson

from .. import redact
from ..paths import REFUSED
from ..pricing import estimate_usage, model_cost, price_for
from ..storage import LedgerRow
from ..storage.base import ROUTE_CHARS
from ..types import Usage
from .usage_check import check_usage

if TYPE_CHECKING:
    from ..call import Call, Sent
    from ..config import ModelConfig
    from ..relay import Relay

__all__ = ["bill_attempt", "cost_of", "percentile", "price", "printable", "record"]

logger = logging.getLogger("asgi_ai_relay")

_ZERO = Decimal(0)
#: The usage of a request that has none (nothing reported, nothing estimated).
_NONE = Usage()
#: A usage's token classes priced apart and its service tier, in the ledger row's order.
_CLASSES_OF = attrgetter(
    "cache_write_5m_tokens", "cache_write_1h_tokens", "reasoning_tokens", "audio_input_tokens", "image_input_tokens",
    "web_search_requests", "service_tier",
)


def cost_of(relay: Relay, model: ModelConfig, usage: Usage | None) -> Decimal:
    """USD, exact, through the model's provider (see :func:`asgi_ai_relay.pricing.cost_at`)."""
    return model_cost(relay.config, model, usage)


def price(relay: Relay, call: Call) -> None:
    """Fill in usage (estimated when the provider gave none, or when a stream was cut short),
    check it against the relay's own count, and the cost (with what failed attempts the
    provider billed), or the saving for a hit."""
    model = call.model
    if model is None:
        call.cost += call.attempts_cost
        return
    usage = call.usage
    if call.cache != "hit" and call.endpoint in relay.model_endpoints:
        if usage is not None:
            check_usage(relay, call, usage)
        if call.status != 200:
            if call.sent is not None and call.sent.total:
                usage = call.usage = _cut_short(call, call.sent, relay.config.limits.tokenizer)
        elif usage is None and call.output is not None:
            usage = call.usage = estimate_usage(call.body, call.output, call.stream, relay.config.limits.tokenizer)
    if usage is None:
        call.cost += call.attempts_cost
        return
    if call.cache == "hit":
        call.cost = _ZERO
        call.saved = model_cost(relay.config, model, usage)
    elif not call.cost:
        call.cost = model_cost(relay.config, model, usage)
    call.cost += call.attempts_cost


def bill_attempt(relay: Relay, call: Call, usage: Usage | None) -> None:
    """A failed attempt whose provider reported usage before failing (a stream that broke
    after its ``message_start`` or first chunk, before anything reached the caller): that
    usage is what the provider bills, so its cost goes in the attempt's log entry and in the
    request's cost."""
    if usage is None or call.model is None:
        return
    cost = cost_of(relay, call.model, usage)
    if cost:
        call.attempts_cost += cost
        if call.attempt_log:
            call.attempt_log[-1]["cost_usd"] = str(cost)


def _cut_short(call: Call, sent: Sent, tokenizer: str) -> Usage:
    """A stream that ended early (the caller left, the provider dropped it) used the prompt and
    what it had generated: what the provider reported so far, completed by an estimate of the
    pieces sent (scaled up from the sample when the stream outgrew it)."""
    guess = estimate_usage(call.body, sent.pieces, True, tokenizer)
    completion = guess.completion_tokens * sent.total // max(sent.sampled, 1)
    told = call.usage
    if told is None:
        return Usage(guess.prompt_tokens, completion, estimated=True)
    return replace(
        told,
        prompt_tokens=told.prompt_tokens or guess.prompt_tokens,
        completion_tokens=max(told.completion_tokens, completion),
        estimated=True,
    )


def percentile(ordered: list[float], p: int) -> float | None:
    """Nearest-rank percentile."""
    if not ordered:
        return None
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return round(ordered[rank - 1], 3)


def printable(value: object) -> str:
    """A caller-supplied value made safe for one log line: short, no control characters."""
    text = str(value)[:100]
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _escaped(text: str) -> str:
    """``text`` with control characters escaped and spaces encoded (one log field)."""
    if not text.isprintable():
        text = text.encode("unicode_escape").decode("ascii")
    return text.replace(" ", "%20")


def unrouted(relay: Relay, call: Call) -> tuple[str, str] | None:
    """The method and the sanitised path of a request no route matched (``None`` for one that
    matched): printable, at most :data:`ROUTE_CHARS` characters, without its query string
    (never part of ``path``) and with the upstream keys scrubbed out."""
    if call.endpoint != "unknown":
        return None
    given = call.request.path
    if given == REFUSED:  # what it was is not kept: it was not a path the relay serves
        return _escaped(call.request.method[:16])[:16], "<non-canonical>"
    path = _escaped(redact.scrub(relay.config.prefix + given)[:ROUTE_CHARS])[:ROUTE_CHARS]
    return _escaped(call.request.method[:16])[:16], path


def _text(value: object) -> str | None:
    """A key id or a team name as stored: ``None`` for none, else the text whole (the host's
    own names, as the spend counters and filters spell them; escaped only when not printable)."""
    if value is None or value == "":
        return None
    text = str(value)
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def record(relay: Relay, call: Call) -> None:
    """Ledger row, totals and log line for a finished request (priced); runs once per request."""
    usage = call.usage or _NONE
    latency = call.elapsed_ms()
    error = call.error
    model = call.model
    route = unrouted(relay, call) if call.endpoint == "unknown" else None
    extra = call.caller.extra
    ttfb, upstream = call.ttfb_ms, call.upstream_ms
    # price_rule (``None``: the flat rate, which most prices have only), counted_prompt_tokens,
    # usage_flag, route, key_id, team: what only some requests have is looked at only for them.
    rest: tuple[Any, ...] = (
        price_for(model.price, usage)[1]
        if model is not None and usage is not _NONE and (model.price.tiers or model.price.long_context is not None)
        else None,
        call.counted_prompt,
        call.usage_flag,
        f"{route[0]} {route[1]}" if route is not None else None,
        _text(extra.get("key_id")) if extra else None,
        _text(extra.get("team")) if extra else None,
    )
    # The row's fields by position, in its order: a call of 36 keywords (or of more than 29
    # values before a starred one) first builds a dict (a list) of them, a step each.
    relay.ledger.record(
        LedgerRow(
            call.ts,
            call.request_id,
            call.caller.id,
            call.endpoint,
            # model, provider, upstream_model, stream, status, error_type
            model.alias if model is not None else (printable(call.requested_model) if call.requested_model is not None else None),
            call.provider,
            model.upstream if model is not None and call.provider else None,
            call.stream,
            call.status,
            (error.code or error.error_type) if error is not None else None,
            # prompt, completion and cached tokens, cost_usd, cache_hit, latency_ms, ttfb_ms, upstream_ms
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.cached_tokens,
            call.cost,
            call.cache == "hit",
            round(latency, 3),
            round(ttfb, 3) if ttfb is not None else None,
            round(upstream, 3) if upstream is not None else None,
            # attempts, estimated, attempt_log, cache_saved_usd
            call.attempts,
            usage.estimated,
            orjson.dumps(call.attempt_log).decode() if call.attempt_log else None,
            call.saved,
            *_CLASSES_OF(usage),
            *rest,
        )
    )
    log = relay.logger
    if relay.config.log_requests and log.isEnabledFor(logging.INFO):
        log.info(
            "request_id=%s caller=%s endpoint=%s model=%s provider=%s status=%d latency_ms=%.1f "
            "prompt_tokens=%d completion_tokens=%d cost_usd=%s%s%s",
            call.request_id,
            call.caller.id,
            call.endpoint,
            call.model.alias if call.model is not None else printable(call.requested_model),
            call.provider,
            call.status,
            latency,
            usage.prompt_tokens,
            usage.completion_tokens,
            call.cost,
            (f" error={error.code or error.error_type}" if error is not None else "")
            + (f" usage_flag={call.usage_flag}" if call.usage_flag else "")
            + (f" method={route[0]} path={route[1]}" if route is not None else ""),
            relay.telemetry.content.suffix(call),
            extra={"request_id": call.request_id},
        )
