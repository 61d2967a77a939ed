"""Egress settings: the proxy and TLS keys of ``[http]`` and of each ``[providers.NAME]``.

The same five keys are read in both places; a provider's own keys override ``[http]``'s one by
one (:meth:`EgressSettings.over`). ``[http]`` alone has ``trust_env``. The reader
(:meth:`~.traffic._TrafficReader.egress`) checks paths at start-up, so a missing CA bundle or
client certificate is an error naming its key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from .schema import Secret

__all__ = ["EGRESS_KEYS", "EgressSettings", "check_proxy_url"]

EGRESS_KEYS = ("proxy", "ca_bundle", "verify", "client_cert", "client_key")


@dataclass(frozen=True, slots=True)
class EgressSettings:
    """How upstream connections leave the process. ``None``: not set at this level.

    ``proxy``: ``http://[user:password@]host:port`` (may be ``env:NAME``); ``""`` means no
    proxy, whatever the environment says. ``ca_bundle``: a PEM file or a directory of them,
    trusted instead of the system's roots. ``verify = false`` turns certificate checks off (a
    warning is logged). ``client_cert`` / ``client_key``: PEM files for mutual TLS (the key may
    be inside the certificate file).
    """

    proxy: Secret | None = None
    ca_bundle: str | None = None
    verify: bool | None = None
    client_cert: str | None = None
    client_key: str | None = None

    def over(self, base: EgressSettings) -> EgressSettings:
        """These settings with every key not set here taken from ``base``."""
        return EgressSettings(
            proxy=self.proxy if self.proxy is not None else base.proxy,
            ca_bundle=self.ca_bundle if self.ca_bundle is not None else base.ca_bundle,
            verify=self.verify if self.verify is not None else base.verify,
            # A certificate and its key go together: a provider's certificate never takes [http]'s key.
            client_cert=self.client_cert if self.client_cert is not None else base.client_cert,
            client_key=self.client_key if self.client_cert is not None else base.client_key,
        )

    @property
    def tls_profile(self) -> tuple[str | None, bool, str | None, str | None]:
        """What makes two TLS contexts the same (one context is built per profile)."""
        return (self.ca_bundle, self.verify is not False, self.client_cert, self.client_key)


def check_proxy_url(url: str, where: str) -> None:
    """:raises ConfigurationError: unless ``url`` is ``http://[user:password@]host[:port]``."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigurationError(f"{where}: not a proxy URL (expected http://host:port)") from None
    if parts.scheme != "http" or not parts.hostname:
        scheme = parts.scheme or "none"
        raise ConfigurationError(f"{where}: expected an http://host:port proxy URL (scheme {scheme!r} is not supported)")
    if port == 0:
        raise ConfigurationError(f"{where}: the proxy's port cannot be 0")
