"""The ASGI adapter: serve the relay routes under a prefix, pass everything else to the host.

    app.add_middleware(RelayMiddleware, config={...})      # FastAPI / Starlette
    app = RelayMiddleware(app, config="relay.toml")        # any ASGI app
    app = RelayMiddleware(config=...)                      # the relay alone

Websocket scopes go to the host untouched. The host's lifespan passes through too, and the
relay rides on it: it starts when the host starts and is shut down (ledger flushed, clients
closed) when the host stops. The relay never breaks the host's lifespan: a relay that fails to
start is logged and serves degraded (the core starts itself on first use, as under servers
that run no lifespan), unless ``storage.ledger_required`` is set, when the host's start-up is
answered ``lifespan.startup.failed``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson

from .body import Body, client_closed, declared_length, single
from .config import RelayConfig
from .errors import RelayError
from .paths import relay_subpath
from .relay import AuthHook, Relay
from .types import ASGIApp, Caller, Message, Receive, RelayRequest, RelayResponse, Scope, Send

__all__ = ["RelayMiddleware", "scope_user_caller"]

logger = logging.getLogger("asgi_ai_relay")


async def scope_user_caller(request: RelayRequest) -> Caller | None:
    """Callers from Starlette's ``AuthenticationMiddleware``: an authenticated ``scope["user"]``."""
    user = request.host_user
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    identity = getattr(user, "identity", None) or getattr(user, "username", None) or getattr(user, "display_name", None)
    return Caller(id=str(identity), extra={"user": user}) if identity else None


class RelayMiddleware:
    """
    :param app: the host ASGI app; ``None`` to run the relay on its own.
    :param config: a :class:`RelayConfig`, a mapping, a TOML path, or ``None`` for defaults.
    :param relay: an existing :class:`Relay` to serve (shared with other adapters).
    :param auth: the caller hook; defaults to reading ``scope["user"]``. A ``relay`` built
        without a hook of its own takes this one.
    """

    def __init__(
        self,
        app: ASGIApp | None = None,
        *,
        config: RelayConfig | dict[str, Any] | str | None = None,
        relay: Relay | None = None,
        auth: AuthHook | None = scope_user_caller,
        **relay_options: Any,
    ) -> None:
        self.app = app
        if relay is None:
            relay = Relay(config, auth=auth, **relay_options)
        elif relay.auth is None:
            relay.auth = auth
        self.relay = relay
        self.prefix = self.relay.config.prefix
        self.max_body = self.relay.config.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path = relay_subpath(scope["path"], self.prefix, root_path=scope.get("root_path", ""), raw_path=scope.get("raw_path"))
            if path is not None:
                await self.serve(scope, receive, send, path)
                return
        elif kind == "lifespan":
            await self.lifespan(scope, receive, send)
            return
        elif kind == "websocket":
            path = relay_subpath(scope["path"], self.prefix, root_path=scope.get("root_path", ""), raw_path=scope.get("raw_path"))
            if path is not None:
                await self.refuse_websocket(scope, receive, send)
                return
        if self.app is None:
            await self._not_found(send)
            return
        await self.app(scope, receive, send)

    async def lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        refused: str | None = None  # why the relay refuses the host's start-up, when it must

        async def wrapped_receive() -> Message:
            nonlocal refused
            message = await receive()
            if message["type"] == "lifespan.startup":
                refused = await self.start_relay()
            elif message["type"] == "lifespan.shutdown":
                await self.stop_relay()
            return message

        async def wrapped_send(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete" and refused is not None:
                message = {"type": "lifespan.startup.failed", "message": refused}
            await send(message)

        if self.app is not None:
            await self.app(scope, wrapped_receive, wrapped_send)
            return
        while True:
            message = await wrapped_receive()
            if message["type"] == "lifespan.startup":
                await wrapped_send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await wrapped_send({"type": "lifespan.shutdown.complete"})
                return

    async def refuse_websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The relay speaks HTTP only: a WebSocket upgrade on its paths (Codex tries one on
        ``/v1/responses`` first) is answered with 426 Upgrade Required, so the client falls back
        to HTTP. Where the server cannot send an HTTP answer (no ``websocket.http.response``
        extension) the handshake is closed, which the server answers with 403."""
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        if "websocket.http.response" not in scope.get("extensions", {}):
            await send({"type": "websocket.close", "code": 1008})
            return
        body = orjson.dumps({"error": {
            "message": "The relay does not serve WebSocket connections; send the request over HTTP.",
            "type": "invalid_request_error", "param": None, "code": "upgrade_required",
        }})
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "websocket.http.response.start", "status": 426, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})

    async def start_relay(self) -> str | None:
        """Start the relay with the host; a failure is logged, never raised into the host's
        lifespan. Returns the reason to refuse the host's start-up (``ledger_required``), if any."""
        try:
            await self.relay.startup()
        except Exception as exc:
            required = getattr(self.relay.config.storage, "ledger_required", False)
            logger.exception(
                "the relay failed to start (%s); %s", type(exc).__name__,
                "storage.ledger_required is set: refusing the host's start-up" if required
                else "the host starts and the relay serves degraded",
            )
            if required:
                return f"asgi_ai_relay failed to start: {type(exc).__name__}: {exc}"
        return None

    async def stop_relay(self) -> None:
        """Shut the relay down with the host; a failure is logged, never raised into the host."""
        try:
            await self.relay.shutdown()
        except Exception:
            logger.exception("the relay failed to shut down cleanly")

    async def serve(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        relay = self.relay
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request = RelayRequest(
            method=scope["method"],
            path=path,
            headers=headers,
            query=scope.get("query_string", b"").decode("latin-1"),
            client=scope["client"][0] if scope.get("client") else None,
            host_user=scope.get("user"),
            host_request=scope,
        )
        try:
            request.body = await self.read_body(receive, headers)
        except RelayError as error:
            await self.send_whole(send, relay.reject(request, error))
            return

        async def disconnected() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        request.disconnected = disconnected
        response = await relay.handle(request, record_after_send=True)
        if response.stream is None:
            try:
                await self.send_whole(send, response)
            finally:
                if response.sent is not None:
                    response.sent()
        else:
            await self.send_stream(receive, send, response)

    async def read_body(self, receive: Receive, headers: dict[str, str]) -> bytes:
        """The whole body (see :class:`~asgi_ai_relay.body.Body`).

        :raises PayloadTooLarge: from the ``content-length`` header, or while reading.
        :raises RelayError: 499 when the client disconnects before the body is whole.
        """
        limit = self.max_body
        declared = declared_length(limit, headers.get("content-length"))  # refused before a byte is read
        message = await receive()
        if message["type"] != "http.disconnect" and not message.get("more_body", False):
            return single(message.get("body", b""), limit, declared)  # (most requests: one message)
        body = Body(limit, declared)
        while True:
            if message["type"] == "http.disconnect":
                raise client_closed()
            body.add(message.get("body", b""))
            if not message.get("more_body", False):
                return body.complete()
            message = await receive()

    @staticmethod
    async def send_whole(send: Send, response: RelayResponse) -> None:
        headers = response.header_list()
        headers.append((b"content-length", str(len(response.body)).encode()))
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})

    @staticmethod
    async def send_stream(receive: Receive, send: Send, response: RelayResponse) -> None:
        """Send chunks as they come; stop, and close the upstream, the moment the client leaves."""
        stream = response.stream
        assert stream is not None

        async def pump() -> None:
            await send({"type": "http.response.start", "status": response.status, "headers": response.header_list()})
            async for chunk in stream:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        pumping = asyncio.ensure_future(pump())
        watching = asyncio.ensure_future(watch())
        try:
            await asyncio.wait((pumping, watching), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pumping, watching):
                task.cancel()
            await asyncio.gather(pumping, watching, return_exceptions=True)
            await stream.aclose()  # type: ignore[attr-defined]
        if pumping.done() and not pumping.cancelled() and pumping.exception() is not None:
            logger.debug("stream send ended: %r", pumping.exception())

    @staticmethod
    async def _not_found(send: Send) -> None:
        await send({"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"Not Found"})
