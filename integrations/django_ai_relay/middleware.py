"""``AIRelayMiddleware``: answers the relay routes under the prefix, passes the rest on.

It runs natively in both of Django's modes. Under ASGI it awaits the core on the server's loop
and streams through ``StreamingHttpResponse`` over the core's async iterator; under WSGI it
drives the core through the process's one loop thread and streams by pulling chunks from it.
It answers before any view runs, so ``CsrfViewMiddleware`` (which checks in ``process_view``)
never sees the relay routes, and every other URL keeps its CSRF protection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from asgiref.sync import async_to_sync, iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse

from asgi_ai_relay import (
    Caller,
    PermissionDenied,
    Relay,
    RelayError,
    RelayRequest,
    RelayResponse,
    client_socket,
    read_body,
    relay_subpath,
)

from asgi_ai_relay.environ import environ_headers

from . import conf as relay_conf

__all__ = ["AIRelayMiddleware", "user_caller"]


def user_caller(request: HttpRequest) -> Caller | None:
    """The default caller: the ``RelayKey`` the request presents, else ``request.user`` when
    authenticated; either way holding ``AI_RELAY_PERMISSION``, limited to the models its
    permissions allow when ``AI_RELAY_MODEL_PERMISSIONS`` is set (:mod:`django_ai_relay.keys`).

    :raises PermissionDenied: an authenticated user without ``AI_RELAY_PERMISSION``.
    :raises AuthenticationError: a revoked or expired key.
    """
    from . import keys

    presented = _presented_key(request)
    if presented is not None:
        caller = keys.key_caller_for(presented)
        if caller is not None:
            return caller
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    permission = relay_conf.conf.AI_RELAY_PERMISSION
    if permission and not user.has_perm(permission):
        raise PermissionDenied(f"This account lacks the {permission} permission needed to call the relay.")
    return keys.with_model_permissions(Caller(id=user.get_username(), admin=user.is_superuser, extra={"user_id": user.pk}), user)


def _presented_key(request: HttpRequest) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    key = value.strip() if scheme.lower() == "bearer" else request.headers.get("x-api-key", "")
    return key if key.startswith("rk-") else None


class AIRelayMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        relay = relay_conf.relay()
        path = self.relay_path(request, relay)
        if path is None:
            return self.get_response(request)
        prepared = self.prepare(request, path, relay)
        if isinstance(prepared, RelayResponse):
            return self.respond(prepared, None)
        sync = relay_conf.sync_relay()
        response = sync.handle(prepared)
        return self.respond(response, sync.chunks(response) if response.stream is not None else None)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        relay = relay_conf.relay()
        path = self.relay_path(request, relay)
        if path is None:
            passed_on: HttpResponseBase = await self.get_response(request)
            return passed_on
        # Reading the body and asking the auth backends may touch files and the database.
        prepared = await sync_to_async(self.prepare)(request, path, relay)
        response = prepared if isinstance(prepared, RelayResponse) else await relay.handle(prepared)
        return self.respond(response, _AsyncChunks(response.stream) if response.stream is not None else None)

    @staticmethod
    def relay_path(request: HttpRequest, relay: Relay) -> str | None:
        """The path below the prefix, or ``None`` when the request is not the relay's."""
        scope = getattr(request, "scope", None)  # ASGIRequest: the path as sent
        raw = scope.get("raw_path") if scope is not None else request.META.get("RAW_URI") or request.META.get("REQUEST_URI")
        if isinstance(raw, str):
            raw = raw.partition("?")[0]
        return relay_subpath(request.path_info, relay.config.prefix, raw_path=raw)

    @staticmethod
    def prepare(request: HttpRequest, path: str, relay: Relay) -> RelayRequest | RelayResponse:
        """The core's request, with the body read and the caller resolved in this thread."""
        relay_request = RelayRequest(
            method=request.method or "GET",
            path=path,
            headers=environ_headers(request.META),
            query=request.META.get("QUERY_STRING", ""),
            client=request.META.get("REMOTE_ADDR"),
            host_user=getattr(request, "user", None),
            host_request=request,
        )
        # Under WSGI the request's socket, where the server exposes it (gunicorn); under ASGI
        # Django's handler reads the body before any middleware and cancels on a disconnect.
        watch = None if getattr(request, "scope", None) is not None else client_socket(request.META)
        try:
            relay_request.body = read_body(request.read, request.META.get("CONTENT_LENGTH"), relay.config.max_body_bytes,
                                           watch.gone if watch is not None else None)
        except RelayError as error:  # too large, cut off, or not readable
            return relay.reject(relay_request, error)
        relay_request.disconnected = watch
        try:
            relay_request.host_caller = relay_conf.caller_function()(request)
        except RelayError as error:
            relay_request.host_caller = error
        except DjangoPermissionDenied as error:
            relay_request.host_caller = PermissionDenied(str(error) or "Not allowed to call the relay.")
        return relay_request

    @staticmethod
    def respond(response: RelayResponse, chunks: Any) -> HttpResponseBase:
        out: HttpResponseBase
        if chunks is None:
            out = HttpResponse(response.body, status=response.status)
        else:
            out = StreamingHttpResponse(chunks, status=response.status)
        for name, value in response.headers.items():
            out[name] = value
        return out


class _AsyncChunks:
    """The core's stream as Django's ASGI handler wants it: iterable, with a ``close`` that
    the handler calls (from a worker thread) when the answer is done or the client has gone."""

    __slots__ = ("stream",)

    def __init__(self, stream: AsyncIterator[bytes]) -> None:
        self.stream = stream

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.stream.__aiter__()

    def close(self) -> None:
        aclose: Callable[[], Awaitable[None]] | None = getattr(self.stream, "aclose", None)
        if aclose is not None:
            async_to_sync(aclose)()
