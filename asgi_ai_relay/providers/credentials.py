"""OAuth access tokens for cloud providers, kept fresh off the request path.

A :class:`TokenSource` wraps a blocking ``fetch() -> (token, expires_at)`` (azure-identity's
``get_token``, google-auth's ``refresh``), which always runs in a worker thread. Requests take
the current token without waiting; once it is within ``margin`` seconds of its expiry one
background refresh starts (and a timer starts one then even with no traffic), so only the very
first request, or one after a failed refresh let the token lapse, waits for a fetch. Concurrent
waiters share that one fetch. A failed fetch is :class:`UpstreamConnectError` naming the
provider and the exception type only (its text may hold a secret): an upstream failure the
retry policy and the circuit breakers count like any other.

Every token fetched is registered with :mod:`asgi_ai_relay.redact`, so none reaches a caller,
a log line or the ledger.
"""

from __future__ import annotations

import asyncio
import datetime
import importlib
import logging
import time
from collections.abc import Callable
from typing import Any

from .. import redact
from ..errors import ConfigurationError, UpstreamConnectError, UpstreamTimeout

__all__ = ["AZURE_SCOPE", "GOOGLE_SCOPE", "TokenSource", "azure_fetcher", "google_fetcher", "load_object"]

logger = logging.getLogger("asgi_ai_relay")

AZURE_SCOPE = "https://cognitiveservices.azure.com/.default"
GOOGLE_SCOPE = "https://www.googleapis.com/auth/cloud-platform"

#: A blocking call returning the token and when it expires (seconds since the epoch).
Fetch = Callable[[], tuple[str, float]]


class TokenSource:
    """One provider's access token (see the module docstring)."""

    def __init__(
        self, provider: str, fetch: Fetch, *, margin: float = 300.0, timeout: float = 30.0, clock: Callable[[], float] = time.time
    ) -> None:
        self.provider = provider
        self.fetch = fetch
        self.margin = margin
        #: The longest a request waits for a token (the fetch itself goes on in its thread).
        self.timeout = timeout
        self.clock = clock
        self.fetches = 0
        self._token: tuple[str, float] | None = None
        self._task: asyncio.Future[tuple[str, float]] | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def get(self) -> str:
        """The current token; waits only when there is no unexpired one.

        :raises UpstreamConnectError: when the token had to be fetched and could not be.
        """
        token = self._token
        if token is not None:
            value, expires = token
            left = expires - self.clock()
            if left > self.margin:
                return value
            if left > 0:
                self._start()
                return value
        return await self._wait()

    def _start(self) -> asyncio.Future[tuple[str, float]]:
        if self._task is None:
            self.fetches += 1
            self._task = asyncio.ensure_future(self._refresh())
            self._task.add_done_callback(_retrieved)  # a failure is logged in _refresh and told to waiters
        return self._task

    async def _wait(self) -> str:
        task = self._start()
        try:
            value, _ = await asyncio.wait_for(asyncio.shield(task), self.timeout)
        except TimeoutError:
            raise UpstreamTimeout(f"Provider {self.provider!r} got no access token within {self.timeout:g}s.") from None
        except Exception as exc:  # the fetch's own text may quote a secret: only its type is told
            raise UpstreamConnectError(
                f"Provider {self.provider!r} could not get an access token ({type(exc).__name__})."
            ) from None
        return value

    async def _refresh(self) -> tuple[str, float]:
        try:
            value, expires = await asyncio.to_thread(self.fetch)
            if not isinstance(value, str) or not value:
                raise ValueError("empty token")
            redact.register(value)
            self._token = (value, float(expires))
            self._schedule(float(expires))
            return self._token
        except Exception as exc:
            logger.warning("provider=%s access token refresh failed (%s)", self.provider, type(exc).__name__)
            raise
        finally:
            self._task = None

    def _schedule(self, expires: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        delay = max(1.0, expires - self.margin - self.clock())
        self._timer = asyncio.get_running_loop().call_later(delay, self._background)

    def _background(self) -> None:
        self._timer = None
        self._start()

    async def aclose(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()


def _retrieved(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def load_object(spec: str, key: str) -> Any:
    """``module:attr`` imported (a credential object, or a factory called with no arguments).

    :raises ConfigurationError: naming ``key`` when it cannot be imported.
    """
    module, _, attr = spec.partition(":")
    try:
        found = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigurationError(f"{key}: cannot import {spec!r} ({type(exc).__name__})") from exc
    return found() if callable(found) and not hasattr(found, "get_token") else found


def azure_fetcher(credential: str | None, scope: str | None, key: str) -> Fetch:
    """Entra ID tokens: ``credential`` ``default`` (azure-identity's DefaultAzureCredential:
    environment client secret, workload identity, managed identity, Azure CLI...) or
    ``module:attr`` naming any object with ``get_token(scope)``.

    :raises ConfigurationError: when azure-identity is missing or the object cannot be found.
    """
    if credential in (None, "default"):
        try:
            from azure.identity import DefaultAzureCredential
        except ImportError as exc:
            raise ConfigurationError(f'{key}: auth = "entra" needs azure-identity: pip install "asgi-ai-relay[azure]"') from exc
        source: Any = DefaultAzureCredential()
    else:
        source = load_object(credential, key)
    wanted = scope or AZURE_SCOPE

    def fetch() -> tuple[str, float]:
        token = source.get_token(wanted)
        return token.token, float(token.expires_on)

    return fetch


def google_fetcher(credential: str | None, scope: str | None, key: str) -> Fetch:
    """Google OAuth tokens from a service-account JSON file (``credential``) or application
    default credentials, through google-auth.

    :raises ConfigurationError: when google-auth is missing or the file cannot be read.
    """
    try:
        import google.auth
        import google.auth.transport.requests
        from google.oauth2 import service_account
    except ImportError as exc:
        raise ConfigurationError(f'{key}: auth = "google" needs google-auth: pip install "asgi-ai-relay[vertex]"') from exc
    scopes = [scope or GOOGLE_SCOPE]
    found: list[Any] = []
    if credential:  # a file is read now, so a wrong path stops the start-up
        try:
            found.append(service_account.Credentials.from_service_account_file(credential, scopes=scopes))  # type: ignore[no-untyped-call]
        except (OSError, ValueError, google.auth.exceptions.GoogleAuthError) as exc:
            raise ConfigurationError(f"{key}: cannot load Google credentials ({type(exc).__name__})") from exc

    def fetch() -> tuple[str, float]:
        if not found:  # application default credentials may ask the metadata server: in this thread
            found.append(google.auth.default(scopes=scopes)[0])
        creds = found[0]
        creds.refresh(google.auth.transport.requests.Request())
        expiry = creds.expiry  # naive UTC
        expires = expiry.replace(tzinfo=datetime.timezone.utc).timestamp() if expiry else time.time() + 3000
        return str(creds.token), expires

    return fetch
