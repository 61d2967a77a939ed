"""The config reader: the top-level table, API keys, providers and models; the other sections
come from the mixins in :mod:`.traffic` and :mod:`.accounting`."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from decimal import Decimal

from ..errors import ConfigurationError
from .accounting import _AccountingReader
from .cloud import CLOUD_KEYS, default_base_url, read_cloud
from .egress import EGRESS_KEYS
from .observability_reader import _ObservabilityReader
from .schema import (
    DEFAULT_CACHE_WRITE,
    DEFAULT_EMBEDDINGS,
    DEFAULT_MODELS,
    KNOWN_PROVIDERS,
    MODEL_KINDS,
    PROVIDER_KINDS,
    STRATEGIES,
    ApiKey,
    Deployment,
    KeySettings,
    ModelConfig,
    ProviderConfig,
    RelayConfig,
    RetrySettings,
)
from .catalog import PRICE_RULES
from .settings import Price
from .spend_reader import _SpendReader
from .traffic import _TrafficReader


class _Reader(_TrafficReader, _AccountingReader, _SpendReader, _ObservabilityReader):
    """Reads the whole config (``_Reader(data, "").relay()``) and any table within it."""

    def relay(self) -> RelayConfig:
        self.only(
            "prefix", "max_body_bytes", "require_auth", "api_keys", "timeouts", "http",
            "providers", "models", "storage", "log_requests", "default_models", "limits", "queue",
            "retry", "breaker", "routing",
            "cache", "pricing", "budgets", "metrics", "dashboard", "alerts", "keys", "logging", "telemetry",
            "readiness",
        )
        prefix = self.get("prefix", str, "/ai")
        if not prefix.startswith("/") or "//" in prefix or any(c in prefix for c in "?#%\\ "):
            raise ConfigurationError("prefix: must be a path such as /ai")
        providers = self.providers()
        retry = self.sub("retry").retry(RetrySettings())
        models = self.models(providers, retry)
        return RelayConfig(
            prefix=prefix.rstrip("/"),
            max_body_bytes=self.integer("max_body_bytes", 4 * 1024 * 1024),
            require_auth=self.get("require_auth", bool, False),
            api_keys=self.api_keys(),
            timeouts=self.sub("timeouts").timeouts(),
            http=self.sub("http").http(),
            providers=providers,
            models=models,
            storage=self.sub("storage").storage(),
            limits=self.sub("limits").limits(providers, models),
            queue=self.sub("queue").queue(),
            log_requests=self.get("log_requests", bool, True),
            retry=retry,
            breaker=self.sub("breaker").breaker(),
            routing=self.sub("routing").routing(models),
            cache=self.sub("cache").cache(),
            pricing=self.sub("pricing").pricing(),
            budgets=self.sub("budgets").budgets(),
            metrics=self.sub("metrics").metrics(),
            dashboard=self.sub("dashboard").dashboard(),
            alerts=self.sub("alerts").alerts(),
            keys=self.sub("keys").key_settings(),
            logging=self.sub("logging").content_logging(),
            telemetry=self.sub("telemetry").telemetry(),
            readiness=self.sub("readiness").readiness(),
        )

    def api_keys(self) -> tuple[ApiKey, ...]:
        entries = self.get("api_keys", list, [])
        keys = []
        for i, entry in enumerate(entries):
            path = f"{self.key('api_keys')}[{i}]"
            if isinstance(entry, str):
                entry = {"key": entry, "caller": f"key-{i}"}
            item = _Reader(entry, path)
            item.only("key", "hash", "caller", "admin", "priority")
            digest = item.key_digest(path)
            priority = item.get("priority", str, "normal")
            if priority not in ("critical", "high", "normal", "low"):
                raise ConfigurationError(f"{path}.priority: one of critical, high, normal, low")
            keys.append(ApiKey(digest, item.get("caller", str, f"key-{i}"), item.get("admin", bool, False), priority))
        return tuple(keys)

    def key_settings(self) -> KeySettings:
        self.only("secret", "cache_ttl", "caller_limits")
        return KeySettings(self.secret("secret"), self.number("cache_ttl", 5.0), self.get("caller_limits", bool, False))

    def key_digest(self, path: str) -> bytes:
        """The SHA-256 digest of an ``api_keys`` entry: from ``key`` or from ``hash``."""
        if "key" in self.data and "hash" in self.data:
            raise ConfigurationError(f"{path}.hash: give key or hash, not both")
        if "hash" not in self.data and "key" not in self.data:
            raise ConfigurationError(f"{path}.key: required (or hash = \"sha256:...\")")
        if "key" in self.data:
            key = self.secret("key")
            if key is None or not key.get():
                raise ConfigurationError(f"{path}.key: required")
            return hashlib.sha256(key.get().encode("utf-8", "surrogatepass")).digest()
        algorithm, _, hexdigest = self.get("hash", str, "").partition(":")
        try:
            digest = bytes.fromhex(hexdigest)
        except ValueError:
            digest = b""
        if algorithm != "sha256" or len(digest) != 32:
            raise ConfigurationError(f"{path}.hash: expected sha256:<64 hex digits>")
        return digest

    def providers(self) -> dict[str, ProviderConfig]:
        table = self.sub("providers")
        result = {"mock": ProviderConfig(name="mock", kind="mock", base_url="")}
        for name in table.data:
            result[name] = table.sub(name).provider(name)
        return result

    def provider(self, name: str) -> ProviderConfig:
        self.only("kind", "base_url", "api_key", "headers", "price_multiplier", "anthropic_version", *EGRESS_KEYS, *CLOUD_KEYS)
        known_kind, known_url = KNOWN_PROVIDERS.get(name, ("", ""))
        preset_kind, preset_url, cloud = read_cloud(self, name, self.get("kind", str, None))
        if preset_kind:
            known_kind, known_url = preset_kind, preset_url
        kind = self.get("kind", str, known_kind or "openai_compatible")
        if kind not in PROVIDER_KINDS:
            raise ConfigurationError(f"{self.key('kind')}: unknown provider kind {kind!r} (one of {', '.join(PROVIDER_KINDS)})")
        base_url = default_base_url(self, kind, self.get("base_url", str, known_url if kind == known_kind else ""), cloud)
        if kind != "mock" and not base_url.startswith(("http://", "https://")):
            raise ConfigurationError(f"{self.key('base_url')}: required, an http(s) URL")
        return ProviderConfig(
            name=name,
            kind=kind,
            base_url=base_url.rstrip("/"),
            api_key=self.secret("api_key"),
            headers=self.headers("headers"),
            price_multiplier=self.decimal("price_multiplier", Decimal(1)) or Decimal(0),
            anthropic_version=self.get("anthropic_version", str, "2023-06-01"),
            egress=self.egress(),
            cloud=cloud,
        )

    def models(self, providers: Mapping[str, ProviderConfig], retry: RetrySettings) -> dict[str, ModelConfig]:
        result: dict[str, ModelConfig] = {}
        if self.get("default_models", bool, True):
            for alias, (conventional, upstream, p_in, p_out, p_cached) in DEFAULT_MODELS.items():
                # A default model goes to its own provider once that provider is configured,
                # and to the offline mock until then, so the defaults always work.
                provider = conventional if conventional in providers else "mock"
                write = DEFAULT_CACHE_WRITE.get(alias)
                price = Price(Decimal(p_in), Decimal(p_out), Decimal(p_cached), Decimal(write) if write else None)
                if alias in PRICE_RULES:
                    price = _Reader(PRICE_RULES[alias], f"catalog.{alias}.price").price(price)
                result[alias] = ModelConfig(alias, provider, upstream, price)
            for alias, (conventional, upstream, p_in, dimensions) in DEFAULT_EMBEDDINGS.items():
                provider = conventional if conventional in providers else "mock"
                result[alias] = ModelConfig(alias, provider, upstream, Price(Decimal(p_in)), kind="embedding", dimensions=dimensions)
        table = self.sub("models")
        for alias in table.data:
            result[alias] = table.sub(alias).model(alias, providers, result.get(alias), retry)
        for alias, model in result.items():
            for key in ("fallbacks", "context_fallbacks"):
                for fallback in getattr(model, key):
                    if fallback not in result:
                        raise ConfigurationError(f"models.{alias}.{key}: unknown model {fallback!r}")
                    _same_kind(f"models.{alias}.{key}", model, result[fallback])
        return result

    def model(
        self, alias: str, providers: Mapping[str, ProviderConfig], base: ModelConfig | None, retry: RetrySettings
    ) -> ModelConfig:
        self.only(
            "provider", "upstream", "price", "headers", "fallbacks", "default_max_tokens", "context_fallbacks",
            "deployments", "strategy", "retry", "context_window", "tier", "capabilities", "max_output_tokens",
            "kind", "dimensions",
        )
        deployments = self.deployments(alias, providers)
        provider = self.get("provider", str, base.provider if base else (deployments[0].provider if deployments else None))
        if provider is None:
            raise ConfigurationError(f"{self.key('provider')}: required")
        if provider not in providers:
            raise ConfigurationError(f"{self.key('provider')}: unknown provider {provider!r}")
        upstream = self.get("upstream", str, base.upstream if base else (deployments[0].upstream if deployments else alias))
        strategy = self.get("strategy", str, "weighted")
        if strategy not in STRATEGIES:
            raise ConfigurationError(f"{self.key('strategy')}: one of {', '.join(STRATEGIES)}")
        context_window = self.get("context_window", int, base.context_window if base else None)
        return ModelConfig(
            alias=alias,
            provider=provider,
            upstream=upstream,
            price=self.sub("price").price(base.price if base else Price()),
            headers=self.headers("headers"),
            fallbacks=self.names("fallbacks", base.fallbacks if base else ()),
            default_max_tokens=self.integer("default_max_tokens", base.default_max_tokens if base else 4096),
            context_fallbacks=self.names("context_fallbacks", base.context_fallbacks if base else ()),
            deployments=deployments,
            strategy=strategy,
            retry=self.sub("retry").retry(retry) if "retry" in self.data else None,
            context_window=self.integer("context_window", context_window) if context_window is not None else None,
            tier=self.integer("tier", base.tier if base else 1),
            capabilities=self.capabilities("capabilities") if "capabilities" in self.data else (base.capabilities if base else frozenset()),
            max_output_tokens=self.integer("max_output_tokens", 1) if "max_output_tokens" in self.data else None,
            kind=self.choice("kind", MODEL_KINDS) if "kind" in self.data else (base.kind if base else "chat"),
            dimensions=self.integer("dimensions", 1) if "dimensions" in self.data else (base.dimensions if base else None),
        )

    def deployments(self, alias: str, providers: Mapping[str, ProviderConfig]) -> tuple[Deployment, ...]:
        entries = self.get("deployments", list, [])
        result = []
        for i, entry in enumerate(entries):
            item = _Reader(entry, f"{self.key('deployments')}[{i}]")
            item.only("name", "provider", "upstream", "headers", "weight")
            provider = item.get("provider", str, None)
            if provider not in providers:
                raise ConfigurationError(f"{item.key('provider')}: required, a configured provider (got {provider!r})")
            upstream = item.get("upstream", str, self.data.get("upstream", alias))
            name = item.get("name", str, f"{provider}/{upstream}")
            result.append(Deployment(name, provider, upstream, item.headers("headers"), item.number("weight", 1.0)))
        if len({d.name for d in result}) != len(result):
            raise ConfigurationError(f"{self.key('deployments')}: deployment names must be unique")
        return tuple(result)


def _same_kind(where: str, model: ModelConfig, fallback: ModelConfig) -> None:
    """:raises ConfigurationError: for a fallback of another kind, or (embeddings) other dimensions."""
    if fallback.kind != model.kind:
        raise ConfigurationError(f"{where}: {fallback.alias!r} is a {fallback.kind} model, {model.alias!r} a {model.kind} model")
    if model.kind == "embedding" and fallback.dimensions != model.dimensions:
        raise ConfigurationError(
            f"{where}: {fallback.alias!r} embeds in {fallback.dimensions} dimensions, {model.alias!r} in {model.dimensions}"
        )
