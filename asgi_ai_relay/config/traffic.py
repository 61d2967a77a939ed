"""Readers of the sections that shape traffic: ``[timeouts]``, ``[http]``, ``[storage]``,
``[limits]``, ``[queue]``, ``[retry]``, ``[breaker]``, ``[routing]``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigurationError
from .egress import EGRESS_KEYS, EgressSettings, check_proxy_url
from .schema import (
    BreakerSettings,
    HttpSettings,
    ModelConfig,
    ProviderConfig,
    RetrySettings,
    RoutingConfig,
    StorageConfig,
    Timeouts,
    VirtualModel,
)
from .settings import LimitConfig, LimitsConfig, QueueConfig
from .table import _Table


class _TrafficReader(_Table):
    """Mixin of :class:`~.reader._Reader`: the traffic sections."""

    def timeouts(self) -> Timeouts:
        self.only("connect", "read", "stream_idle", "pool", "total", "first_byte")
        d = Timeouts()
        return Timeouts(
            connect=self.number("connect", d.connect),
            read=self.number("read", d.read),
            stream_idle=self.number("stream_idle", d.stream_idle),
            pool=self.number("pool", d.pool),
            total=self.number("total", d.total),
            first_byte=self.number("first_byte", d.first_byte),
        )

    def http(self) -> HttpSettings:
        self.only(
            "client", "max_connections", "max_keepalive", "keepalive_expiry", "max_response_bytes", "max_error_bytes",
            "max_line_bytes", "trust_env", *EGRESS_KEYS,
        )
        d = HttpSettings()
        return HttpSettings(
            client=self.choice("client", (d.client, "aiohttp", "httpx")),
            max_connections=self.integer("max_connections", d.max_connections),
            max_keepalive=self.integer("max_keepalive", d.max_keepalive, minimum=0),
            keepalive_expiry=self.number("keepalive_expiry", d.keepalive_expiry),
            max_response_bytes=self.integer("max_response_bytes", d.max_response_bytes),
            max_error_bytes=self.integer("max_error_bytes", d.max_error_bytes),
            max_line_bytes=self.integer("max_line_bytes", d.max_line_bytes),
            trust_env=self.get("trust_env", bool, d.trust_env),
            egress=self.egress(),
        )

    def egress(self) -> EgressSettings:
        """The proxy and TLS keys of this table (its ``only`` lists :data:`EGRESS_KEYS`).

        :raises ConfigurationError: for a proxy that is not ``http://host:port`` or a path that
            does not exist.
        """
        proxy = self.secret("proxy")
        if proxy is not None and proxy.get():
            check_proxy_url(proxy.get(), self.key("proxy"))
        client_cert = self._path("client_cert", directory=False)
        client_key = self._path("client_key", directory=False)
        if client_key is not None and client_cert is None:
            raise ConfigurationError(f"{self.key('client_key')}: needs client_cert as well")
        return EgressSettings(
            proxy=proxy,
            ca_bundle=self._path("ca_bundle", directory=True),
            verify=self.get("verify", bool, None),
            client_cert=client_cert,
            client_key=client_key,
        )

    def _path(self, name: str, *, directory: bool) -> str | None:
        value: str | None = self.get(name, str, None)
        if value is None:
            return None
        path = os.path.expanduser(value)
        if not (os.path.isfile(path) or (directory and os.path.isdir(path))):
            raise ConfigurationError(f"{self.key(name)}: no such {'file or directory' if directory else 'file'}: {value}")
        return path

    def storage(self) -> StorageConfig:
        self.only("ledger", "cache", "limits", "breakers", "slots", "budgets", "ledger_required", "responses", "keys")
        d = StorageConfig()
        budgets = self.get("budgets", str, d.budgets)
        if budgets != "limits" and budgets.partition("://")[0] not in ("memory", "redis", "rediss", "redis+cluster", "rediss+cluster"):
            raise ConfigurationError(f"{self.key('budgets')}: \"limits\", memory:// or a redis:// URI, not {budgets!r}")
        return StorageConfig(
            ledger=self.get("ledger", str, d.ledger),
            cache=self.get("cache", str, d.cache),
            limits=self.get("limits", str, d.limits),
            breakers=self.get("breakers", str, d.breakers),
            slots=self.get("slots", str, d.slots),
            budgets=budgets,
            responses=self.get("responses", str, d.responses),
            keys=self.get("keys", str, d.keys),
            ledger_required=self.get("ledger_required", bool, d.ledger_required),
        )

    def limit(self) -> LimitConfig:
        self.only("rpm", "tpm", "burst", "token_burst")
        return LimitConfig(
            rpm=self.integer("rpm", 0, minimum=0),
            tpm=self.integer("tpm", 0, minimum=0),
            burst=self.integer("burst", 0, minimum=0),
            token_burst=self.integer("token_burst", 0, minimum=0),
        )

    def named_limits(self, name: str, known: Mapping[str, Any] | None) -> dict[str, LimitConfig]:
        table = self.sub(name)
        for key in table.data:
            if known is not None and key not in known:
                raise ConfigurationError(f"{table.key(key)}: unknown {name[:-1]} {key!r}")
        return {key: table.sub(key).limit() for key in table.data}

    def limits(self, providers: Mapping[str, ProviderConfig], models: Mapping[str, ModelConfig]) -> LimitsConfig:
        self.only("global", "caller", "model", "provider", "callers", "models", "providers", "estimated_output_tokens",
                  "tokenizer")
        return LimitsConfig(
            everyone=self.sub("global").limit(),
            caller=self.sub("caller").limit(),
            model=self.sub("model").limit(),
            provider=self.sub("provider").limit(),
            callers=self.named_limits("callers", None),
            models=self.named_limits("models", models),
            providers=self.named_limits("providers", providers),
            estimated_output_tokens=self.integer("estimated_output_tokens", 256, minimum=0),
            tokenizer=self.choice("tokenizer", ("estimate", "tiktoken")),
        )

    def queue(self) -> QueueConfig:
        self.only("max_in_flight", "per_provider", "max_queue", "max_wait", "on_limit", "fail_mode", "priority_header")
        return QueueConfig(
            max_in_flight=self.integer("max_in_flight", 0, minimum=0),
            per_provider=self.integer("per_provider", 0, minimum=0),
            max_queue=self.integer("max_queue", 1000, minimum=0),
            max_wait=self.number("max_wait", 30.0),
            on_limit=self.choice("on_limit", ("queue", "reject")),
            fail_mode=self.choice("fail_mode", ("open", "closed")),
            priority_header=self.get("priority_header", bool, False),
        )

    def retry(self, base: RetrySettings) -> RetrySettings:
        self.only("max_attempts", "base_delay", "max_delay", "deadline")
        return RetrySettings(
            max_attempts=self.integer("max_attempts", base.max_attempts),
            base_delay=self.number("base_delay", base.base_delay),
            max_delay=self.number("max_delay", base.max_delay),
            deadline=self.number("deadline", base.deadline),
        )

    def breaker(self) -> BreakerSettings:
        self.only("failure_threshold", "failure_rate", "min_requests", "window", "cooldown", "half_open_probes")
        d = BreakerSettings()
        rate = float(self.get("failure_rate", (int, float), d.failure_rate))
        if not 0 <= rate <= 1:
            raise ConfigurationError(f"{self.key('failure_rate')}: between 0 and 1 (0 turns it off)")
        return BreakerSettings(
            failure_threshold=self.integer("failure_threshold", d.failure_threshold),
            failure_rate=rate,
            min_requests=self.integer("min_requests", d.min_requests),
            window=self.number("window", d.window),
            cooldown=self.number("cooldown", d.cooldown),
            half_open_probes=self.integer("half_open_probes", d.half_open_probes),
        )

    def routing(self, models: Mapping[str, ModelConfig]) -> RoutingConfig:
        self.only("virtual", "affinity", "affinity_ttl", "session_headers")
        table = self.sub("virtual")
        virtual = {}
        for name in table.data:
            if name in models:
                raise ConfigurationError(f"{table.key(name)}: a model with this name exists")
            item = table.sub(name)
            item.only("models", "min_tier", "needs")
            candidates = item.names("models", ())
            for candidate in candidates:
                if candidate not in models:
                    raise ConfigurationError(f"{item.key('models')}: unknown model {candidate!r}")
            virtual[name] = VirtualModel(name, candidates, item.integer("min_tier", 1), item.capabilities("needs"))
        headers = tuple(h.lower() for h in self.names("session_headers", ()))
        return RoutingConfig(virtual, self.get("affinity", bool, True), self.number("affinity_ttl", 3600.0), headers)
