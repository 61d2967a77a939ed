"""The admin-only JSON API for managed keys, under the relay's prefix:

=======  ===========================  ===============================================
GET      ``/v1/keys``                 the keys (``?owner=``, ``?team=``), never their secrets
POST     ``/v1/keys``                 create: ``{"owner": ..., "models": [...], "rpm": ...}``;
                                      201 with ``key``, shown this once
GET      ``/v1/keys/{id}``            one key
PATCH    ``/v1/keys/{id}``            change limits, models, expiry, ``enabled``, metadata
DELETE   ``/v1/keys/{id}``            revoke
POST     ``/v1/keys/{id}``            ``{"action": "rotate"}``: a new secret (201, shown once)
GET      ``/v1/key_limits``           every owner's and team's limits
PUT      ``/v1/key_limits/{subject}`` set ``owner:<id>`` or ``team:<name>`` limits
=======  ===========================  ===============================================

Only admin callers (``admin = true`` keys, the host's admins) may call it; others get 403.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote

import orjson

from ..errors import InvalidRequest, NotFound, PermissionDenied
from .admin import KeyAdmin, NoSuchKey
from .directory import KeyDirectory
from .record import Hasher
from .store import KeyStore, keys_from_uri

if TYPE_CHECKING:
    from ..call import Call
    from ..config import RelayConfig
    from ..relay import Relay
    from ..types import RelayResponse

__all__ = ["attach"]

Handler = Callable[[KeyAdmin, "Call", str], Awaitable[tuple[int, Any]]]


Answer = Callable[["Relay", "Call"], Awaitable["RelayResponse"]]


def attach(config: RelayConfig, store: KeyStore | None = None) -> tuple[KeyDirectory | None, KeyAdmin | None, list[tuple[str, str, Answer]]]:
    """A relay's managed keys (``store``, or the one ``storage.keys`` names): its lookups, its
    management, and the admin API's routes (method, path, answering stage) to serve after
    authentication. Without a store both are ``None`` and the API answers 404.

    :raises ConfigurationError: for a ``storage.keys`` scheme no store serves.
    """
    directory = admin = None
    if store is None and config.storage.keys:
        store = keys_from_uri(config.storage.keys)
    if store is not None:
        hasher = Hasher(config.keys.secret.get() if config.keys.secret is not None else None)
        directory = KeyDirectory(store, hasher, config.keys.cache_ttl)
        admin = KeyAdmin(store, hasher, directory)
    return directory, admin, [(method, path, _serving(handler)) for method, path, handler in (
        ("GET", "/v1/keys", _list), ("POST", "/v1/keys", _create), ("GET", "/v1/keys/{id}", _show),
        ("PATCH", "/v1/keys/{id}", _update), ("DELETE", "/v1/keys/{id}", _revoke), ("POST", "/v1/keys/{id}", _rotate),
        ("GET", "/v1/key_limits", _all_limits), ("PUT", "/v1/key_limits/{id}", _put_limits),
    )]


def _serving(handler: Handler) -> Answer:
    async def serve(relay: Relay, call: Call) -> RelayResponse:
        if not call.caller.admin:
            raise PermissionDenied("Managing keys needs an admin caller.")
        admin = relay.key_admin
        if admin is None:
            raise NotFound("No key store is configured on this relay (storage.keys).")
        last = unquote(call.request.path.rpartition("/")[2])
        try:
            status, payload = await handler(admin, call, last)
        except NoSuchKey as exc:
            raise NotFound(f"No key with id {exc.args[0]!r}.") from exc
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from exc
        return relay.json_response(call, payload, status)

    serve.__name__ = handler.__name__
    return serve


def _body(call: Call) -> dict[str, Any]:
    try:
        data = orjson.loads(call.request.body or b"{}")
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest("The request body is not valid JSON.") from exc
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return data


async def _list(admin: KeyAdmin, call: Call, _: str) -> tuple[int, Any]:
    query = dict(parse_qsl(call.request.query))
    records = await admin.store.records(query.get("owner"), query.get("team"))
    return 200, {"object": "list", "data": [r.public() for r in records]}


async def _create(admin: KeyAdmin, call: Call, _: str) -> tuple[int, Any]:
    data = _body(call)
    owner = data.pop("owner", None)
    record, key = await admin.create(owner if isinstance(owner, str) else "", data)
    return 201, {**record.public(), "key": key}


async def _show(admin: KeyAdmin, call: Call, key_id: str) -> tuple[int, Any]:
    return 200, (await admin.get(key_id)).public()


async def _update(admin: KeyAdmin, call: Call, key_id: str) -> tuple[int, Any]:
    return 200, (await admin.update(key_id, _body(call))).public()


async def _revoke(admin: KeyAdmin, call: Call, key_id: str) -> tuple[int, Any]:
    return 200, (await admin.revoke(key_id)).public()


async def _rotate(admin: KeyAdmin, call: Call, key_id: str) -> tuple[int, Any]:
    if _body(call).get("action") != "rotate":
        raise ValueError('POST to a key takes {"action": "rotate"}')
    record, key = await admin.rotate(key_id)
    return 201, {**record.public(), "key": key}


async def _all_limits(admin: KeyAdmin, call: Call, _: str) -> tuple[int, Any]:
    return 200, {"object": "list", "data": [s.as_dict() for s in await admin.store.all_limits()]}


async def _put_limits(admin: KeyAdmin, call: Call, subject: str) -> tuple[int, Any]:
    return 200, (await admin.set_limits(subject, _body(call))).as_dict()
