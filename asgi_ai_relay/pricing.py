"""Money: exact decimal costs from token counts, other price lists, the reporting currency,
and token estimates for answers that came without usage.

All costs are USD :class:`~decimal.Decimal`; :func:`to_currency` converts for reports only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from operator import attrgetter
from typing import Any

from .config import ModelConfig, Price, RelayConfig
from .tokens import answer_tokens, output_tokens, prompt_tokens
from .types import Usage

__all__ = ["CATALOG", "cost_at", "estimate_usage", "list_price", "model_cost", "price_for", "to_currency"]

_MILLION = Decimal(1_000_000)
_ZERO = Decimal(0)
#: The classes priced apart from plain input and output, all 0 in most usage.
_CLASSES_OF = attrgetter("cached_tokens", "cache_creation_tokens", "cache_write_1h_tokens", "audio_input_tokens",
                         "image_input_tokens", "web_search_requests")
_NO_CLASSES = (0, 0, 0, 0, 0, 0)

#: The name of the built-in comparison list: the catalog prices without provider multipliers.
CATALOG = "catalog"


def price_for(price: Price, usage: Usage) -> tuple[Price, str | None]:
    """The price ``usage`` is billed at and the rule that chose it (``None``: the flat rate):
    the tier the provider says it served (``tier:flex``), then, above the price's
    ``long_context_above`` prompt tokens (cached and cache-written included), its
    long-context price for the whole request (``long_context``; ``tier:flex+long_context``)."""
    rules: list[str] = []
    tier = usage.service_tier
    if tier is not None and tier in price.tiers:
        price = price.tiers[tier]
        rules.append(f"tier:{tier}")
    above = price.long_context_above
    if above is not None and price.long_context is not None and usage.prompt_tokens > above:
        price = price.long_context
        rules.append("long_context")
    return price, "+".join(rules) or None


def cost_at(price: Price, usage: Usage | None, multiplier: Decimal = Decimal(1)) -> Decimal:
    """USD for ``usage`` at ``price`` (after its tier and long-context rules, see
    :func:`price_for`): each token class at its own price per million tokens (uncached input,
    cache reads, cache writes at five minutes and at one hour, audio and image input, output
    with its reasoning), web searches at their price per call, all times ``multiplier``. A
    class without a price of its own is billed at the input price (one-hour writes at the
    cache-write price when there is one)."""
    if usage is None:
        return _ZERO
    price = price_for(price, usage)[0] if price.tiers or price.long_context is not None else price
    prompt = usage.prompt_tokens
    base = price.input
    write_price = base if price.cache_write is None else price.cache_write
    if _CLASSES_OF(usage) == _NO_CLASSES and prompt >= 0:
        # Most usage: no cache reads or writes, audio, image nor searches. Every class below is
        # then 0, and this is the sum below term for term (a zero at each class's price keeps
        # the exponent that price gives the sum: the same Decimal to the last digit).
        tokens = (
            prompt * base
            + 0 * (base if price.cached_input is None else price.cached_input)
            + 0 * write_price
            + usage.completion_tokens * price.output
        )
        total = tokens / _MILLION
        return total * multiplier if multiplier != 1 else total
    cached = min(usage.cached_tokens, prompt)
    written = min(usage.cache_creation_tokens, prompt - cached)
    hour = min(usage.cache_write_1h_tokens, written)
    audio = min(usage.audio_input_tokens, prompt - cached - written)
    image = min(usage.image_input_tokens, prompt - cached - written - audio)
    tokens = (
        (prompt - cached - written - audio - image) * base
        + cached * (base if price.cached_input is None else price.cached_input)
        + (written - hour) * write_price
        + usage.completion_tokens * price.output
    )
    if hour:
        tokens += hour * (write_price if price.cache_write_1h is None else price.cache_write_1h)
    if audio:
        tokens += audio * (base if price.audio_input is None else price.audio_input)
    if image:
        tokens += image * (base if price.image_input is None else price.image_input)
    total = tokens / _MILLION
    if usage.web_search_requests and price.web_search:
        total += usage.web_search_requests * price.web_search
    return total * multiplier if multiplier != 1 else total


def model_cost(config: RelayConfig, model: ModelConfig, usage: Usage | None) -> Decimal:
    """What ``usage`` on ``model`` costs through its configured provider."""
    return cost_at(model.price, usage, config.providers[model.provider].price_multiplier)


def list_price(config: RelayConfig, list_name: str, model: str | None) -> Price | None:
    """``model``'s price in the comparison list ``list_name`` (``catalog`` or one of
    ``pricing.lists``); ``None`` when that list does not price the model."""
    if model is None:
        return None
    if list_name == CATALOG:
        known = config.models.get(model)
        return known.price if known is not None else None
    return config.pricing.lists.get(list_name, {}).get(model)


def to_currency(config: RelayConfig, usd: Decimal) -> Decimal:
    return usd * config.pricing.exchange_rate


def estimate_usage(
    body: Mapping[str, Any], output: Iterable[bytes], stream: bool, tokenizer: str = "estimate"
) -> Usage:
    """Token counts for an answer whose provider reported none, marked ``estimated``: the
    prompt's and those of the content the caller received (see :mod:`asgi_ai_relay.tokens`)."""
    completion = output_tokens(output, tokenizer) if stream else answer_tokens(b"".join(output), tokenizer)
    return Usage(prompt_tokens=prompt_tokens(body, tokenizer), completion_tokens=completion, estimated=True)
