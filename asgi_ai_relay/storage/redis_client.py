"""Every Redis client of the relay is made here: short timeouts and one circuit per server.

    redis://host:6379/0?timeout=0.25&retry_interval=1     plain TCP
    rediss://host:6380/0?...                                TLS (redis-py's ``ssl_*`` options apply)
    redis+cluster://host:7000/?...                          a Redis Cluster: any node, the rest are found
    rediss+cluster://host:7000/?...                         a Redis Cluster over TLS

``timeout`` (seconds, default 0.25) bounds every call as a whole, connecting included, so a
frozen server costs a request at most that long per call. ``retry_interval`` (seconds, default
1) is how long a server that failed is left alone. The rest of the URI goes to redis-py.

Every client of one server (``host:port``) in this process shares one :class:`ServerHealth`.
The first call that fails (a timeout, a refused or dropped connection) marks the server down
with one warning line; while it is down every call fails at once with :class:`RedisDown`
instead of waiting out its own timeout. Once ``retry_interval`` has passed, one call goes
through as a probe (the others keep failing fast); when it is answered the server is up again,
with one line. What a failed call means is each store's choice: rate limits and budgets fail
open or closed (``queue.fail_mode``), breakers let calls through, the cache answers a miss.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .. import signals
from ..errors import ConfigurationError
from ..timers import within

try:
    import redis.asyncio as aioredis
    import redis.exceptions as redis_errors
    from redis.asyncio.cluster import RedisCluster
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ConfigurationError("redis:// storage needs the 'redis' extra (pip install asgi-ai-relay[redis])") from exc

__all__ = [
    "CLIENT_OPTIONS",
    "DEFAULT_TIMEOUT",
    "STORE_ERRORS",
    "RedisDown",
    "ServerHealth",
    "close_client",
    "health_of",
    "prefixed_client",
    "redis_client",
    "safe_url",
]

logger = logging.getLogger("asgi_ai_relay")

DEFAULT_TIMEOUT = 0.25
DEFAULT_RETRY_INTERVAL = 1.0
#: The query options this module reads (and removes before the URI reaches redis-py).
CLIENT_OPTIONS = ("timeout", "retry_interval")
_CLUSTER = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
#: Failures that say the server cannot be reached (an error reply means it can).
_UNREACHABLE = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError, redis_errors.ClusterDownError)
#: What a store catches around a call: every failure of the driver or the network.
STORE_ERRORS: tuple[type[Exception], ...] = (redis_errors.RedisError, redis_errors.RedisClusterException, OSError)


class RedisDown(redis_errors.ConnectionError):
    """Refused without trying: the server failed a moment ago and is not due for a probe yet."""


def safe_url(uri: str) -> str:
    """``scheme://host:port/db`` of ``uri``: no password, no options, fit for a log line."""
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.hostname or ''}:{parts.port or 6379}{parts.path}"


class ServerHealth:
    """Whether one Redis server answers, as every client of this process has seen it."""

    __slots__ = ("down", "interval", "retry_at")

    def __init__(self) -> None:
        self.down = False
        self.retry_at = 0.0
        self.interval = DEFAULT_RETRY_INTERVAL

    def before(self, where: str) -> None:
        """:raises RedisDown: while the server is down and no probe is due."""
        if not self.down:
            return
        now = time.monotonic()
        if now < self.retry_at:
            raise RedisDown(f"Redis at {where} is down; the next try is in {self.retry_at - now:.2f}s.")
        self.retry_at = now + self.interval  # this call is the probe: the others keep failing fast

    def failed(self, role: str, where: str, interval: float, exc: BaseException) -> None:
        self.interval = interval
        self.retry_at = time.monotonic() + interval
        if not self.down:
            self.down = True
            logger.warning("%s: Redis at %s is unavailable: %s; its clients fail fast, retrying every %ss",
                           role, where, type(exc).__name__, f"{interval:g}")

    def answered(self, role: str, where: str) -> None:
        if self.down:
            self.down = False
            logger.warning("%s: Redis at %s is available again", role, where)


#: One health per server address, shared by every client (limits, breakers, cache, budgets).
_HEALTH: dict[tuple[str, int], ServerHealth] = {}


def health_of(uri: str) -> ServerHealth:
    """The shared health of the server ``uri`` names."""
    parts = urlsplit(uri)
    address = (parts.hostname or "localhost", parts.port or 6379)
    health = _HEALTH.get(address)
    if health is None:
        health = _HEALTH[address] = ServerHealth()
    return health


class _Guard:
    """What a client needs to guard its calls: the server's health, the bound, its names."""

    __slots__ = ("health", "interval", "role", "timeout", "where")

    def __init__(self, uri: str, role: str, timeout: float, interval: float) -> None:
        self.health = health_of(uri)
        self.role = role
        self.where = safe_url(uri)
        self.timeout = timeout
        self.interval = interval

    async def call(self, command: Any, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
        self.health.before(self.where)
        try:
            with within(self.timeout):
                result = await command(*args, **options)
        except TimeoutError as exc:  # our own bound, or a socket's
            signals.count(signals.REDIS_ERRORS, self.role)
            self.health.failed(self.role, self.where, self.interval, exc)
            raise redis_errors.TimeoutError(f"Redis at {self.where} did not answer within {self.timeout:g}s.") from exc
        except _UNREACHABLE as exc:
            signals.count(signals.REDIS_ERRORS, self.role)
            self.health.failed(self.role, self.where, self.interval, exc)
            raise
        except redis_errors.ResponseError:  # an error reply (NOSCRIPT...) is an answer
            self.health.answered(self.role, self.where)
            raise
        self.health.answered(self.role, self.where)
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            # Python 3.11's wait_for inside redis-py drops a cancellation that races a reply;
            # the request must not go on as if it had not been cancelled.
            raise asyncio.CancelledError
        return result


class GuardedRedis(aioredis.Redis):
    """redis-py's client, every command through the server's circuit and the call bound."""

    relay_guard: _Guard

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        return await self.relay_guard.call(super().execute_command, args, options)


class GuardedRedisCluster(RedisCluster):
    """redis-py's cluster client, guarded the same way (its first node names the circuit)."""

    relay_guard: _Guard

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        return await self.relay_guard.call(super().execute_command, args, kwargs)


def _number(role: str, options: dict[str, str], name: str, default: float) -> float:
    try:
        value = float(options.pop(name, default))
    except ValueError as exc:
        raise ConfigurationError(f"{role}: {name} must be a number of seconds") from exc
    if not 0 < value < float("inf"):
        raise ConfigurationError(f"{role}: {name} must be greater than 0")
    return value


def redis_client(uri: str, role: str) -> Any:
    """A client for ``uri`` (``redis://``, ``rediss://``, ``redis+cluster://``, ``rediss+cluster://``).

    :param role: the store, for log lines and errors (``rate limits``, ``storage.cache``...).
    :raises ConfigurationError: for a bad ``timeout`` or ``retry_interval``.
    """
    parts = urlsplit(uri)
    query = parse_qsl(parts.query)
    options = {k: v for k, v in query if k in CLIENT_OPTIONS}
    timeout = _number(role, options, "timeout", DEFAULT_TIMEOUT)
    interval = _number(role, options, "retry_interval", DEFAULT_RETRY_INTERVAL)
    scheme = _CLUSTER.get(parts.scheme, parts.scheme)
    url = urlunsplit(parts._replace(scheme=scheme, query=urlencode([(k, v) for k, v in query if k not in CLIENT_OPTIONS])))
    settings: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        # One reconnect for a pooled socket the server closed (a restart); never for a timeout,
        # which would double the wait.
        "retry": Retry(NoBackoff(), 1, supported_errors=(redis_errors.ConnectionError,)),
    }
    client: Any  # from_url is typed as returning the base class; it builds ``cls``
    if parts.scheme in _CLUSTER:
        client = GuardedRedisCluster.from_url(url, **settings)
    else:
        client = GuardedRedis.from_url(url, health_check_interval=0, **settings)
    client.relay_guard = _Guard(uri, role, timeout, interval)
    return client


def prefixed_client(uri: str, setting: str, role: str) -> tuple[str, Any]:
    """The ``prefix`` option of ``uri`` (default ``relay``), and a client (:func:`redis_client`)
    for the rest of it.

    :raises ConfigurationError: for an option that is neither ``prefix`` nor the client's.
    """
    parts = urlsplit(uri)
    query = parse_qsl(parts.query)
    unknown = sorted({k for k, _ in query} - {"prefix", *CLIENT_OPTIONS})
    if unknown:
        raise ConfigurationError(f"{setting}: unknown option {unknown[0]!r} (prefix, timeout, retry_interval)")
    rest = urlencode([(k, v) for k, v in query if k != "prefix"])
    return dict(query).get("prefix", "relay"), redis_client(urlunsplit(parts._replace(query=rest)), role)


async def close_client(client: Any) -> None:
    """Close ``client`` within its call bound: a frozen server does not hold shutdown up."""
    if client is None:
        return
    guard: _Guard | None = getattr(client, "relay_guard", None)
    try:
        with within(guard.timeout if guard is not None else DEFAULT_TIMEOUT):
            await client.aclose()
    except (TimeoutError, *_UNREACHABLE):
        logger.debug("Redis client closed without a goodbye (server unreachable)")
