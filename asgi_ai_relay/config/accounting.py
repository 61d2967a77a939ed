"""Readers of the sections about money and reporting: prices, ``[cache]``, ``[pricing]``,
``[budgets]``, ``[metrics]``."""

from __future__ import annotations

from decimal import Decimal

from ..errors import ConfigurationError
from .settings import (
    Budget,
    BudgetSettings,
    CacheSettings,
    MetricsSettings,
    Price,
    PricingSettings,
)
from .table import _Table


class _AccountingReader(_Table):
    """Mixin of :class:`~.reader._Reader`: prices and the accounting sections."""

    def price(self, base: Price) -> Price:
        self.only("input", "output", "cached_input", "cache_write")
        return Price(
            input=self.decimal("input", base.input) or Decimal(0),
            output=self.decimal("output", base.output) or Decimal(0),
            cached_input=self.decimal("cached_input", base.cached_input),
            cache_write=self.decimal("cache_write", base.cache_write),
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
        self.only("currency", "exchange_rate", "lists")
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
