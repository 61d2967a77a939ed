"""The relay core: one instance per process, framework-neutral, async.

:meth:`Relay.handle` takes a :class:`RelayRequest` and always returns exactly one
:class:`RelayResponse`. The stages run in the order written once, here, in ``ROUTES``:

    parse -> authenticate -> resolve model -> budget -> limits -> cache -> forward -> (translate, stream) -> record

The budget runs before the cache: an over-budget caller is refused even what the cache could
answer, so a budget means one thing. A cache hit ends the pipeline before ``forward``, so it
takes no upstream capacity; it has passed authentication like every other request.

A stage is ``async def stage(relay, call) -> RelayResponse | None``; returning a response ends
the pipeline early (a cache hit), raising a :class:`RelayError` ends it with that error in the
caller's own format. Every request that reaches a route is recorded once, by :meth:`finish`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from functools import partial
from typing import Any
from urllib.parse import parse_qsl

import orjson

from .call import Call
from .config import RelayConfig, load_config
from .errors import NotFound, PermissionDenied, RelayError
from .openapi import openapi_document
from .paths import REFUSED
from .metrics import CONTENT_TYPE, Metrics, metrics_or_none
from .protocol import ANTHROPIC, OPENAI, WireFormat
from .providers import Provider, build_provider
from .report import query_from, read_rows, summarize
from .routing import Router
from .stages import auth as auth_stage
from .stages import budget, parse, ratelimit, route, usage
from .stages import cache as cache_stage
from .storage import Cache, Ledger, LedgerQuery, RateLimitStore, cache_from_uri, ledger_from_uri
from .transport import UpstreamHttp, make_client
from .types import Caller, RelayRequest, RelayResponse

__all__ = ["Relay", "Route", "Stage"]

logger = logging.getLogger("asgi_ai_relay")

Stage = Callable[["Relay", Call], Awaitable[RelayResponse | None]]
AuthHook = Callable[[RelayRequest], Awaitable[Caller | None]]

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
# Generated ids: a random per-process prefix and a counter, unique without a system call per
# request (os.urandom, behind uuid4, was a visible cost in profiles).
_ID_PREFIX = secrets.token_hex(8)
_ID_COUNTER = itertools.count(1)


def _new_id_prefix() -> None:  # forked workers must not share the parent's ids
    global _ID_PREFIX
    _ID_PREFIX = secrets.token_hex(8)


os.register_at_fork(after_in_child=_new_id_prefix)


class Route:
    """An endpoint: the caller's wire format and the stages that answer it."""

    __slots__ = ("endpoint", "format", "stages")

    def __init__(self, endpoint: str, format: WireFormat, stages: Sequence[Stage]) -> None:
        self.endpoint = endpoint
        self.format = format
        self.stages = tuple(stages)


async def list_models(relay: Relay, call: Call) -> RelayResponse:
    data = []
    for alias, model in relay.config.models.items():
        multiplier = relay.config.providers[model.provider].price_multiplier
        data.append(
            {
                "id": alias,
                "object": "model",
                "created": 0,
                "owned_by": model.provider,
                "provider": model.provider,
                "upstream": model.upstream,
                "pricing": {
                    "currency": "USD",
                    "unit": "per_million_tokens",
                    "input": str(model.price.input * multiplier),
                    "output": str(model.price.output * multiplier),
                    "cached_input": str((model.price.cached_input if model.price.cached_input is not None else model.price.input) * multiplier),
                },
            }
        )
    return relay.json_response(call, {"object": "list", "data": data})


async def usage_report(relay: Relay, call: Call) -> RelayResponse:
    """Usage from the ledger: ``?caller=&model=&from=&to=&group_by=model,day&compare=catalog``.

    :raises PermissionDenied: when a caller that is not an admin asks for another's usage.
    """
    params = dict(parse_qsl(call.request.query))
    caller = call.caller
    if not caller.admin:
        if params.get("caller", caller.id) != caller.id:
            raise PermissionDenied("Only an admin caller may read another caller's usage.")
        params["caller"] = caller.id
    query = query_from(params, tuple(sorted(relay.model_endpoints)))
    group_by = [g for g in params.get("group_by", "").split(",") if g]
    rows = await asyncio.to_thread(read_rows, relay.ledger, query)
    return relay.json_response(call, summarize(relay.config, rows, group_by, params.get("compare") or None))


async def metrics_text(relay: Relay, call: Call) -> RelayResponse:
    if relay.metrics is None:
        raise NotFound("Metrics are off (set metrics.enabled and install the 'metrics' extra).")
    call.headers["content-type"] = CONTENT_TYPE
    return RelayResponse(200, call.headers, relay.metrics.render())


async def openapi_json(relay: Relay, call: Call) -> RelayResponse:
    call.headers["content-type"] = "application/json"
    return RelayResponse(200, call.headers, relay.openapi)


async def health_report(relay: Relay, call: Call) -> RelayResponse:
    return relay.json_response(call, await relay.router.health())


class Relay:
    """The whole pipeline, shared by the ASGI middleware and the Django and Flask adapters.

    :param config: a :class:`RelayConfig`, a mapping, a TOML path, or ``None`` for defaults.
    :param auth: the host's caller hook (see :mod:`asgi_ai_relay.stages.auth`).
    :param ledger: a ledger instance; by default the one ``storage.ledger`` names.
    :param transport: an httpx transport; the upstream client then uses httpx (proxies, custom networking).
    :param limits_store: a rate-limit store; by default the one ``storage.limits`` names.
    :param logger: where the per-request line goes; ``asgi_ai_relay`` by default (Flask passes a
        child of ``app.logger``).
    :raises ConfigurationError: when the configuration is not valid.
    """

    def __init__(
        self,
        config: RelayConfig | dict[str, Any] | str | None = None,
        *,
        auth: AuthHook | None = None,
        ledger: Ledger | None = None,
        transport: Any = None,
        limits_store: RateLimitStore | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.config = load_config(config)
        self.logger = logger if logger is not None else logging.getLogger("asgi_ai_relay")
        self.auth = auth
        self.keys = auth_stage.KeyTable(self.config.api_keys)
        self._transport = transport
        self._ledger = ledger
        self._cache: Cache | None = None
        #: Single-flight: cache key -> the answer of the identical request in progress.
        self.flights: dict[str, asyncio.Future[bytes | None]] = {}
        #: Cache writes in progress (awaited on shutdown).
        self.background: set[asyncio.Task[None]] = set()
        self.spend = budget.Spend(self.config.budgets) if self.config.budgets.active else None
        self.metrics: Metrics | None = metrics_or_none(self.config.metrics.enabled)
        self._client: UpstreamHttp | None = None
        self._providers: dict[str, Provider] | None = None
        self.traffic = ratelimit.Traffic(self.config, limits_store)
        self.router = Router(self.config)
        if self.metrics is not None:
            gate, traffic = self.traffic.gate, self.traffic
            self.metrics.watch_queue_depth(lambda: {
                ("waiting",): gate.waiting, ("in_flight",): gate.in_flight, ("sleeping",): traffic.sleeping,
            })
        self.routes: dict[tuple[str, str], Route] = {}
        self.model_endpoints: set[str] = set()
        self.started = False
        # Auth first: a caller the relay does not know learns nothing about its bodies or models.
        # Budget before limits and cache: an over-budget caller is refused outright. Limits before
        # the cache: caller rate limits count every request; a hit still never reaches forward,
        # so it takes no upstream capacity (provider concurrency, queue) nor provider quota.
        chat = [
            auth_stage.authenticate, parse.parse, route.resolve, budget.check, ratelimit.admit,
            cache_stage.lookup, route.forward,
        ]
        self.add_route("POST", "/v1/chat/completions", Route("chat.completions", OPENAI, chat), model=True)
        self.add_route("POST", "/v1/messages", Route("messages", ANTHROPIC, chat), model=True)
        counting = [auth_stage.authenticate, parse.parse, route.resolve, route.count_tokens]
        self.add_route("POST", "/v1/messages/count_tokens", Route("messages.count_tokens", ANTHROPIC, counting))
        self.add_route("GET", "/v1/models", Route("models", OPENAI, [auth_stage.authenticate, list_models]))
        self.add_route("GET", "/v1/usage", Route("usage", OPENAI, [auth_stage.authenticate, usage_report]))
        self.add_route("GET", "/v1/health", Route("health", OPENAI, [auth_stage.authenticate, health_report]))
        self.add_route("GET", "/metrics", Route("metrics", OPENAI, [auth_stage.authenticate, metrics_text]))
        self.add_route("GET", "/openapi.json", Route("openapi", OPENAI, [auth_stage.authenticate, openapi_json]))
        from . import __version__

        #: ``{prefix}/openapi.json``, serialised once.
        self.openapi = orjson.dumps(openapi_document(self.config.prefix, __version__, [*self.config.models, *self.config.routing.virtual]))

    def add_route(self, method: str, path: str, route: Route, *, model: bool = False) -> None:
        """Serve ``path`` (relative to the prefix); ``model`` routes count in the usage totals."""
        self.routes[(method, path)] = route
        if model:
            self.model_endpoints.add(route.endpoint)

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            self._ledger = ledger_from_uri(self.config.storage.ledger)
        return self._ledger

    @property
    def cache(self) -> Cache:
        """The response cache ``storage.cache`` names (opened on first use)."""
        if self._cache is None:
            self._cache = cache_from_uri(self.config.storage.cache)
        return self._cache

    @property
    def providers(self) -> dict[str, Provider]:
        if self._providers is None:
            self._providers = {
                name: build_provider(cfg, self.client, self.config.timeouts)
                for name, cfg in self.config.providers.items()
            }
        return self._providers

    @property
    def client(self) -> UpstreamHttp:
        """The one pooled upstream client of this relay (opened on first use, in the loop)."""
        if self._client is None:
            self._client = make_client(self.config.http, self.config.timeouts, self._transport)
        return self._client

    async def startup(self) -> None:
        """Open the ledger and the upstream client; called by the host's lifespan."""
        if not self.started:
            self.started = True
            _ = self.ledger, self.providers
            if self.config.cache.mode != "off":
                _ = self.cache
            if self.spend is not None:
                since = budget.month_start(time.time())
                rows = await asyncio.to_thread(read_rows, self.ledger, LedgerQuery(since=since))
                self.spend.seed(rows)

    async def shutdown(self) -> None:
        """Close the upstream client and flush the ledger; nothing recorded is lost."""
        if self.background:
            await asyncio.gather(*list(self.background), return_exceptions=True)
        if self._cache is not None:
            await self._cache.aclose()
            self._cache = None
        if self._providers is not None:
            for provider in self._providers.values():
                await provider.aclose()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
            self._providers = None
        await self.traffic.aclose()
        await self.router.aclose()
        if self.spend is not None:
            await self.spend.aclose()
        if self._ledger is not None:
            self._ledger.close()
        self.started = False

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background, awaited on shutdown: for a release that needs I/O
        (a Redis refund), scheduled from the synchronous :meth:`finish`."""
        task = asyncio.get_running_loop().create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    # -- requests ------------------------------------------------------------------------

    def match(self, method: str, path: str) -> Route | None:
        return self.routes.get((method, path))

    async def handle(self, request: RelayRequest, *, record_after_send: bool = False) -> RelayResponse:
        """Answer one request. Never raises for anything the request did.

        :param record_after_send: for an adapter that writes the answer itself: a whole answer
            comes back with ``response.sent`` set, and the request is recorded (ledger, limits,
            cache, metrics) when the adapter calls it, after the bytes are on their way, so the
            caller does not wait for the bookkeeping. The adapter must call it exactly once,
            also when the send fails (``try``/``finally``). Errors and streams record as usual.
        """
        route = self.routes.get((request.method, request.path))
        call = self._new_call(request, route)
        if route is None:
            return self._unrouted(call)
        try:
            for stage in route.stages:
                response = await stage(self, call)
                if response is not None:
                    break
            else:  # pragma: no cover - every route ends in a stage that answers
                raise NotFound("No stage answered this request.")
        except RelayError as error:
            return self.error_response(call, error)
        except Exception:
            logger.exception("request_id=%s failed inside the relay", call.request_id)
            return self.error_response(call, RelayError("The relay failed to handle this request."))
        except asyncio.CancelledError:
            # The host gave up on the request (client gone, shutdown): still one ledger row,
            # and whatever it held (a queue place, a slot) is given back.
            call.status = ratelimit.CLIENT_CLOSED
            self.finish(call)
            raise
        if response.stream is None:
            call.status = response.status
            call.output = [response.body]
            if record_after_send:
                response.sent = partial(self.finish, call)
            else:
                self.finish(call)
        return response

    def reject(self, request: RelayRequest, error: RelayError) -> RelayResponse:
        """The answer to a request refused before it could be read (a body over the limit)."""
        call = self._new_call(request, self.routes.get((request.method, request.path)))
        return self.error_response(call, error)

    def _new_call(self, request: RelayRequest, route: Route | None) -> Call:
        endpoint, wire = (route.endpoint, route.format) if route is not None else ("unknown", OPENAI)
        call = Call(request, self._request_id(request), endpoint, wire)
        call.headers["x-request-id"] = call.request_id
        return call

    def _unrouted(self, call: Call) -> RelayResponse:
        request = call.request
        error: RelayError
        if request.path == REFUSED:
            error = NotFound(
                "No relay endpoint here: the relay serves only exact, canonical paths "
                "(no '//', '.', '..', percent-encoding, or other case)."
            )
        elif any(path == request.path for (_, path) in self.routes):
            error = RelayError(f"Method {request.method} is not allowed on {request.path}.", status_code=405)
            error.error_type, error.code = "invalid_request_error", "method_not_allowed"
        else:
            error = NotFound(f"No relay endpoint at {request.path}.")
        return self.error_response(call, error)

    def error_response(self, call: Call, error: RelayError) -> RelayResponse:
        call.status = error.status_code
        call.error = error
        self.finish(call)
        headers = call.headers | error.headers
        headers["content-type"] = "application/json"
        return RelayResponse(error.status_code, headers, call.format.error_body(error))

    def json_response(self, call: Call, payload: Any, status: int = 200) -> RelayResponse:
        call.headers["content-type"] = "application/json"
        return RelayResponse(status, call.headers, orjson.dumps(payload))

    def finish(self, call: Call) -> None:
        """Record a finished request once: ledger, totals, log line."""
        if call.finished:
            return
        call.finished = True
        try:
            usage.price(self, call)
        except Exception:
            logger.exception("request_id=%s could not be priced", call.request_id)
        # What the request took is given back once its real usage and cost are known.
        call.release_all()
        if call.traffic is not None:
            try:
                self.traffic.release(call)
            except Exception:
                logger.exception("request_id=%s could not release its limits", call.request_id)
        try:
            usage.record(self, call)
            if call.cache_key is not None:
                cache_stage.complete(self, call)
            if self.metrics is not None:
                self.metrics.observe(call)
        except Exception:
            logger.exception("request_id=%s could not be recorded", call.request_id)

    @staticmethod
    def _request_id(request: RelayRequest) -> str:
        given = request.headers.get("x-request-id")
        if given and _REQUEST_ID.fullmatch(given):
            return given
        return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"

