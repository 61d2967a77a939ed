"""Where an upstream connection goes and how it is secured: proxies and TLS, for every client.

:class:`EgressPolicy` is built once per upstream client from ``[http]`` and the providers'
tables (:class:`~asgi_ai_relay.config.EgressSettings`) and the environment, and answers one
question per provider and URL: :meth:`EgressPolicy.route` gives a :class:`Route`, the proxy to
go through (or none) and the TLS context for an ``https`` upstream. The choice of proxy:

1. the provider's ``proxy`` key, else ``[http] proxy`` (``""`` at either level: no proxy);
2. otherwise, with ``http.trust_env`` (the default), ``HTTPS_PROXY`` for an ``https`` upstream
   and ``HTTP_PROXY`` for an ``http`` one (lower-case names too), unless ``NO_PROXY`` names the
   host. The environment is read once, when the client is built.

A proxy's ``user:password`` becomes a ``Proxy-Authorization`` header sent to the proxy alone (in
the ``CONNECT`` of a tunnel; on each request only for an ``http`` upstream, which the proxy
forwards). TLS contexts are built once per distinct profile: the system's roots (``certifi``'s
where the system has none) or ``ca_bundle`` instead, the client certificate for mutual TLS, and
``verify = false`` only with a warning in the log.
"""

from __future__ import annotations

import base64
import logging
import os
import ssl
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from .config import EgressSettings, HttpSettings, ProviderConfig
from .config.egress import check_proxy_url
from .errors import ConfigurationError

__all__ = ["EgressPolicy", "Proxy", "Route", "refused_certificate", "tls_context"]

logger = logging.getLogger("asgi_ai_relay")


@dataclass(frozen=True, slots=True, repr=False)
class Proxy:
    """An HTTP proxy and its credentials (never shown: see :attr:`display`)."""

    host: str
    port: int
    username: str | None = None
    password: str = ""

    @property
    def display(self) -> str:
        """``host:port``, without the credentials: what errors and logs name."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """``http://host:port``, without the credentials."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def authorization(self) -> str | None:
        """The ``Proxy-Authorization`` value (basic), or ``None`` without credentials."""
        if self.username is None:
            return None
        pair = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")

    def __repr__(self) -> str:
        return f"Proxy({self.display})"

    @classmethod
    def from_url(cls, url: str, where: str) -> Proxy:
        """:raises ConfigurationError: for a URL that is not ``http://[user:password@]host[:port]``."""
        check_proxy_url(url, where)
        parts = urlsplit(url)
        assert parts.hostname is not None
        username = unquote(parts.username) if parts.username is not None else None
        return cls(parts.hostname, parts.port or 80, username, unquote(parts.password or ""))


class Route:
    """How one provider reaches one origin: through ``proxy`` or directly, with ``ssl`` for TLS.

    Routes are shared (one per proxy and TLS profile), so a client may key its pools on them.
    """

    __slots__ = ("proxy", "ssl")

    def __init__(self, proxy: Proxy | None, ssl_context: ssl.SSLContext | None) -> None:
        self.proxy = proxy
        self.ssl = ssl_context

    def __repr__(self) -> str:
        return f"Route(proxy={self.proxy!r}, tls={self.ssl is not None})"


class EgressPolicy:
    """The egress of one upstream client (see the module docstring).

    :param ssl_context: one TLS context for every provider, instead of those the settings build.
    :raises ConfigurationError: for a proxy in the environment that is not ``http://host:port``,
        or a CA bundle or client certificate that cannot be loaded.
    """

    def __init__(
        self,
        http: HttpSettings,
        providers: Mapping[str, ProviderConfig] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.base = http.egress
        self.providers = {name: cfg.egress.over(http.egress) for name, cfg in (providers or {}).items()}
        self._fixed_ssl = ssl_context
        self._contexts: dict[tuple[str | None, bool, str | None, str | None], ssl.SSLContext] = {}
        self._routes: dict[tuple[Proxy | None, int], Route] = {}
        self._chosen: dict[tuple[str, bool, str, int], Route] = {}
        self._env = _proxies_from(os.environ if environ is None else environ) if http.trust_env else {}
        self._env_proxies = {  # "proxy.corp:3128", without a scheme, means http:// (as curl reads it)
            scheme: Proxy.from_url(url if "://" in url else f"http://{url}", f"environment variable {scheme.upper()}_PROXY")
            for scheme, url in self._env.items() if scheme in ("http", "https") and url
        }
        self._warned: set[str] = set()
        for name, settings in self.providers.items():
            if settings.verify is False:
                self._warn_unverified(name)
            if settings.tls_profile != self.base.tls_profile:
                self.context(settings)  # a bad bundle or certificate shows at start-up
        if self.base.verify is False:
            self._warn_unverified("every provider without its own verify")
        if self.base.tls_profile != EgressSettings().tls_profile:
            self.context(self.base)

    def settings(self, provider: str) -> EgressSettings:
        return self.providers.get(provider, self.base)

    def route(self, provider: str, tls: bool, host: str, port: int) -> Route:
        """The route of ``provider`` to ``host:port`` (``tls``: an ``https`` upstream)."""
        chosen = self._chosen.get((provider, tls, host, port))
        if chosen is None:
            chosen = self._chosen[(provider, tls, host, port)] = self._route(provider, tls, host, port)
        return chosen

    def _route(self, provider: str, tls: bool, host: str, port: int) -> Route:
        settings = self.settings(provider)
        proxy = self.proxy(settings, tls, host, port)
        context = self.context(settings) if tls else None
        key = (proxy, id(context))
        route = self._routes.get(key)
        if route is None:
            route = self._routes[key] = Route(proxy, context)
        return route

    def proxy(self, settings: EgressSettings, tls: bool, host: str, port: int) -> Proxy | None:
        if settings.proxy is not None:
            url = settings.proxy.get()
            return Proxy.from_url(url, "proxy") if url else None
        proxy = self._env_proxies.get("https" if tls else "http")
        if proxy is None or _bypass(f"{host}:{port}", self._env):
            return None
        return proxy

    def context(self, settings: EgressSettings) -> ssl.SSLContext:
        if self._fixed_ssl is not None:
            return self._fixed_ssl
        profile = settings.tls_profile
        context = self._contexts.get(profile)
        if context is None:
            context = self._contexts[profile] = tls_context(settings)
        return context

    def _warn_unverified(self, who: str) -> None:
        if who not in self._warned:
            self._warned.add(who)
            logger.warning("TLS certificates are NOT verified for %s (verify = false): anyone on the path can "
                           "read and change the traffic, upstream keys included", who)


def _bypass(host: str, proxies: Mapping[str, str]) -> bool:
    """Whether ``NO_PROXY`` (``proxies["no"]``) names ``host`` (with or without its port)."""
    check: Any = getattr(urllib.request, "proxy_bypass_environment")  # untyped in typeshed
    return bool(check(host, dict(proxies)))


def _proxies_from(environ: Mapping[str, str]) -> dict[str, str]:
    """``{"http": ..., "https": ..., "no": ...}`` from ``*_PROXY`` variables (lower case wins)."""
    found: dict[str, str] = {}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"):
        if name == "HTTP_PROXY" and "REQUEST_METHOD" in environ:
            continue  # under CGI a request's "Proxy:" header arrives as HTTP_PROXY (httpoxy)
        value = environ.get(name)
        if value is not None:
            found[name.lower().rpartition("_")[0]] = value.strip()
    return found


def tls_context(settings: EgressSettings) -> ssl.SSLContext:
    """A client TLS context for ``settings`` (HTTP/1.1 offered by ALPN).

    :raises ConfigurationError: for a CA bundle or client certificate that cannot be loaded.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # checks host names and certificates
    try:
        if settings.ca_bundle is not None:
            _load_bundle(context, settings.ca_bundle)
        else:
            context.load_default_certs()
            if not _has_roots(context):
                import certifi  # a dependency of the relay (and of httpx)

                context.load_verify_locations(cafile=certifi.where())
        if settings.client_cert is not None:
            context.load_cert_chain(settings.client_cert, settings.client_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"TLS settings cannot be loaded: {exc}") from None
    if settings.verify is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    return context


def _has_roots(context: ssl.SSLContext) -> bool:
    if context.cert_store_stats()["x509_ca"]:
        return True
    capath = ssl.get_default_verify_paths().capath  # a hashed directory is read lazily
    return bool(capath and os.path.isdir(capath) and any(os.scandir(capath)))


def _load_bundle(context: ssl.SSLContext, path: str) -> None:
    """A PEM file, or every PEM file of a directory (hashed names are not needed)."""
    if not os.path.isdir(path):
        context.load_verify_locations(cafile=path)
        return
    loaded = 0
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        if entry.is_file():
            try:
                context.load_verify_locations(cafile=entry.path)
            except ssl.SSLError:
                continue  # not a certificate
            loaded += 1
    if not loaded:
        raise ConfigurationError(f"ca_bundle: no PEM certificate in the directory {path}")


def refused_certificate(exc: BaseException) -> str | None:
    """Why a certificate was refused, when ``exc`` (or what caused it) is a failed verification."""
    seen: BaseException | None = exc
    for _ in range(8):  # a short chain: clients wrap the ssl error once or twice
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLCertVerificationError):
            return str(seen.verify_message or seen.reason or "verification failed")
        seen = seen.__cause__ or seen.__context__
    return None
