"""The configuration schema: frozen dataclasses for the relay, its providers and models, and
the tables of known providers and default models they start from.

:class:`Price` and the settings of the limits, queue, cache, pricing, budgets and metrics sections
are in :mod:`.settings`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from .cloud import CLOUD_KINDS, CloudSettings
from .egress import EgressSettings
from .observability import LoggingSettings, ReadinessSettings, TelemetrySettings
from .settings import (
    BudgetSettings,
    CacheSettings,
    LimitsConfig,
    MetricsSettings,
    Price,
    PricingSettings,
    QueueConfig,
)
from .spend import AlertSettings, DashboardSettings

STRATEGIES = ("weighted", "least-busy", "lowest-latency")
CAPABILITIES = ("tools", "vision")
PROVIDER_KINDS = ("openai", "openai_compatible", "anthropic", "gemini", "mock", *CLOUD_KINDS)

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
    "gpt-4.1": ("openai", "gpt-4.1", "2.00", "8.00", "0.50"),
    "claude-sonnet-4.5": ("anthropic", "claude-sonnet-4-5", "3.00", "15.00", "0.30"),
    "gemini-2.5-flash": ("gemini", "gemini-2.5-flash", "0.30", "2.50", "0.075"),
    "deepseek-v3.2": ("deepseek", "deepseek-chat", "0.10", "0.42", "0.028"),
}
# alias: (conventional provider name, upstream model, input USD per MTok, dimensions): embeddings
DEFAULT_EMBEDDINGS: dict[str, tuple[str, str, str, int]] = {
    "text-embedding-3-small": ("openai", "text-embedding-3-small", "0.02", 1536),
    "text-embedding-3-large": ("openai", "text-embedding-3-large", "0.13", 3072),
    "gemini-embedding-001": ("gemini", "gemini-embedding-001", "0.15", 3072),
}
MODEL_KINDS = ("chat", "embedding")
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
class ProviderConfig:
    name: str
    kind: str
    base_url: str
    api_key: Secret | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    #: Multiplies every price of the models it serves (a relay billing at a discount).
    price_multiplier: Decimal = Decimal(1)
    anthropic_version: str = "2023-06-01"
    #: This provider's own proxy and TLS keys (see :mod:`.egress`), over ``[http]``'s.
    egress: EgressSettings = field(default_factory=EgressSettings)
    #: Region, project, auth and quirks of cloud kinds and presets (see :mod:`.cloud`).
    cloud: CloudSettings = field(default_factory=CloudSettings)


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
    #: ``chat`` or ``embedding`` (served by ``/v1/embeddings`` only).
    kind: str = "chat"
    #: An embedding model's vector size (fallbacks must have the same).
    dimensions: int | None = None


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
    #: Conversation affinity (see :mod:`asgi_ai_relay.affinity`): sessions stay on one deployment.
    affinity: bool = True
    #: Seconds a session's pin outlives its last request.
    affinity_ttl: float = 3600.0
    #: Headers (lower-case) that name a session, besides ``x-claude-code-session-id``.
    session_headers: tuple[str, ...] = ()


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
    bounds the gap between two chunks of a stream; ``total`` bounds one upstream answer, whole
    or streamed, from the request sent to the answer's last byte."""

    connect: float = 5.0
    read: float = 120.0
    stream_idle: float = 60.0
    pool: float = 10.0
    total: float = 600.0
    #: A stream that sends nothing for this long counts as a failed attempt (and falls over).
    first_byte: float = 30.0


@dataclass(frozen=True, slots=True)
class HttpSettings:
    #: "h1" (default: the relay's own lean HTTP/1.1 client, see ``asgi_ai_relay.h1``),
    #: "aiohttp" (needs the ``aiohttp`` extra) or "httpx".
    client: str = "h1"
    #: Open upstream connections in all. Each stream holds one for its whole length, so this is
    #: the most streams a worker relays at once; past it a request waits up to ``timeouts.pool``.
    #: (Bound concurrency with ``queue.max_in_flight``, which queues fairly and answers 429.)
    max_connections: int = 4096
    #: Idle connections kept for reuse: as many as may be open, so the end of a burst of streams
    #: does not close connections the next burst opens again (a TLS handshake each).
    max_keepalive: int = 4096
    keepalive_expiry: float = 30.0
    #: The most bytes (after decompression) one successful answer, whole or streamed, may have.
    max_response_bytes: int = 64 * 1024 * 1024
    #: The most of an error answer's body that is read (the rest is left unread).
    max_error_bytes: int = 64 * 1024
    #: The longest line a stream may send before its line break.
    max_line_bytes: int = 16 * 1024 * 1024
    #: Take the proxy from ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY`` when none is configured.
    trust_env: bool = True
    #: The proxy and TLS keys of ``[http]`` (see :mod:`.egress`); providers may override each.
    egress: EgressSettings = field(default_factory=EgressSettings)


@dataclass(frozen=True, slots=True)
class StorageConfig:
    ledger: str = "sqlite:///relay-usage.db"
    cache: str = "memory://"
    limits: str = "memory://"
    #: Circuit-breaker state: ``memory://`` (per process) or ``redis://host:6379/0?prefix=relay:``.
    breakers: str = "memory://"
    #: Concurrency slots (``queue.max_in_flight``, ``per_provider``): ``memory://`` (per process)
    #: or ``redis://host:6379/0?prefix=relay`` (leases shared by every worker).
    slots: str = "memory://"
    #: Budget spend: ``limits`` (the store ``limits`` names), ``memory://`` or ``redis://...``.
    budgets: str = "limits"
    #: Stored Responses API responses (``previous_response_id``): ``memory://`` (per process)
    #: or ``redis://host:6379/0?ttl=2592000&prefix=relay:responses:``, ``sqlite:///responses.db``,
    #: ``postgresql://...?ttl=2592000&table=relay_responses`` (shared by every worker).
    responses: str = "memory://"
    #: Managed API keys (:mod:`asgi_ai_relay.keys`): ``""`` (none), ``memory://``,
    #: ``sqlite:///relay-keys.db``, ``postgresql://...`` or ``redis://...``.
    keys: str = ""
    #: Refuse to start when the ledger's database cannot be reached at start-up (otherwise the
    #: relay starts degraded: rows spool locally and are written when the database returns).
    ledger_required: bool = False



@dataclass(frozen=True, slots=True)
class KeySettings:
    """``[keys]``: managed keys. ``secret`` makes the stored digests HMAC-SHA256 under it;
    ``cache_ttl`` is how many seconds a worker may answer from its cached lookup (a change is
    seen everywhere within it; at once through Redis); ``caller_limits`` lets callers from the
    host's own auth carry budgets (:mod:`asgi_ai_relay.policy`; on with ``storage.keys``)."""

    secret: Secret | None = None
    cache_ttl: float = 5.0
    caller_limits: bool = False


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
    dashboard: DashboardSettings = field(default_factory=DashboardSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    keys: KeySettings = field(default_factory=KeySettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)
    readiness: ReadinessSettings = field(default_factory=ReadinessSettings)
