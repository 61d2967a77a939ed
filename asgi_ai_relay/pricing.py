"""Money: exact decimal costs from token counts, other price lists, the reporting currency,
and token estimates for answers that came without usage.

All costs are USD :class:`~decimal.Decimal`; :func:`to_currency` converts for reports only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from .config import ModelConfig, Price, RelayConfig
from .tokens import answer_tokens, output_tokens, prompt_tokens
from .types import Usage

__all__ = ["CATALOG", "cost_at", "estimate_usage", "list_price", "model_cost", "to_currency"]

_MILLION = Decimal(1_000_000)
_ZERO = Decimal(0)

#: The name of the built-in comparison list: the catalog prices without provider multipliers.
CATALOG = "catalog"


def cost_at(price: Price, usage: Usage | None, multiplier: Decimal = Decimal(1)) -> Decimal:
    """USD for ``usage`` at ``price``: uncached prompt tokens at the input price, cache reads at
    the cached-input price and cache writes at the cache-write price (each the input price when
    not set), completion tokens at the output price, all times ``multiplier``."""
    if usage is None:
        return _ZERO
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    written = min(usage.cache_creation_tokens, usage.prompt_tokens - cached)
    cached_price = price.input if price.cached_input is None else price.cached_input
    write_price = price.input if price.cache_write is None else price.cache_write
    total = (
        (usage.prompt_tokens - cached - written) * price.input
        + cached * cached_price
        + written * write_price
        + usage.completion_tokens * price.output
    ) / _MILLION
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
