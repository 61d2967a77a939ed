"""The relay core: one instance per process, framework-neutral, async.

:meth:`Relay.handle` takes a :class:`RelayRequest` and always returns exactly one
:class:`RelayResponse`. Everything that runs is listed here, in the order it runs:

- ``MODEL_STAGES`` for a model request: authenticate, parse, resolve the model, hold its
  budget, charge the caller's limits, look in the cache, then ``forward``: the attempt loop,
  which per attempt takes the deployment's breaker pass and the upstream half of admission
  (the model's and provider's limits, the provider's slot), sends, translates the answer, and
  for a stream reads up to its first piece with content.
- ``EMBEDDING_STAGES`` for ``/v1/embeddings``: the same, with the embeddings checks after the
  model is resolved, a cache per input item, and the embeddings call in the attempt loop
  (:mod:`.stages.embed`, :mod:`.stages.embed_cache`).
- ``FINISH_STEPS`` once, however the request ends (answer, error, cancellation, the caller
  leaving mid-stream): price it, give back everything it took (:meth:`Call.release_all`),
  write its ledger row and log line, store a cacheable answer, count it in the metrics.

The budget runs before the cache: an over-budget caller is refused even what the cache could
answer, so a budget means one thing. A cache hit ends the pipeline before ``forward``, so it
takes no upstream capacity; it has passed authentication like every other request.

A stage is ``async def stage(relay, call) -> RelayResponse | None``; returning a response ends
the pipeline early (a cache hit), raising a :class:`RelayError` ends it with that error in the
caller's own format. Whatever a stage takes it registers with :meth:`Call.hold`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

import orjson

from ._version import __version__
from .alerts import Alerts
from .call import Call
from .config import RelayConfig, load_config
from .dashboard import dashboard_page
from .endpoints import health_report, list_models, metrics_text, openapi_json, probe, usage_report
from .errors import CLIENT_CLOSED, NotFound, RelayError
from .lifecycle import Lifecycle
from .metrics import Metrics, metrics_or_none
from .openapi import openapi_document
from .paths import REFUSED
from .readiness import readyz
from .protocol import ANTHROPIC, EMBEDDINGS, GEMINI, OPENAI, RESPONSES, WireFormat
from .providers import Provider
from .request_ids import request_id
from .routing import Router
from .keys import api as keys_api
from .keys.store import KeyStore
from .stages import access
from .stages import auth as auth_stage
from .stages import admission, budget, embed, embed_cache, gemini, parse, ratelimit, responses, route, usage
from .stages import cache as cache_stage
from .stages.auth import AuthHook
from .telemetry import Telemetry
from .telemetry import finish as telemetry_finish
from .storage import Cache, Ledger, RateLimitStore
from .storage.responses import ResponseStore, response_store_from_uri
from .transport import UpstreamHttp
from .types import RelayRequest, RelayResponse

__all__ = ["AuthHook", "Relay", "Route", "Stage"]

logger = logging.getLogger("asgi_ai_relay")

Stage = Callable[["Relay", Call], Awaitable[RelayResponse | None]]
FinishStep = Callable[["Relay", Call], None]

MODEL_STAGES: tuple[Stage, ...] = (
    auth_stage.authenticate, parse.parse, route.resolve, access.authorize, admission.admit,
    cache_stage.lookup, route.forward,
)
EMBEDDING_STAGES: tuple[Stage, ...] = (
    auth_stage.authenticate, parse.parse, route.resolve, access.authorize, embed.prepare, admission.admit,
    embed_cache.lookup, embed.forward,
)
#: The Responses API: the model stages, its stored conversation restored after parsing and
#: the answer's kept by ``forward`` (the route's, wrapped).
RESPONSES_STAGES: tuple[Stage, ...] = (*MODEL_STAGES[:2], responses.restore, *MODEL_STAGES[2:-1], responses.forward)
COUNT_STAGES: tuple[Stage, ...] = (auth_stage.authenticate, parse.parse, route.resolve, access.authorize, budget.guard,
                                   route.count_tokens)
#: Gemini-native ``/v1beta/models/{model}:ACTION``: the model and the kind of answer from the URL.
GEMINI_STAGES: tuple[Stage, ...] = (*MODEL_STAGES[:2], gemini.target, *MODEL_STAGES[2:-1], gemini.forward)
GEMINI_COUNT_STAGES: tuple[Stage, ...] = (*COUNT_STAGES[:2], gemini.target, *COUNT_STAGES[2:-1], gemini.count_tokens)


def _release(relay: Relay, call: Call) -> None:
    call.release_all()


def _observe(relay: Relay, call: Call) -> None:
    if relay.metrics is not None:
        relay.metrics.observe(call)


FINISH_STEPS: tuple[FinishStep, ...] = (usage.price, _release, usage.record, cache_stage.complete, _observe, telemetry_finish)


class Route:
    """An endpoint: the caller's wire format and the stages that answer it."""

    __slots__ = ("endpoint", "format", "stages")

    def __init__(self, endpoint: str, format: WireFormat, stages: Sequence[Stage]) -> None:
        self.endpoint = endpoint
        self.format = format
        self.stages = tuple(stages)


class Relay(Lifecycle):
    """The whole pipeline, shared by the ASGI middleware and the Django and Flask adapters.

    :param config: a :class:`RelayConfig`, a mapping, a TOML path, or ``None`` for defaults.
    :param auth: the host's caller hook (see :mod:`asgi_ai_relay.stages.auth`).
    :param ledger: a ledger instance; by default the one ``storage.ledger`` names.
    :param transport: an httpx transport; the upstream client then uses httpx (proxies, custom networking).
    :param limits_store: a rate-limit store; by default the one ``storage.limits`` names.
    :param key_store: a store of managed keys; by default the one ``storage.keys`` names.
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
        key_store: KeyStore | None = None,
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
        keys = self.config.keys.caller_limits or bool(self.config.storage.keys) or key_store is not None
        self.spend = budget.Spend(self.config.budgets) if self.config.budgets.active or keys else None
        #: Budget alerts; a host adds its own sinks (signals) to ``alerts.sinks``.
        self.alerts = Alerts(self.config.alerts, self.config.budgets.soft_threshold)
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
            self.metrics.watch_breakers(self.router.health)
        self.telemetry = Telemetry(self)
        self.routes: dict[tuple[str, str], Route] = {}
        self.model_endpoints: set[str] = set()
        self._init_lifecycle()
        self.add_route("POST", "/v1/chat/completions", Route("chat.completions", OPENAI, MODEL_STAGES), model=True)
        self.add_route("POST", "/v1/messages", Route("messages", ANTHROPIC, MODEL_STAGES), model=True)
        self.add_route("POST", "/v1/embeddings", Route("embeddings", EMBEDDINGS, EMBEDDING_STAGES), model=True)
        self.add_route("POST", "/v1/responses", Route("responses", RESPONSES, RESPONSES_STAGES), model=True)
        #: Stored Responses conversations (``previous_response_id``), per caller.
        self.responses: ResponseStore = response_store_from_uri(self.config.storage.responses)
        self.add_route("POST", "/v1/responses/input_tokens", Route("responses.input_tokens", RESPONSES,
                                                                   (*COUNT_STAGES[:-1], responses.count_input)))
        for method, answer in (("GET", responses.get_response), ("DELETE", responses.delete_response)):
            self.add_route(method, "/v1/responses/{id}", Route("responses.stored", RESPONSES, (auth_stage.authenticate, answer)))
        self.add_route("POST", "/v1/messages/count_tokens", Route("messages.count_tokens", ANTHROPIC, COUNT_STAGES))
        for action in ("generateContent", "streamGenerateContent"):
            self.add_route("POST", f"/v1beta/models/{{model}}:{action}", Route(action, GEMINI, GEMINI_STAGES), model=True)
        self.add_route("POST", "/v1beta/models/{model}:countTokens", Route("countTokens", GEMINI, GEMINI_COUNT_STAGES))
        self.add_route("GET", "/v1beta/models", Route("models", GEMINI, (auth_stage.authenticate, gemini.list_models)))
        self.add_route("GET", "/v1beta/models/{id}", Route("models", GEMINI, (auth_stage.authenticate, gemini.get_model)))
        for path, endpoint, answer in (
            ("/v1/models", "models", list_models), ("/v1/usage", "usage", usage_report),
            ("/v1/health", "health", health_report), ("/metrics", "metrics", metrics_text),
            ("/openapi.json", "openapi", openapi_json), ("/dashboard", "dashboard", dashboard_page),
        ):
            self.add_route("GET", path, Route(endpoint, OPENAI, (auth_stage.authenticate, answer)))
        self.key_directory, self.key_admin, key_routes = keys_api.attach(self.config, key_store)
        for method, path, serve in key_routes:
            self.add_route(method, path, Route("keys", OPENAI, (auth_stage.authenticate, serve)))
        self.add_route("GET", "/readyz", Route("readyz", OPENAI, (readyz,)))  # probes send no key
        for method in ("HEAD", "GET"):
            for root in ("", "/"):
                self.add_route(method, root, Route("probe", OPENAI, (probe,)))  # base-URL probes send no key either
        #: ``{prefix}/openapi.json``, serialised once.
        self.openapi = orjson.dumps(openapi_document(self.config.prefix, __version__, [*self.config.models, *self.config.routing.virtual]))

    def add_route(self, method: str, path: str, route: Route, *, model: bool = False) -> None:
        """Serve ``path`` (relative to the prefix); ``model`` routes count in the usage totals."""
        self.routes[(method, path)] = route
        if model:
            self.model_endpoints.add(route.endpoint)

    # -- requests ------------------------------------------------------------------------

    def match(self, method: str, path: str) -> Route | None:
        """The route at ``path``; a route whose path ends in ``/{id}`` takes any last segment,
        one ending in ``/{model}:ACTION`` any last segment ending in ``:ACTION``."""
        routes = self.routes
        found = routes.get((method, path))
        if found is None:
            head, _, last = path.rpartition("/")
            found = routes.get((method, f"{head}/{{model}}:{last.rpartition(':')[2]}")) if ":" in last else None
            found = found or routes.get((method, head + "/{id}"))
        return found

    async def handle(self, request: RelayRequest, *, record_after_send: bool = False) -> RelayResponse:
        """Answer one request. Never raises for anything the request did.

        :param record_after_send: for an adapter that writes the answer itself: a whole answer
            comes back with ``response.sent`` set, and the request is recorded (ledger, limits,
            cache, metrics) when the adapter calls it, after the bytes are on their way, so the
            caller does not wait for the bookkeeping. The adapter must call it exactly once,
            also when the send fails (``try``/``finally``). Errors and streams record as usual.
        """
        route = self.match(request.method, request.path)
        call = self._new_call(request, route)
        if route is None:
            return self._unrouted(call)
        try:
            if not self.started or self._unseeded:
                await self.startup()
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
            call.status = CLIENT_CLOSED
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
        call = self._new_call(request, self.match(request.method, request.path))
        return self.error_response(call, error)

    def _new_call(self, request: RelayRequest, route: Route | None) -> Call:
        if route is None:  # answer in the format of the endpoint at that path, if there is one
            route = next((r for (_, path), r in self.routes.items() if path == request.path), None)
            fallback = GEMINI if request.path.startswith("/v1beta/") else OPENAI
            endpoint, wire = "unknown", route.format if route is not None else fallback
        else:
            endpoint, wire = route.endpoint, route.format
        call = Call(request, request_id(request), endpoint, wire)
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
        """Run ``FINISH_STEPS`` for a finished request, once; a failing step does not stop the rest."""
        if call.finished:
            return
        call.finished = True
        for step in FINISH_STEPS:
            try:
                step(self, call)
            except Exception:
                logger.exception("request_id=%s: %s failed", call.request_id, step.__name__)
