"""The price rules of the shipped catalog beyond its flat rates (:data:`.schema.DEFAULT_MODELS`):
one-hour cache writes, audio input, web searches, long-context steps and service tiers, written
as ``price`` tables and read by the same reader as a user's ``[models.X] price``.

:data:`PRICES_CHECKED` is the day each catalog model's prices were last compared with its
provider's published price list (``None``: not re-checked since it was added). Prices change:
a deployment that bills by the relay's numbers should set its own ``price`` tables.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PRICES_CHECKED", "PRICE_RULES"]

#: alias -> the day its prices were checked against the provider's list (ISO date).
PRICES_CHECKED: dict[str, str | None] = {
    "gpt-4.1": "2026-12-01",
    "claude-sonnet-4.5": "2026-12-01",
    "gemini-2.5-flash": "2026-12-01",
    "deepseek-v3.2": None,
    "text-embedding-3-small": "2026-12-01",
    "text-embedding-3-large": None,
    "gemini-embedding-001": None,
}

#: alias -> a ``price`` table laid over its flat rates (same keys as ``[models.X] price``).
PRICE_RULES: dict[str, dict[str, Any]] = {
    # OpenAI reports the tier it served in the answer's service_tier; Batch and Flex bill half.
    "gpt-4.1": {"tiers": {"flex": {"multiplier": "0.5"}, "batch": {"multiplier": "0.5"}}},
    # Anthropic: 1h cache writes at 2x input; above 200k prompt tokens (input + cache reads and
    # writes) the whole request at the long-context price; $10 per 1,000 web searches;
    # usage.service_tier "batch" at half price.
    "claude-sonnet-4.5": {
        "cache_write_1h": "6.00",
        "web_search": "0.01",
        "long_context": {"above": 200_000, "input": "6.00", "output": "22.50", "cached_input": "0.60",
                         "cache_write": "7.50", "cache_write_1h": "12.00"},
        "tiers": {"batch": {"multiplier": "0.5"}},
    },
    # Gemini bills audio input above text, image and video input.
    "gemini-2.5-flash": {"audio_input": "1.00"},
}
