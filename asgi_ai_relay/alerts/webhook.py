"""Alert webhooks: the alert as a JSON POST, signed, retried with backoff off the request path.

The signature is ``X-Relay-Signature: sha256=<hex>``, the HMAC-SHA256 of the exact body bytes
with the webhook's ``secret``; a receiver checks it with :func:`verify` (or the same three lines
in any language) before trusting the body. Every try of one alert sends the same bytes, and the
body's ``id`` is the same for one caller, period and threshold, so a receiver can drop repeats.
A try fails on a connection error, a timeout, 408, 429 or 5xx; it is tried again after
``backoff``, doubled each time, up to ``max_attempts`` tries; any other 4xx ends it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson

from .._version import __version__

if TYPE_CHECKING:
    import httpx

    from ..config.spend import WebhookSettings

__all__ = ["SIGNATURE_HEADER", "deliver", "sign", "verify"]

logger = logging.getLogger("asgi_ai_relay")

SIGNATURE_HEADER = "X-Relay-Signature"
_RETRY = frozenset({408, 429})
#: The longest wait between two tries, seconds.
_MAX_WAIT = 60.0


def sign(secret: str, body: bytes) -> str:
    """The signature header's value for ``body``: ``sha256=<hex HMAC-SHA256>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """Whether ``header`` is the signature of ``body`` with ``secret`` (compared in constant time)."""
    return header is not None and hmac.compare_digest(sign(secret, body), header)


async def deliver(hook: WebhookSettings, alert: dict[str, Any]) -> bool:
    """POST ``alert`` to ``hook.url`` until it is taken or the tries run out; ``True`` when taken.
    Never raises (a failure is logged)."""
    body = orjson.dumps(alert)
    headers = {"content-type": "application/json", "user-agent": f"asgi-ai-relay/{__version__}",
               "x-relay-alert-id": str(alert.get("id", ""))}
    if hook.secret is not None:
        headers[SIGNATURE_HEADER.lower()] = sign(hook.secret.get(), body)
    wait = hook.backoff
    import httpx  # (here, not at import: a relay with no webhook never loads it)

    async with httpx.AsyncClient(timeout=hook.timeout, follow_redirects=False) as client:
        for attempt in range(1, hook.max_attempts + 1):
            outcome = await _try(client, hook.url, body, headers)
            if outcome is True:
                return True
            if outcome is False or attempt == hook.max_attempts:
                logger.error("budget alert %s: webhook %s not delivered after %d attempt(s)",
                             alert.get("id"), _safe(hook.url), attempt)
                return False
            await asyncio.sleep(min(wait, _MAX_WAIT))
            wait *= 2
    return False


async def _try(client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str]) -> bool | None:
    """``True``: taken; ``False``: refused for good; ``None``: try again."""
    import httpx

    try:
        response = await client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        logger.warning("budget alert webhook %s: %s", _safe(url), type(exc).__name__)
        return None
    if response.is_success:
        return True
    logger.warning("budget alert webhook %s answered %d", _safe(url), response.status_code)
    return None if response.status_code in _RETRY or response.status_code >= 500 else False


def _safe(url: str) -> str:
    """``url`` without its query or credentials (a token may be in either)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{':' + str(port) if port else ''}{parts.path}"
