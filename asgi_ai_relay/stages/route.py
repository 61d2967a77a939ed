"""Routing: which model and provider serve the request, and the attempts at them (each one
call of :func:`~.send.send_to`).

:func:`forward` is the attempt loop. The candidates are the model, then its ``fallbacks`` (or,
for a virtual model, the other models that fit, cheapest first). Each candidate is tried up to
its ``retry.max_attempts`` times over its deployments in the balancing strategy's order; a
deployment whose breaker is open is skipped without a call, and so is one whose own limits or
concurrency slots refuse (the upstream half of admission, taken per attempt on the deployment
actually called). Between two attempts at the same deployment the loop waits (``Retry-After`` or full-jitter backoff), unless the wait would end
after the deadline: then it falls over to the next candidate at once. A context-length refusal
moves to the model's ``context_fallbacks``; a request the provider calls invalid is answered
as is. A stream counts as served once its first piece with content is ready for the caller, so
nothing is ever retried after a byte has reached the client; no such piece within
``timeouts.first_byte`` is a failed attempt like any other. The breaker pass, the slot and the
deployment's in-flight count of each attempt are held on the call (:meth:`Call.hold`): given
back at once when the attempt fails, and in any case when the request ends.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from ..affinity import session_of
from ..breaker import CircuitOpen, Ticket
from ..call import Once
from ..errors import (
    ClientError, InvalidRequest, ModelNotFound, RateLimited, RelayError, ServiceUnavailable, UpstreamError,
    UpstreamTimeout,
)
from ..retry import Verdict, classify, wait_before_retry
from ..timers import within
from ..types import RelayResponse
from .send import count_tokens, send_to
from .stream import RelayStream
from .usage import printable

if TYPE_CHECKING:
    from ..call import Call
    from ..config import ModelConfig, RetrySettings
    from ..relay import Relay
    from ..routing import Router, Target

__all__ = ["Send", "count_tokens", "forward", "forward_via", "resolve", "send_to"]


async def resolve(relay: Relay, call: Call) -> RelayResponse | None:
    """:raises ModelNotFound: naming the model and the ones that exist.
    :raises InvalidRequest: when the request asks for more output than the model's ``max_output_tokens``,
        or names an embedding model anywhere but ``/v1/embeddings``.
    """
    name = call.requested_model or ""
    model = relay.config.models.get(name)
    if model is None:
        virtual = relay.config.routing.virtual.get(name)
        if virtual is None:
            available = ", ".join(sorted([*relay.config.models, *relay.config.routing.virtual]))
            raise ModelNotFound(
                f"The model '{printable(call.requested_model)}' does not exist on this relay. Available models: {available}.",
                param="model",
            )
        model, *call.candidates = await relay.router.choose(virtual, call)
    if model.kind == "embedding" and call.endpoint != "embeddings":
        raise InvalidRequest(f"Model '{model.alias}' is an embedding model, served on /v1/embeddings only.",
                             param="model", code="not_a_chat_model")
    if model.max_output_tokens is not None:
        _check_output_limit(call, model.alias, model.max_output_tokens)
    call.model = model
    return None


def _check_output_limit(call: Call, alias: str, limit: int) -> None:
    body = call.body if isinstance(call.body, dict) else {}
    gemini = body.get("generationConfig")
    given = {name: body.get(name) for name in ("max_tokens", "max_completion_tokens", "max_output_tokens")}
    if isinstance(gemini, dict):
        given["generationConfig.maxOutputTokens"] = gemini.get("maxOutputTokens")
    for param, value in given.items():
        if isinstance(value, int) and value > limit:
            raise InvalidRequest(f"'{param}' is {value}, above the {limit} output tokens model '{alias}' allows.", param=param)


def forward(relay: Relay, call: Call) -> Coroutine[Any, Any, RelayResponse]:
    """Try the candidates until one answers (a stage: the attempt loop's coroutine itself, with
    no frame of its own around it).

    :raises RelayError: the last failure when every candidate failed (or the first request
        error a provider reported); :class:`CircuitOpen` when every breaker refused.
    """
    return forward_via(relay, call, send_to)


def forward_via(relay: Relay, call: Call, send: Send) -> Coroutine[Any, Any, RelayResponse]:
    """:func:`forward`, each attempt made by ``send`` (another endpoint's call to a provider)."""
    assert call.model is not None
    return _Attempts(relay, call, send).run(call.model)


#: One attempt at a model (:func:`send_to` for chat); raises :class:`UpstreamError` on failure.
Send = Callable[["Relay", "Call", "ModelConfig"], Awaitable[RelayResponse]]


class _Attempts:
    __slots__ = ("call", "deadline", "failure", "refusal", "relay", "router", "send", "session")

    def __init__(self, relay: Relay, call: Call, send: Send) -> None:
        self.relay = relay
        self.call = call
        self.send = send
        self.router: Router = relay.router
        self.deadline = self.router.clock() + self.router.policy(call.model).deadline  # type: ignore[arg-type]
        self.failure: RelayError | None = None
        self.refusal: CircuitOpen | None = None
        #: The request's session (conversation affinity), read once a model has deployments to choose from.
        self.session: str | None = None

    async def run(self, first: ModelConfig) -> RelayResponse:
        models = self.relay.config.models
        chain = self.call.candidates if self.call.candidates is not None else [models[f] for f in first.fallbacks]
        queue = deque([first, *chain])
        seen: set[str] = set()
        while queue and self.remaining() > 0:
            model = queue.popleft()
            if model.alias in seen:
                continue
            seen.add(model.alias)
            try:
                response = await self.try_model(model)
            except _TooLong:  # larger models go next
                queue.extendleft(reversed([models[f] for f in model.context_fallbacks]))
                continue
            if response is not None:
                return response
        raise self.final_error()

    def remaining(self) -> float:
        return self.deadline - self.router.clock()

    def final_error(self) -> RelayError:
        self.call.headers["x-relay-attempts"] = str(self.call.attempts)
        error = self.failure or self.refusal
        if error is None:
            error = UpstreamTimeout("The relay's deadline passed before any provider could be tried.")
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            error.headers.setdefault("retry-after", str(max(1, int(retry_after + 0.999))))
        return error

    async def try_model(self, model: ModelConfig) -> RelayResponse | None:
        """Up to ``max_attempts`` calls over the model's deployments; None to move on.

        Each attempt first takes the deployment's breaker pass, then (after any backoff) the
        upstream half of admission on that deployment; both are held on the call, so they are
        given back however the request ends, and at once when the attempt fails.

        :raises _TooLong: for a context-length refusal (after recording it).
        :raises RelayError: for a request the provider called invalid (answered as is).
        """
        policy = self.router.policy(model)
        targets = self.router.order(model)
        if len(targets) > 1 and self.router.affinity is not None:
            self.session = self.session or session_of(self.call, self.router.session_headers)
            self.router.prefer_pinned(model, self.session, targets)
        attempts, index, previous = 0, 0, None
        while attempts < policy.max_attempts and targets:
            target = targets[index % len(targets)]
            admitted = await self.admit(target)
            if admitted is None:
                targets.remove(target)
                continue
            ticket, pass_back = admitted
            if target is previous and not await self.pause(policy, attempts):
                pass_back()
                return None
            try:
                slot_back = await self.reserve(target)
            except _Refused:
                pass_back()
                targets.remove(target)
                continue
            attempts += 1
            previous = target
            served = False
            try:
                response = await self.attempt(target, ticket, pass_back)
                served = True
                return response
            except _Unsendable:
                targets.remove(target)
                continue
            except UpstreamError as error:
                verdict = self.judge(error)
                if verdict is Verdict.NEXT:
                    targets.remove(target)
                    continue
            finally:
                if slot_back is not None and not served:
                    slot_back()  # a failed attempt frees its slot and token estimate now
            index += 1
        return None

    async def reserve(self, target: Target) -> Once | None:
        """The upstream half of admission on ``target``: its early give-back, if anything was taken.

        :raises _Refused: when its limits or slots refuse (the refusal becomes the failure to
            report if nothing else answers).
        """
        deadline = asyncio.get_running_loop().time() + self.remaining()
        try:
            return await self.relay.traffic.reserve(self.call, target.model, deadline)
        except (RateLimited, ServiceUnavailable) as refusal:
            self.failure = self.failure or refusal
            self.call.attempt_log.append({"deployment": target.name, "model": target.model.alias,
                                          "skipped": refusal.code or "rate_limited"})
            raise _Refused from refusal

    def judge(self, error: UpstreamError) -> Verdict:
        verdict = classify(error)
        self.failure = error
        if verdict is Verdict.FATAL:
            raise error
        if verdict is Verdict.CONTEXT:
            raise _TooLong from error
        return verdict

    async def admit(self, target: Target) -> tuple[Ticket, Once] | None:
        """The deployment's breaker pass, held on the call until its outcome is recorded."""
        breakers = self.router.breakers
        try:
            ticket = await breakers.allow(target.name, self.router.clock())
        except CircuitOpen as refusal:
            if self.refusal is None or refusal.seconds_left < self.refusal.seconds_left:
                self.refusal = refusal
            self.call.attempt_log.append({"deployment": target.name, "model": target.model.alias, "skipped": "circuit_open"})
            return None
        if not ticket.probe:
            return ticket, _NO_PROBE
        return ticket, self.call.hold(Once(lambda: self.relay.spawn(breakers.release(ticket))))

    async def pause(self, policy: RetrySettings, retries: int) -> bool:
        """Wait before retrying the same deployment; False when the wait would pass the deadline."""
        assert self.failure is not None
        wait = wait_before_retry(self.failure, policy, retries, self.remaining(), self.router.rng)
        if wait is None:
            return False
        if self.call.attempt_log:
            self.call.attempt_log[-1]["wait_s"] = round(wait, 3)
        await self.router.sleep(wait)
        return True

    async def attempt(self, target: Target, ticket: Ticket, pass_back: Once) -> RelayResponse:
        """One call; the breaker and the log learn its outcome whatever it is."""
        call, router = self.call, self.router
        started, before = time.perf_counter(), call.attempts
        limit = min(self.remaining(), self.relay.config.timeouts.first_byte if call.stream else self.remaining())
        # In the log before the call: a stream may complete (and be recorded) inside start().
        entry: dict[str, Any] = {"deployment": target.name, "model": target.model.alias, "provider": target.model.provider}
        call.attempt_log.append(entry)
        span = self.relay.telemetry.begin_attempt(call, target, ticket)
        target.in_flight += 1
        busy = call.hold(Once(_leave, target))
        try:
            with within(limit):
                response = await self.send(self.relay, call, target.model)
                entry["status"], entry["ms"] = response.status, _ms_since(started)
                if isinstance(response.stream, RelayStream):
                    response.stream.on_end = _StreamEnd(router, target, busy)
                    await response.stream.start()
        except TimeoutError:
            error: RelayError = UpstreamTimeout(f"Provider {target.model.provider!r} sent nothing within {limit:.1f}s.")
        except UpstreamError as exc:
            error = exc
        except BaseException as exc:
            self.relay.telemetry.end_attempt(call, span, exc)
            busy()
            pass_back()
            if isinstance(exc, ClientError) and call.attempts == before:
                # Refused before any call (no translation to this provider's format): try elsewhere.
                entry.pop("provider")
                entry["skipped"] = exc.code or "unsendable"
                self.failure = self.failure or exc
                raise _Unsendable from exc
            raise
        else:
            self.relay.telemetry.end_attempt(call, span, None, whole=response.stream is None)
            target.observe(_ms_since(started))
            router.served(target.model, self.session, target)
            pass_back.discard()
            await router.breakers.record(ticket, True, router.clock())
            call.headers["x-relay-attempts"] = str(call.attempts)
            if response.stream is None:
                busy()  # a stream frees its deployment when it ends (_StreamEnd)
            return response
        self.relay.telemetry.end_attempt(call, span, error)
        busy()
        pass_back.discard()
        entry.update(status=error.status_code, error=error.code or error.error_type, ms=_ms_since(started))
        await router.breakers.record(ticket, not classify(error).provider_failed, router.clock())
        raise error


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 3)


class _NoProbe(Once):
    """The pass of a closed breaker: nothing to give back (one for every request)."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(_nothing)

    def discard(self) -> None:
        return None

    def __call__(self) -> None:
        return None


def _nothing() -> None:
    return None


_NO_PROBE = _NoProbe()


def _leave(target: Target) -> None:
    target.in_flight -= 1


class _StreamEnd:
    """Called once when a served stream ends: frees the deployment, reports a mid-stream failure."""

    __slots__ = ("busy", "router", "target")

    def __init__(self, router: Router, target: Target, busy: Once) -> None:
        self.router = router
        self.target = target
        self.busy = busy

    async def __call__(self, error: RelayError | None) -> None:
        self.busy()
        if error is not None and classify(error).provider_failed:
            await self.router.breakers.record(Ticket(self.target.name), False, self.router.clock())


class _TooLong(Exception):
    """The prompt does not fit this model's context window."""


class _Refused(Exception):
    """The deployment's own limits or slots refused the attempt (nothing was sent)."""


class _Unsendable(Exception):
    """The request cannot go to this deployment at all (nothing was sent)."""
