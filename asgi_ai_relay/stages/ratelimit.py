"""Rate limits and concurrency slots, in two halves.

Limits (``[limits]``) are GCRA buckets in the ``storage.limits`` backend: requests and tokens
per minute, for everyone together, each caller, each model and each provider. A request is
charged one request and an *estimate* of its tokens (:mod:`asgi_ai_relay.tokens`: the prompt,
media at a fixed count, plus the output it may ask for); when it finishes, the charge is
reconciled to the real usage, and the request itself is refunded if it never reached a provider.

- **Caller side** (:func:`admit`, a stage before the cache): the global and the caller's own
  buckets. Every request that passes authentication counts here, cache hits included.
- **Upstream side** (:meth:`Traffic.reserve`, per attempt, from the attempt loop): the model's
  and the provider's buckets and a concurrency slot of :class:`~asgi_ai_relay.scheduler.Gate`
  (``queue.max_in_flight``, ``queue.per_provider``), on the deployment actually called. A cache
  hit takes none of it; a fallback is charged to the provider that serves it. A failed attempt
  gives its slot and its token estimate back at once; the serving one holds its slot until the
  request ends (a stream: until it ends).

When a limit says wait, ``queue.on_limit = "queue"`` sleeps exactly until capacity returns (up
to ``queue.max_wait``), ``"reject"`` answers 429 at once. Either way the answer carries
``Retry-After`` and the ``x-ratelimit-*`` headers, which successful answers carry too. The
waits themselves, the slots and the priority queue are :mod:`.waiting`'s.

On Redis, an attempt's buckets and its shared leases go in one script call (all or nothing,
:mod:`asgi_ai_relay.storage.redis_admission`; this process's slot is taken first), and the
reconciliations join the other give-backs of their turn of the loop in one call.

Everything taken is registered with :meth:`Call.hold`, so it is given back once however the
request ends. Rate limits are as wide as their backend (Redis: all hosts); concurrency caps
are per process unless ``storage.slots`` shares them.
"""

from __future__ import annotations

import asyncio
import logging
import math
from functools import partial
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..call import Once
from ..errors import CLIENT_CLOSED, RateLimited, ServiceUnavailable, StorageError
from ..config.settings import LimitConfig
from ..limits import Bucket, Decision, Rate, format_reset
from ..policy import limits_of
from ..storage import RateLimitStore, limits_from_uri
from ..tokens import output_allowance, prompt_tokens
from .joint_reserve import reserve_joint
from .waiting import QUEUE_RETRY_AFTER, Waiting

if TYPE_CHECKING:
    from ..call import Call
    from ..config import ModelConfig, RelayConfig
    from ..relay import Relay
    from ..storage.redis_admission import RedisAdmission
    from ..types import RelayResponse

__all__ = ["CLIENT_CLOSED", "CallerCharge", "Charge", "Traffic", "admit", "costs_of", "subject_buckets"]

logger = logging.getLogger("asgi_ai_relay")

_CALLER_CACHE = 10_000


class Charge:
    """Buckets charged for one request (or one attempt) and the token estimate charged."""

    __slots__ = ("buckets", "charged", "estimate")

    def __init__(self, buckets: Sequence[Bucket], estimate: int) -> None:
        self.buckets = buckets
        self.estimate = estimate
        self.charged = False


class CallerCharge(Charge):
    """The caller side's charge, which is its own release (:meth:`Traffic.reconcile` when the
    request ends): one object held where a closure over three would make four."""

    __slots__ = ("call", "traffic")

    def __init__(self, traffic: Traffic, call: Call, buckets: Sequence[Bucket], estimate: int) -> None:
        super().__init__(buckets, estimate)
        self.traffic = traffic
        self.call = call

    def __call__(self) -> None:
        self.traffic.reconcile(self.call, self)


def costs_of(charge: Charge) -> list[int]:
    """What each bucket of ``charge`` is charged: one request, or the token estimate."""
    return [1 if b.kind == "requests" else charge.estimate for b in charge.buckets]


def _buckets(scope: str, name: str, limit: LimitConfig | None) -> tuple[Bucket, ...]:
    if not limit:
        return ()
    out = []
    if limit.rpm:
        out.append(Bucket(f"{scope}:{name}:r", Rate(limit.rpm, 60.0, limit.burst), "requests"))
    if limit.tpm:
        out.append(Bucket(f"{scope}:{name}:t", Rate(limit.tpm, 60.0, limit.token_burst), "tokens"))
    return tuple(out)


class Traffic(Waiting):
    """The limits and the queue of one relay, built once from its config.

    :param store: a rate-limit store; by default the one ``storage.limits`` names.
    :raises ConfigurationError: for an unknown ``storage.limits`` scheme.
    """

    def __init__(self, config: RelayConfig, store: RateLimitStore | None = None) -> None:
        super().__init__(config)
        limits = self.limits = config.limits
        self.store = store if store is not None else limits_from_uri(config.storage.limits)
        self.everyone = _buckets("global", "all", limits.everyone)
        self.models = {a: _buckets("model", a, limits.models.get(a, limits.model)) for a in config.models}
        self.providers = {p: _buckets("provider", p, limits.providers.get(p, limits.provider)) for p in config.providers}
        self.limited = bool(limits.everyone or limits.caller or limits.callers or limits.model or limits.models
                            or limits.provider or limits.providers)
        self.active = self.limited or self.gated
        self._callers: dict[str, tuple[Bucket, ...]] = {}
        self._adjust_now = getattr(self.store, "adjust_now", None)
        self._acquire_now = getattr(self.store, "acquire_now", None)
        self._pending: set[asyncio.Task[None]] = set()
        #: The store's joint script (Redis): buckets, holds and leases of a request in one call.
        joint = getattr(self.store, "admission", None)
        self.joint: RedisAdmission | None = joint(self.shared.leases if self.shared is not None else None) if joint else None

    def caller_buckets(self, call: Call) -> tuple[Bucket, ...]:
        caller = call.caller.id
        mine = self._callers.get(caller)
        if mine is None:
            if len(self._callers) >= _CALLER_CACHE:
                self._callers.clear()
            mine = self._callers[caller] = _buckets("caller", caller, self.limits.callers.get(caller, self.limits.caller))
        return self.everyone + mine

    def upstream_buckets(self, model: ModelConfig) -> tuple[Bucket, ...]:
        return self.models.get(model.alias, ()) + self.providers.get(model.provider, ())

    def estimate(self, call: Call) -> int:
        """Tokens before the call (computed once per request): the prompt's (media at a fixed
        count, see :mod:`asgi_ai_relay.tokens`), plus the output it may ask for."""
        if call.token_estimate is None:
            limits = self.limits
            prompt = call.prompt_count
            if prompt is None:
                prompt = call.prompt_count = prompt_tokens(call.body, limits.tokenizer)
            call.token_estimate = prompt + output_allowance(call.body, limits.estimated_output_tokens)
        return call.token_estimate

    # -- admission -----------------------------------------------------------------------

    async def charge(self, call: Call, ticket: Charge, deadline: float) -> None:
        """Charge the limits, sleeping until capacity returns while ``on_limit`` is "queue".

        :raises RateLimited: refused (with ``Retry-After`` and the ``x-ratelimit-*`` headers).
        :raises ServiceUnavailable: the queue is full, or the store is down and fails closed.
        """
        costs = costs_of(ticket)
        while True:
            try:
                decision = await self._acquire(ticket.buckets, costs)
            except StorageError as exc:
                self._storage_failed(exc)
                return
            self._headers(call, ticket.buckets, decision)
            if decision.allowed:
                ticket.charged = True
                return
            await self.refused(call, decision, deadline)

    async def refused(self, call: Call, decision: Decision, deadline: float) -> None:
        """Sleep until a refused ``decision``'s capacity returns, while ``on_limit`` is "queue".

        :raises RateLimited, ServiceUnavailable: see :meth:`charge`.
        """
        wait = decision.retry_after
        if math.isinf(wait):
            raise RateLimited("This request needs more tokens than the token limit allows at once.",
                              code="request_too_large_for_limit")
        if self.config.on_limit == "reject" or asyncio.get_running_loop().time() + wait > deadline:
            raise RateLimited(f"Rate limit reached; retry in {wait:.2f}s.", retry_after=wait)
        self.check_room()
        self.sleeping += 1
        try:
            await self.wait(call, asyncio.sleep(wait), deadline)
        finally:
            self.sleeping -= 1

    async def _acquire(self, buckets: Sequence[Bucket], costs: list[int]) -> Decision:
        """One decision of the store. An in-process store decides without awaiting; a remote
        one is shielded, so a request cancelled while the decision is on its way gives back
        what the store charged once it lands."""
        if self._acquire_now is not None:
            decision: Decision = self._acquire_now(buckets, costs)
            return decision
        pending = asyncio.ensure_future(self.store.acquire(buckets, costs))
        try:
            return await asyncio.shield(pending)
        except asyncio.CancelledError:
            pending.add_done_callback(partial(self._undo, buckets, costs))
            raise

    def _undo(self, buckets: Sequence[Bucket], costs: list[int], landed: asyncio.Future[Decision]) -> None:
        if not landed.cancelled() and landed.exception() is None and landed.result().allowed:
            self._adjust(list(buckets), [-c for c in costs])

    def _storage_failed(self, exc: StorageError) -> None:
        if self.config.fail_mode == "closed":
            raise ServiceUnavailable("Rate limits cannot be checked right now.", retry_after=QUEUE_RETRY_AFTER) from exc
        logger.debug("rate limits skipped (fail open): %s", exc)

    @staticmethod
    def _headers(call: Call, buckets: Sequence[Bucket], decision: Decision) -> None:
        tightest: dict[str, tuple[int, float, int]] = {}
        for bucket, state in zip(buckets, decision.states, strict=True):
            seen = tightest.get(bucket.kind)
            if seen is None or state.remaining < seen[0]:
                tightest[bucket.kind] = (state.remaining, state.reset, bucket.rate.limit)
        headers = call.headers
        for kind, (remaining, reset, limit) in tightest.items():
            names = _HEADER_NAMES.get(kind) or _header_names(kind)
            headers[names[0]] = str(limit)
            headers[names[1]] = str(remaining)
            headers[names[2]] = format_reset(reset)

    # -- upstream side, per attempt ---------------------------------------------------------

    async def reserve(self, call: Call, model: ModelConfig, deadline: float) -> Once | None:
        """Charge ``model``'s and its provider's limits and take the provider's slot for one attempt.

        Returns the early give-back for a failed attempt (also registered on the call, so the
        serving attempt's share is released when the request ends), or ``None`` when nothing
        applies.

        :raises RateLimited, ServiceUnavailable: see :meth:`charge` and :meth:`enter`.
        """
        buckets = self.upstream_buckets(model) if self.limited else ()
        if not buckets and not self.gated:
            return None
        deadline = min(deadline, asyncio.get_running_loop().time() + self.config.max_wait)
        if not buckets and self.shared is None:  # only this process's slot: nothing to reconcile
            await self.enter(call, model.provider, deadline)
            return call.hold(Once(self.leave_gate, model.provider))
        charge = Charge(buckets, self.estimate(call) if buckets else 0)
        held: list[str] = []
        leases: list[tuple[str, str]] = []

        joint = self.joint

        def release(failed: bool = False) -> None:
            if held:
                self.gate.leave(held.pop())
            if self.shared is not None:
                if joint is not None and joint.leases is not None:
                    joint.release(leases)
                    leases.clear()
                else:
                    self.shared.give_back(leases)
            self.reconcile(call, charge, failed)

        give_back = Once(release)
        call.hold(give_back)

        def failed() -> None:
            give_back.discard()
            release(True)

        try:
            if joint is not None:
                await reserve_joint(self, call, model.provider, charge, held, leases, deadline)
                return Once(failed)
            if buckets:
                await self.charge(call, charge, deadline)
            if self.gated:
                await self.enter(call, model.provider, deadline)
                held.append(model.provider)
                if self.shared is not None:
                    await self.wait(call, self.shared.take(model.provider, leases), deadline)
        except BaseException:
            failed()
            raise
        return Once(failed)

    # -- after the answer ----------------------------------------------------------------

    def reconcile(self, call: Call, charge: Charge, failed: bool = False) -> None:
        """Replace a charge's token estimate by the real usage (none for a failed attempt or a
        cache hit, which used no provider's tokens) and refund the request itself when it was
        neither sent to a provider nor answered from the cache."""
        if not charge.charged:
            return
        charge.charged = False
        hit = call.cache == "hit"
        used = 0 if failed or hit or call.usage is None else call.usage.total_tokens
        sent = call.attempts > 0 or hit
        tokens, requests = used - charge.estimate, 0 if sent else -1
        buckets: list[Bucket] = []
        deltas: list[float] = []
        for bucket in charge.buckets:  # (one loop: a request's buckets are few)
            delta = tokens if bucket.kind == "tokens" else requests
            if delta:
                buckets.append(bucket)
                deltas.append(delta)
        if buckets:
            self._adjust(buckets, deltas)

    def _adjust(self, buckets: list[Bucket], deltas: list[float]) -> None:
        if self._adjust_now is not None:
            self._adjust_now(buckets, deltas)
            return
        if self.joint is not None:  # with the other give-backs of this turn, in one call
            self.joint.adjust(buckets, deltas)
            return
        task = asyncio.get_running_loop().create_task(self._adjust_later(buckets, deltas))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _adjust_later(self, buckets: list[Bucket], deltas: list[float]) -> None:
        try:
            await self.store.adjust(buckets, deltas)
        except StorageError as exc:
            logger.debug("rate limits: could not reconcile usage: %s", exc)

    async def settle(self) -> None:
        """Wait for the reconciliations still on their way to the store."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
        if self.joint is not None:
            await self.joint.settled()

    async def aclose(self) -> None:
        await self.settle()
        await self.store.aclose()
        if self.shared is not None:
            await self.shared.aclose()


_HEADER_NAMES: dict[str, tuple[str, str, str]] = {}


def _header_names(kind: str) -> tuple[str, str, str]:
    names = _HEADER_NAMES[kind] = (f"x-ratelimit-limit-{kind}", f"x-ratelimit-remaining-{kind}", f"x-ratelimit-reset-{kind}")
    return names


def subject_buckets(call: Call) -> tuple[Bucket, ...]:
    """The buckets of the caller's own limits (:mod:`asgi_ai_relay.policy`): its key's, its
    owner's, its team's, each under its own name (``key:<id>``, ``owner:<id>``, ``team:<name>``)."""
    limits = limits_of(call.caller)
    if limits is None:
        return ()
    out: tuple[Bucket, ...] = ()
    for subject in limits.subjects:
        quota = subject.quota
        if quota.rpm or quota.tpm:
            name = f"owner:{subject.name}" if subject.kind == "owner" else subject.name
            out += _buckets("subject", name, LimitConfig(rpm=quota.rpm, tpm=quota.tpm))
    return out


async def admit(relay: Relay, call: Call) -> RelayResponse | None:
    """The caller-side stage: the global and caller buckets of ``[limits]`` and those of the
    caller's own limits. :raises RateLimited, ServiceUnavailable: see :class:`Traffic`."""
    traffic = relay.traffic
    own = subject_buckets(call)
    if not traffic.limited and not own:
        return None
    buckets = (traffic.caller_buckets(call) if traffic.limited else ()) + own
    if not buckets:
        return None
    charge = call.hold(CallerCharge(traffic, call, buckets, traffic.estimate(call)))
    deadline = asyncio.get_running_loop().time() + traffic.config.max_wait
    await traffic.charge(call, charge, deadline)
    return None
