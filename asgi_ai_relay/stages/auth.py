"""Authentication: who is calling. Relay API keys first (the configuration's static ones,
then managed keys, :mod:`asgi_ai_relay.keys`), then the host's own auth.

The host plugs in an :class:`AuthHook`, an async callable that reads the request (its user,
its session) and returns a :class:`Caller` or ``None``, in the manner of Starlette's
``AuthenticationBackend.authenticate``. Relay keys are looked up by their SHA-256 digest: the
keys themselves are not kept, and a lookup's timing can tell only about digests, which reveal
nothing of a key (a hash lookup compares digests, never the key's characters one by one).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from ..config import ApiKey
from ..errors import AuthenticationError
from ..types import ANONYMOUS, Caller, RelayRequest

if TYPE_CHECKING:
    from ..call import Call
    from ..relay import Relay
    from ..types import RelayResponse

__all__ = ["AuthHook", "KeyTable", "authenticate", "host_caller", "presented_key"]

AuthHook = Callable[[RelayRequest], Awaitable[Caller | None]]


def presented_key(request: RelayRequest) -> str | None:
    """The credential the client sent: ``Authorization: Bearer``, Anthropic's ``x-api-key``,
    Gemini's ``x-goog-api-key``, or (on the Gemini routes only) Gemini's ``?key=``."""
    headers = request.headers
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = headers.get("x-api-key") or headers.get("x-goog-api-key")
    if not key and request.query and request.path.startswith("/v1beta/"):
        key = dict(parse_qsl(request.query)).get("key")
    return key or None


async def host_caller(request: RelayRequest) -> Caller | None:
    """The hook of adapters that resolve the caller before the core runs (Django, Flask): it
    returns ``request.host_caller``.

    :raises RelayError: the one the adapter put there (a user without the permission: 403).
    """
    resolved = request.host_caller
    if isinstance(resolved, Exception):
        raise resolved
    return resolved if isinstance(resolved, Caller) else None


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class KeyTable:
    """Relay API keys, held only as digests."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self._callers = {
            k.digest: Caller(id=k.caller, priority=k.priority, admin=k.admin) for k in keys
        }

    def __bool__(self) -> bool:
        return bool(self._callers)

    def lookup(self, key: str) -> Caller | None:
        return self._callers.get(_digest(key))


async def authenticate(relay: Relay, call: Call) -> RelayResponse | None:
    """:raises AuthenticationError: when auth is required and nothing vouches for the caller,
    or when the client sent a relay key that is not valid (or a managed key revoked or expired).
    :raises ServiceUnavailable: the key store cannot be reached and the key is not cached."""
    request = call.request
    managed = relay.key_directory
    key = presented_key(request) if relay.keys or managed is not None else None
    if key is not None:
        caller = relay.keys.lookup(key)
        if caller is None and managed is not None:
            caller = await managed.caller(key)  # a revoked or expired key: 401 here
        if caller is not None:
            call.caller = caller
            return None
    if relay.auth is not None:
        caller = await relay.auth(request)
        if caller is not None:
            # The store's limits of the owner apply however the owner signs in.
            call.caller = caller if managed is None else await managed.with_owner_limits(caller)
            return None
    if key is not None:
        raise AuthenticationError("The API key is not valid for this relay.")
    if relay.config.require_auth:
        raise AuthenticationError(
            "Authentication required: send a relay API key as 'Authorization: Bearer <key>'."
        )
    call.caller = ANONYMOUS
    return None
