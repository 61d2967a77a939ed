"""Flask integration for asgi-ai-relay: the relay's routes served from inside a Flask app.

    relay = AIRelay(app)                     # or: relay = AIRelay(); relay.init_app(app)
    app.config["AI_RELAY"] = {"prefix": "/ai", "providers": {...}}   # the schema every host shares

    @relay.caller_loader
    def load_caller():                       # runs in Flask's request context: g, session, current_user
        if current_user.is_authenticated:    # flask-login; or: session.get("user_id")
            return Caller(id=current_user.get_id())
        return None                          # nobody: 401 (require_auth defaults to true here)

Flask is WSGI: each relay request is answered in the thread the server gave it, which hands the
async core to the process's one event loop thread and waits; a streamed answer is a generator
pulling chunks from that loop, so a long stream holds its own thread and no other. The relay's
per-request log line goes to ``app.logger.getChild("ai_relay")``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

try:
    from flask import Flask, Response, current_app, request
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("flask_ai_relay needs Flask: pip install 'asgi-ai-relay[flask]'") from exc
from blinker import Namespace
from werkzeug.exceptions import HTTPException

from asgi_ai_relay import (
    REFUSED,
    AuthenticationError,
    Caller,
    PermissionDenied,
    Relay,
    RelayError,
    RelayRequest,
    RelayResponse,
    SyncRelay,
    client_socket,
    host_caller,
    read_body,
    relay_subpath,
)
from asgi_ai_relay.alerts import Alert
from asgi_ai_relay.environ import environ_headers

__all__ = ["AIRelay", "CallerLoader", "spend_alert"]

#: Sent (sender: the app) once per caller, budget period and threshold, across workers, with
#: ``alert=`` an :class:`asgi_ai_relay.alerts.Alert`, from a worker thread of the relay (no
#: app context): ``@spend_alert.connect_via(app) def on_alert(app, alert): ...``.
spend_alert = Namespace().signal("spend-alert")

#: Returns the caller (a :class:`Caller`, or just its id), or ``None`` when nobody is logged in.
CallerLoader = Callable[[], "Caller | str | None"]

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
EXTENSION = "ai_relay"


class AIRelay:
    """The Flask extension.

    :param app: the app to serve, or ``None`` to call :meth:`init_app` later.
    :param config: settings merged over ``app.config["AI_RELAY"]`` for this instance.
    :param relay_options: passed to :class:`Relay` (``ledger=``, ``transport=``...).
    """

    def __init__(self, app: Flask | None = None, *, config: dict[str, Any] | None = None, **relay_options: Any) -> None:
        self.config = dict(config or {})
        self.relay_options = relay_options
        self.load_caller: CallerLoader | None = None
        if app is not None:
            self.init_app(app)

    def caller_loader(self, function: CallerLoader) -> CallerLoader:
        """Decorator: register the function that tells who is calling (see the module docs)."""
        self.load_caller = function
        return function

    def init_app(self, app: Flask) -> None:
        """Validate the settings, build the app's relay and add its routes.

        :raises ConfigurationError: naming the bad key of ``AI_RELAY``.
        """
        settings = {"require_auth": True, **app.config.get("AI_RELAY", {}), **self.config}
        options = {"logger": app.logger.getChild("ai_relay"), **self.relay_options}
        relay = Relay(settings, auth=host_caller, **options)

        def send_spend_alert(alert: Alert) -> None:
            spend_alert.send(app, alert=alert)

        relay.alerts.sinks.append(send_spend_alert)
        app.extensions[EXTENSION] = SyncRelay(relay)
        prefix = relay.config.prefix
        app.add_url_rule(prefix, EXTENSION, self.serve, defaults={"path": ""}, methods=METHODS)
        app.add_url_rule(f"{prefix}/<path:path>", EXTENSION, self.serve, methods=METHODS)
        app.wsgi_app = _BeforeFlask(app.wsgi_app, app.extensions[EXTENSION])  # type: ignore[method-assign]
        csrf = app.extensions.get("csrf")  # Flask-WTF: API routes take no form token
        if csrf is not None:
            csrf.exempt(self.serve)

    @staticmethod
    def relay_for(app: Flask) -> Relay:
        """The relay :meth:`init_app` built for ``app`` (its ledger, its usage totals)."""
        return app.extensions[EXTENSION].relay  # type: ignore[no-any-return]

    def serve(self, path: str) -> Response:
        sync: SyncRelay = current_app.extensions[EXTENSION]
        environ = request.environ
        subpath = environ.get(SUBPATH_KEY) if environ.get(SUBPATH_OF) is sync else _subpath(environ, sync.relay)
        relay_request = RelayRequest(
            method=request.method,
            path=subpath or REFUSED,
            headers=environ_headers(environ),
            query=environ.get("QUERY_STRING", ""),
            client=environ.get("REMOTE_ADDR"),
        )
        watch = client_socket(environ)
        try:
            relay_request.body = read_body(request.stream.read, environ.get("CONTENT_LENGTH"),
                                           sync.relay.config.max_body_bytes, watch.gone if watch is not None else None)
        except RelayError as error:  # too large, cut off, or not readable
            return _flask_response(sync.relay.reject(relay_request, error))
        relay_request.disconnected = watch
        relay_request.host_caller = self._caller()
        response = sync.handle(relay_request)
        return _flask_response(response, sync)

    def _caller(self) -> Caller | RelayError | None:
        """The loader's answer, taken here in the request context, before the core runs."""
        if self.load_caller is None:
            return None
        try:
            caller = self.load_caller()
        except RelayError as error:
            return error
        except HTTPException as error:  # abort(401) / abort(403) in the loader
            kind = {401: AuthenticationError, 403: PermissionDenied}.get(error.code or 0)
            if kind is None:
                raise
            return kind(error.description or "Not allowed to call the relay.")
        if caller is None or isinstance(caller, Caller):
            return caller
        return Caller(id=str(caller))


#: Where :class:`_BeforeFlask` leaves the path below the prefix for :meth:`AIRelay.serve`, and
#: for which relay (an app may have several).
SUBPATH_KEY, SUBPATH_OF = "ai_relay.subpath", "ai_relay.subpath_of"


def _subpath(environ: dict[str, Any], relay: Relay) -> str | None:
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    path = environ.get("PATH_INFO", "")
    return relay_subpath(path, relay.config.prefix, raw_path=raw.partition("?")[0] if isinstance(raw, str) else None)


#: Methods Flask routes to :meth:`AIRelay.serve` (``HEAD`` and ``OPTIONS`` Flask adds itself;
#: ``OPTIONS`` stays Flask's, for CORS extensions to answer preflights).
ROUTED = frozenset([*METHODS, "HEAD", "OPTIONS"])


class _BeforeFlask:
    """In front of the Flask app, the relay answers (in its own format, not Flask's HTML) what
    Flask would not route to it: other spellings of the prefix (``//ai``, ``/AI``, ``/ai/../x``,
    ``%2F``, a 404, so they reach neither Flask's slash-merging redirects nor a catch-all route
    of the host) and methods outside :data:`ROUTED` (a 405 on the relay's routes)."""

    def __init__(self, app: Any, sync: SyncRelay) -> None:
        self.app = app
        self.sync = sync

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = _subpath(environ, self.sync.relay)
        method = environ.get("REQUEST_METHOD", "GET")
        if path is None or (path != REFUSED and method in ROUTED):
            environ[SUBPATH_KEY], environ[SUBPATH_OF] = path, self.sync  # serve() need not work it out again
            return self.app(environ, start_response)
        request = RelayRequest(method=method, path=path, headers={})
        response = self.sync.handle(request)
        return _flask_response(response)(environ, start_response)


def _flask_response(response: RelayResponse, sync: SyncRelay | None = None) -> Response:
    if response.stream is None or sync is None:
        return Response(response.body, status=response.status, headers=response.headers)
    return Response(sync.chunks(response), status=response.status, headers=response.headers, direct_passthrough=True)
