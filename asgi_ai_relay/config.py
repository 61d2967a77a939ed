"""One configuration schema for every host, validated once at start-up.

Django reads it from ``settings.AI_RELAY``, Flask from ``app.config["AI_RELAY"]``, ASGI apps pass
a mapping or a TOML file. :func:`load_config` turns any of them into a frozen :class:`RelayConfig`
and raises :class:`ConfigurationError` naming the bad key (``models.gpt-4.1.price.input``).

Secrets are written ``"env:NAME"`` and read from the environment here, once; they are kept in
:class:`Secret`, whose ``repr`` never shows the value.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from .errors import ConfigurationError

__all__ = [
    "ApiKey",
    "BreakerSettings",
    "Budget",
    "BudgetSettings",
    "CacheSettings",
    "DEFAULT_MODELS",
    "Deployment",
    "HttpSettings",
    "MetricsSettings",
    "LimitConfig",
    "LimitsConfig",
    "ModelConfig",
    "Price",
    "PricingSettings",
    "ProviderConfig",
    "QueueConfig",
    "RelayConfig",
    "RetrySettings",
    "RoutingConfig",
    "Secret",
    "StorageConfig",
    "Timeouts",
    "VirtualModel",
    "load_config",
]

STRATEGIES = ("weighted", "least-busy", "lowest-latency")
CAPABILITIES = ("tools", "vision")
PROVIDER_KINDS = ("openai", "openai_compatible", "anthropic", "gemini", "mock")

# Where a provider named after a known service points when no base_url is given.
KNOWN_PROVIDERS: dict[str, tuple[str, str]] = {
    "openai": ("openai", "https://api.openai.com/v1"),
    "anthropic": ("anthropic", "https://api.anthropic.com/v1"),
    "gemini": ("gemini", "https://generativelanguage.googleapis.com/v1beta"),
    "deepseek": ("openai_compatible", "https://api.deepseek.com/v1"),
    "holysheep": ("openai_compatible", "https://api.holysheep.ai/v1"),
    "openrouter": ("openai_compatible", "https://openrouter.ai/api/v1"),
    "mock": ("mock", ""),
}

# alias: (conventional provider name, upstream model, input, output, cached input) USD per MTok
DEFAULT_MODELS: dict[str, tuple[str, str, str, str, str]] = {
    "gpt-4.1": ("openai", "gpt-4.1", "2.50", "8.00", "0.625"),
    "claude-sonnet-4.5": ("anthropic", "claude-sonnet-4-5", "3.00", "15.00", "0.30"),
    "gemini-2.5-flash": ("gemini", "gemini-2.5-flash", "0.30", "2.50", "0.075"),
    "deepseek-v3.2": ("deepseek", "deepseek-chat", "0.10", "0.42", "0.028"),
}
# alias: USD per MTok written to the prompt cache, where it differs from the input price
DEFAULT_CACHE_WRITE: dict[str, str] = {"claude-sonnet-4.5": "3.75"}


class Secret:
    """A secret value that never shows itself in a repr, a log line or an error."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str = "literal") -> None:
        self._value = value
        self.source = source

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.source})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens."""

    input: Decimal = Decimal(0)
    output: Decimal = Decimal(0)
    cached_input: Decimal | None = None
    #: Prompt tokens written to the provider's cache (Anthropic bills them above input).
    cache_write: Decimal | None = None


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    name: str
    kind: str
    base_url: str
    api_key: Secret | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    #: Multiplies every price of the models it serves (a relay billing at a discount).
    price_multiplier: Decimal = Decimal(1)
    anthropic_version: str = "2023-06-01"


@dataclass(frozen=True, slots=True)
class RetrySettings:
    """``[retry]`` (and ``[models.X] retry = {...}``): how hard one model is tried.

    ``max_attempts`` counts every upstream call to the model (the first one included), spread
    over its deployments; waits are full-jitter exponential (``uniform(0, min(max_delay,
    base_delay * 2**n))``) unless the provider sent ``Retry-After``. ``deadline`` bounds the
    whole request (all attempts and fallbacks, up to a stream's first byte), in seconds.
    """

    max_attempts: int = 2
    base_delay: float = 0.5
    max_delay: float = 8.0
    deadline: float = 120.0


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """``[breaker]``: one circuit breaker per deployment.

    Opens after ``failure_threshold`` failures within ``window`` seconds, or (when
    ``failure_rate`` > 0) when at least ``min_requests`` calls in the window failed at that
    rate; after ``cooldown`` seconds it lets ``half_open_probes`` calls through, and the first
    success closes it again (a failed probe re-opens it).
    """

    failure_threshold: int = 5
    failure_rate: float = 0.0
    min_requests: int = 20
    window: float = 60.0
    cooldown: float = 30.0
    half_open_probes: int = 1


@dataclass(frozen=True, slots=True)
class Deployment:
    """One place a model is served (a key, a region, a second relay): ``[models.X] deployments``.

    ``name`` identifies its breaker and health entry (default ``provider/upstream``).
    """

    name: str
    provider: str
    upstream: str
    headers: Mapping[str, str] = field(default_factory=dict)
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class ModelConfig:
    alias: str
    provider: str
    upstream: str
    price: Price = field(default_factory=Price)
    headers: Mapping[str, str] = field(default_factory=dict)
    fallbacks: tuple[str, ...] = ()
    #: Sent to providers that require ``max_tokens`` (Anthropic) when the caller gave none.
    default_max_tokens: int = 4096
    #: Tried (first) when the provider says the prompt is too long for this model.
    context_fallbacks: tuple[str, ...] = ()
    #: Several deployments of one alias, balanced by ``strategy``; empty: ``provider``/``upstream``.
    deployments: tuple[Deployment, ...] = ()
    strategy: str = "weighted"
    #: Overrides of ``[retry]`` for this model (None: the relay-wide settings).
    retry: RetrySettings | None = None
    #: What virtual models (``[routing.virtual.X]``) may ask of it.
    context_window: int | None = None
    tier: int = 1
    capabilities: frozenset[str] = frozenset()
    #: The most output tokens a request may ask for (``max_tokens``); above it: 400.
    max_output_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class VirtualModel:
    """``[routing.virtual.NAME]``: a model name resolved per request to the cheapest healthy
    model of ``models`` (every configured model when empty) with ``tier >= min_tier``, the
    ``needs`` listed here and those the request shows (tools, images, its size)."""

    name: str
    models: tuple[str, ...] = ()
    min_tier: int = 1
    needs: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    virtual: Mapping[str, VirtualModel] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A relay API key (what callers send), tied to a caller id; only its SHA-256 digest is kept.

    Configured as ``{key = "env:NAME", caller = ...}`` or, hashed, ``{hash = "sha256:<hex>",
    caller = ...}`` (``python -m asgi_ai_relay.keys create`` makes one).
    """

    digest: bytes
    caller: str
    admin: bool = False
    priority: str = "normal"


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds. ``read`` bounds a whole non-streamed answer's wait for data; ``stream_idle``
    bounds the gap between two chunks of a stream; ``total`` bounds one request end to end."""

    connect: float = 5.0
    read: float = 120.0
    stream_idle: float = 60.0
    pool: float = 10.0
    total: float = 600.0
    #: A stream that sends nothing for this long counts as a failed attempt (and falls over).
    first_byte: float = 30.0


@dataclass(frozen=True, slots=True)
class HttpSettings:
    #: "aiohttp" (default, fastest) or "httpx".
    client: str = "aiohttp"
    max_connections: int = 512
    max_keepalive: int = 256
    keepalive_expiry: float = 30.0


@dataclass(frozen=True, slots=True)
class StorageConfig:
    ledger: str = "sqlite:///relay-usage.db"
    cache: str = "memory://"
    limits: str = "memory://"
    #: Circuit-breaker state: ``memory://`` (per process) or ``redis://host:6379/0?prefix=relay:``.
    breakers: str = "memory://"


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """How the response cache decides; where it stores is ``storage.cache``."""

    #: ``deterministic`` (temperature 0 or a seed), ``all``, or ``off``.
    mode: str = "deterministic"
    #: ``shared`` between callers, or ``caller`` (each caller its own entries).
    scope: str = "shared"
    #: Upper bound, seconds, for the per-request ``x-relay-cache-ttl`` override.
    max_ttl: int = 7 * 24 * 3600
    #: Answers larger than this are neither stored nor coalesced.
    max_entry_bytes: int = 1024 * 1024


@dataclass(frozen=True, slots=True)
class PricingSettings:
    """Costs are kept in USD; reports also show them in ``currency`` at ``exchange_rate``
    (units of ``currency`` per USD). ``lists`` are other price lists to compare against."""

    currency: str = "USD"
    exchange_rate: Decimal = Decimal(1)
    lists: Mapping[str, Mapping[str, Price]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Budget:
    """USD a caller may spend per UTC day and per UTC month; ``None`` means no limit."""

    daily: Decimal | None = None
    monthly: Decimal | None = None


@dataclass(frozen=True, slots=True)
class BudgetSettings:
    default: Budget = field(default_factory=Budget)
    callers: Mapping[str, Budget] = field(default_factory=dict)
    #: Fraction of a budget at which a warning is logged (once per caller and period).
    soft_threshold: Decimal = Decimal("0.8")

    def for_caller(self, caller: str) -> Budget:
        return self.callers.get(caller, self.default)

    @property
    def active(self) -> bool:
        return any(b.daily is not None or b.monthly is not None for b in (self.default, *self.callers.values()))


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    #: Serve ``{prefix}/metrics`` (needs the ``metrics`` extra, prometheus-client).
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class LimitConfig:
    """Requests and tokens per minute (0: no limit); bursts default to the full minute."""

    rpm: int = 0
    tpm: int = 0
    burst: int = 0
    token_burst: int = 0

    def __bool__(self) -> bool:
        return bool(self.rpm or self.tpm)


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """``[limits]``: ``global`` for everyone together; ``caller``, ``model``, ``provider`` for
    each one separately, with per-name overrides in ``callers``, ``models``, ``providers``."""

    everyone: LimitConfig = field(default_factory=LimitConfig)
    caller: LimitConfig = field(default_factory=LimitConfig)
    model: LimitConfig = field(default_factory=LimitConfig)
    provider: LimitConfig = field(default_factory=LimitConfig)
    callers: Mapping[str, LimitConfig] = field(default_factory=dict)
    models: Mapping[str, LimitConfig] = field(default_factory=dict)
    providers: Mapping[str, LimitConfig] = field(default_factory=dict)
    #: Completion tokens counted before the call when the request sets no ``max_tokens``.
    estimated_output_tokens: int = 256


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """``[queue]``: concurrency caps (0: none), the bounded priority queue, and what a limit
    or a rate-limit storage outage does."""

    max_in_flight: int = 0
    per_provider: int = 0
    max_queue: int = 1000
    max_wait: float = 30.0
    on_limit: str = "queue"
    fail_mode: str = "open"
    priority_header: bool = False


@dataclass(frozen=True, slots=True)
class RelayConfig:
    prefix: str = "/ai"
    max_body_bytes: int = 4 * 1024 * 1024
    require_auth: bool = False
    api_keys: tuple[ApiKey, ...] = ()
    timeouts: Timeouts = field(default_factory=Timeouts)
    http: HttpSettings = field(default_factory=HttpSettings)
    providers: Mapping[str, ProviderConfig] = field(default_factory=dict)
    models: Mapping[str, ModelConfig] = field(default_factory=dict)
    storage: StorageConfig = field(default_factory=StorageConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    log_requests: bool = True
    retry: RetrySettings = field(default_factory=RetrySettings)
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    cache: CacheSettings = field(default_factory=CacheSettings)
    pricing: PricingSettings = field(default_factory=PricingSettings)
    budgets: BudgetSettings = field(default_factory=BudgetSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)


def load_config(source: RelayConfig | Mapping[str, Any] | str | Path | None = None) -> RelayConfig:
    """Build a validated :class:`RelayConfig`.

    :param source: a ``RelayConfig`` (returned as is), a mapping, a path to a TOML file, or
        ``None`` for the defaults (the shipped model catalog served by the offline mock).
    :raises ConfigurationError: naming the first bad key.
    """
    if isinstance(source, RelayConfig):
        return source
    if source is None:
        data: Mapping[str, Any] = {}
    elif isinstance(source, (str, Path)):
        try:
            data = tomllib.loads(Path(source).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigurationError(f"cannot read relay config {source}: {exc}") from exc
    elif isinstance(source, Mapping):
        data = source
    else:
        raise ConfigurationError(f"relay config must be a mapping or a TOML path, not {type(source).__name__}")
    return _Reader(data, "").relay()


class _Reader:
    """Reads one table of the config, knowing its dotted path for error messages."""

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, Mapping):
            raise ConfigurationError(f"{path or 'config'}: expected a table, got {type(data).__name__}")
        self.data = data
        self.path = path

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def only(self, *allowed: str) -> None:
        unknown = sorted(set(self.data) - set(allowed))
        if unknown:
            raise ConfigurationError(
                f"{self.key(unknown[0])}: unknown key (allowed here: {', '.join(sorted(allowed))})"
            )

    def sub(self, name: str) -> _Reader:
        return _Reader(self.data.get(name, {}), self.key(name))

    def get(self, name: str, kind: type | tuple[type, ...], default: Any) -> Any:
        value = self.data.get(name, default)
        if value is default:
            return value
        if isinstance(value, bool) and kind in (int, float, (int, float)):
            raise ConfigurationError(f"{self.key(name)}: expected a number, got a boolean")
        if not isinstance(value, kind):
            expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise ConfigurationError(f"{self.key(name)}: expected {expected}, got {type(value).__name__}")
        return value

    def number(self, name: str, default: float) -> float:
        value = float(self.get(name, (int, float), default))
        if not value > 0:
            raise ConfigurationError(f"{self.key(name)}: must be greater than 0")
        return value

    def integer(self, name: str, default: int, *, minimum: int = 1) -> int:
        value = int(self.get(name, int, default))
        if value < minimum:
            raise ConfigurationError(f"{self.key(name)}: must be at least {minimum}")
        return value

    def decimal(self, name: str, default: Decimal | None) -> Decimal | None:
        value = self.data.get(name, default)
        if value is default:
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
            raise ConfigurationError(f"{self.key(name)}: expected a number")
        try:
            result = Decimal(str(value))
        except InvalidOperation as exc:
            raise ConfigurationError(f"{self.key(name)}: not a number: {value!r}") from exc
        if result < 0 or not result.is_finite():
            raise ConfigurationError(f"{self.key(name)}: must be a finite number >= 0")
        return result

    def secret(self, name: str) -> Secret | None:
        value = self.get(name, str, None)
        if value is None:
            return None
        if value.startswith("env:"):
            var = value[4:]
            if var not in os.environ:
                raise ConfigurationError(f"{self.key(name)}: environment variable {var} is not set")
            return Secret(os.environ[var], f"env:{var}")
        return Secret(value)

    def headers(self, name: str) -> dict[str, str]:
        table = self.get(name, Mapping, {})
        out: dict[str, str] = {}
        for header, value in table.items():
            if not isinstance(value, str) or not header or any(c in header + value for c in "\r\n"):
                raise ConfigurationError(f"{self.key(name)}.{header}: header values must be single-line strings")
            out[header.lower()] = value
        return out

    def relay(self) -> RelayConfig:
        self.only(
            "prefix", "max_body_bytes", "require_auth", "api_keys", "timeouts", "http",
            "providers", "models", "storage", "log_requests", "default_models", "limits", "queue",
            "retry", "breaker", "routing",
            "cache", "pricing", "budgets", "metrics",
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
        self.only("client", "max_connections", "max_keepalive", "keepalive_expiry")
        d = HttpSettings()
        client = self.get("client", str, d.client)
        if client not in ("aiohttp", "httpx"):
            raise ConfigurationError(f"{self.key('client')}: one of aiohttp, httpx")
        return HttpSettings(
            client=client,
            max_connections=self.integer("max_connections", d.max_connections),
            max_keepalive=self.integer("max_keepalive", d.max_keepalive, minimum=0),
            keepalive_expiry=self.number("keepalive_expiry", d.keepalive_expiry),
        )

    def storage(self) -> StorageConfig:
        self.only("ledger", "cache", "limits", "breakers")
        d = StorageConfig()
        return StorageConfig(
            ledger=self.get("ledger", str, d.ledger),
            cache=self.get("cache", str, d.cache),
            limits=self.get("limits", str, d.limits),
            breakers=self.get("breakers", str, d.breakers),
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
        self.only("global", "caller", "model", "provider", "callers", "models", "providers", "estimated_output_tokens")
        return LimitsConfig(
            everyone=self.sub("global").limit(),
            caller=self.sub("caller").limit(),
            model=self.sub("model").limit(),
            provider=self.sub("provider").limit(),
            callers=self.named_limits("callers", None),
            models=self.named_limits("models", models),
            providers=self.named_limits("providers", providers),
            estimated_output_tokens=self.integer("estimated_output_tokens", 256, minimum=0),
        )

    def choice(self, name: str, choices: tuple[str, ...]) -> str:
        value = self.get(name, str, choices[0])
        if value not in choices:
            raise ConfigurationError(f"{self.key(name)}: one of {', '.join(choices)}, not {value!r}")
        return str(value)

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

    def providers(self) -> dict[str, ProviderConfig]:
        table = self.sub("providers")
        result = {"mock": ProviderConfig(name="mock", kind="mock", base_url="")}
        for name in table.data:
            result[name] = table.sub(name).provider(name)
        return result

    def provider(self, name: str) -> ProviderConfig:
        self.only("kind", "base_url", "api_key", "headers", "price_multiplier", "anthropic_version")
        known_kind, known_url = KNOWN_PROVIDERS.get(name, ("", ""))
        kind = self.get("kind", str, known_kind or "openai_compatible")
        if kind not in PROVIDER_KINDS:
            raise ConfigurationError(f"{self.key('kind')}: unknown provider kind {kind!r} (one of {', '.join(PROVIDER_KINDS)})")
        base_url = self.get("base_url", str, known_url if kind == known_kind else "")
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
                result[alias] = ModelConfig(alias, provider, upstream, price)
        table = self.sub("models")
        for alias in table.data:
            result[alias] = table.sub(alias).model(alias, providers, result.get(alias), retry)
        for alias, model in result.items():
            for key in ("fallbacks", "context_fallbacks"):
                for fallback in getattr(model, key):
                    if fallback not in result:
                        raise ConfigurationError(f"models.{alias}.{key}: unknown model {fallback!r}")
        return result

    def model(
        self, alias: str, providers: Mapping[str, ProviderConfig], base: ModelConfig | None, retry: RetrySettings
    ) -> ModelConfig:
        self.only(
            "provider", "upstream", "price", "headers", "fallbacks", "default_max_tokens", "context_fallbacks",
            "deployments", "strategy", "retry", "context_window", "tier", "capabilities", "max_output_tokens",
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
        )

    def names(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        values = self.get(name, list, list(default))
        if not all(isinstance(v, str) for v in values):
            raise ConfigurationError(f"{self.key(name)}: expected a list of model names")
        return tuple(values)

    def capabilities(self, name: str) -> frozenset[str]:
        values = self.names(name, ())
        for value in values:
            if value not in CAPABILITIES:
                raise ConfigurationError(f"{self.key(name)}: unknown capability {value!r} (one of {', '.join(CAPABILITIES)})")
        return frozenset(values)

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
        self.only("virtual")
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
        return RoutingConfig(virtual)

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
