"""Readers of the sections about money and reporting: prices, ``[cache]``, ``[pricing]``,
``[budgets]``, ``[metrics]``."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from ..errors import ConfigurationError
from .settings import (
    Budget,
    BudgetSettings,
    CacheSettings,
    MetricsSettings,
    Price,
    PricingSettings,
    UsageCheck,
)
from .table import _Table

_PRICE_KEYS = ("input", "output", "cached_input", "cache_write", "cache_write_1h", "audio_input", "image_input",
               "web_search")


class _AccountingReader(_Table):
    """Mixin of :class:`~.reader._Reader`: prices and the accounting sections."""

    def price(self, base: Price) -> Price:
        """A ``price`` table over ``base`` (what a catalog model already has)."""
        self.only(*_PRICE_KEYS, "long_context", "tiers")
        price = self.long_context(self.price_fields(base))
        tiers = self.sub("tiers")
        found = dict(price.tiers)
        for name in tiers.data:
            tier = tiers.sub(name)
            tier.only(*_PRICE_KEYS, "multiplier", "long_context")
            found[name.lower()] = tier.long_context(tier.price_fields(tier.scaled(replace(price, tiers={}))))
        return replace(price, tiers=found) if found else price

    def long_context(self, price: Price) -> Price:
        """``price`` with the ``long_context`` rule this table names, if any."""
        long = self.sub("long_context")
        if not long.data:
            return price
        long.only(*_PRICE_KEYS, "above", "multiplier")
        if "above" not in long.data:
            raise ConfigurationError(f"{long.key('above')}: required, the prompt tokens above which this price applies")
        start = replace(price, long_context=None, long_context_above=None, tiers={})
        return replace(price, long_context_above=long.integer("above", 1), long_context=long.price_fields(long.scaled(start)))

    def scaled(self, base: Price) -> Price:
        """``base`` times this table's ``multiplier`` (default 1)."""
        multiplier = self.decimal("multiplier", Decimal(1))
        return base.scaled(multiplier) if multiplier is not None and multiplier != 1 else base

    def price_fields(self, base: Price) -> Price:
        """The per-class prices of this table, each defaulting to ``base``'s."""
        return replace(
            base,
            input=self.decimal("input", base.input) or Decimal(0),
            output=self.decimal("output", base.output) or Decimal(0),
            cached_input=self.decimal("cached_input", base.cached_input),
            cache_write=self.decimal("cache_write", base.cache_write),
            cache_write_1h=self.decimal("cache_write_1h", base.cache_write_1h),
            audio_input=self.decimal("audio_input", base.audio_input),
            image_input=self.decimal("image_input", base.image_input),
            web_search=self.decimal("web_search", base.web_search) or Decimal(0),
        )

    def cache(self) -> CacheSettings:
        self.only("mode", "scope", "max_ttl", "max_entry_bytes")
        d = CacheSettings()
        return CacheSettings(
            mode=self.choice("mode", ("deterministic", "all", "off")),
            scope=self.choice("scope", ("shared", "caller")),
            max_ttl=self.integer("max_ttl", d.max_ttl),
            max_entry_bytes=self.integer("max_entry_bytes", d.max_entry_bytes),
        )

    def pricing(self) -> PricingSettings:
        self.only("currency", "exchange_rate", "lists", "usage_check")
        currency = self.get("currency", str, "USD")
        if not currency.isalpha() or len(currency) != 3:
            raise ConfigurationError(f"{self.key('currency')}: a three-letter code such as USD or CNY")
        rate = self.decimal("exchange_rate", Decimal(1))
        if not rate:
            raise ConfigurationError(f"{self.key('exchange_rate')}: must be greater than 0")
        lists = self.sub("lists")
        return PricingSettings(
            currency=currency.upper(),
            exchange_rate=rate,
            lists={name: lists.sub(name).price_list() for name in lists.data},
            usage_check=self.sub("usage_check").usage_check(),
        )

    def usage_check(self) -> UsageCheck:
        self.only("enabled", "tolerance", "slack", "overhead")
        d = UsageCheck()
        return UsageCheck(
            enabled=self.get("enabled", bool, d.enabled),
            tolerance=self.decimal("tolerance", d.tolerance) or Decimal(0),
            slack=self.integer("slack", d.slack, minimum=0),
            overhead=self.integer("overhead", d.overhead, minimum=0),
        )

    def price_list(self) -> dict[str, Price]:
        return {alias: self.sub(alias).price(Price()) for alias in self.data}

    def budgets(self) -> BudgetSettings:
        self.only("default", "callers", "soft_threshold")
        threshold = self.decimal("soft_threshold", Decimal("0.8"))
        if threshold is None or threshold > 1:
            raise ConfigurationError(f"{self.key('soft_threshold')}: a fraction between 0 and 1")
        callers = self.sub("callers")
        return BudgetSettings(
            default=self.sub("default").budget(),
            callers={caller: callers.sub(caller).budget() for caller in callers.data},
            soft_threshold=threshold,
        )

    def budget(self) -> Budget:
        self.only("daily", "monthly")
        return Budget(daily=self.decimal("daily", None), monthly=self.decimal("monthly", None))

    def metrics(self) -> MetricsSettings:
        self.only("enabled")
        return MetricsSettings(enabled=self.get("enabled", bool, True))
