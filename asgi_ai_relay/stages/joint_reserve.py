"""The upstream half of admission on Redis's joint script: an attempt's buckets and leases in one call.

:meth:`asgi_ai_relay.stages.ratelimit.Traffic.reserve` hands over here when its store has a
joint script (:mod:`asgi_ai_relay.storage.redis_admission`).

The first attempt's reservation is usually taken before, in the admission's own call
(:mod:`.admission`), so a request waits for one round trip before it is sent: :func:`plan`
says what the first attempt will reserve, when that is known at admission time, and the
admission takes it as an optional part of its script call (:class:`First`). It is known when
every deployment of the request's model is on one provider (the reservation is the model's and
the provider's buckets and the provider's slots, the same whichever deployment the balancing
strategy picks) and the request cannot be answered from the cache: the cache is off, or the
request bypasses it (not deterministic, ``use_cache: false``, ``Cache-Control: no-cache``). A
request the cache may answer takes nothing upstream before the cache has looked, so a hit is
never refused or delayed by a provider's saturation and keeps none of its capacity. When the
optional part does not fit (a slot of this process would mean waiting, a cap is full, a limit
says wait) the admission goes on without it and the attempt reserves as it always did,
waiting as it always did.

The first attempt's reservation hands the taken one over when it is for the same model and
provider; any other gives it back at once (a fallback because a breaker was open), and a
request that never reaches an attempt (a refusal, a cancellation, a deadline) gives it back
when it ends: :class:`First` is one of the call's :meth:`~asgi_ai_relay.call.Call.hold`
releases, its give-back (the buckets' whole charge, the leases) going to Redis with the
other give-backs of its turn of the loop.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..errors import StorageError
from ..slots import FIRST_POLL, MAX_POLL
from .cache import _directives

if TYPE_CHECKING:
    from ..call import Call
    from ..limits import Decision
    from ..relay import Relay
    from ..storage.redis_admission import Admitted, Reservation
    from .ratelimit import Charge, Traffic

__all__ = ["First", "plan", "reserve_joint"]


class First:
    """The first attempt's reservation taken with the admission, until an attempt uses it."""

    __slots__ = ("decision", "entered", "estimate", "provider", "reservation", "taken", "traffic")

    def __init__(self, traffic: Traffic, provider: str, reservation: Reservation, estimate: int) -> None:
        self.traffic = traffic
        self.provider = provider
        self.reservation = reservation
        self.estimate = estimate
        self.decision: Decision | None = None
        #: This process's slot for ``provider`` is held; the reservation is held (both or neither once admitted).
        self.entered = False
        self.taken = False

    def enter(self) -> Reservation | None:
        """This process's slot, if one is free now: the reservation to ask for, or ``None``.

        Only with shared slots: then every attempt's reservation comes to :func:`reserve_joint`,
        which gives the slot back before it takes another (without them an attempt that needs
        nothing on Redis takes its slot elsewhere, and the attempt takes this one itself)."""
        traffic = self.traffic
        if traffic.gated and traffic.shared is not None:
            if not traffic.gate.try_enter(self.provider):
                return None
            self.entered = True
        return self.reservation

    def leave(self) -> None:
        if self.entered:
            self.entered = False
            self.traffic.gate.leave(self.provider)

    def landed(self, admitted: Admitted) -> bool:
        """Whether the admission took the reservation too (if not, the slot is given back)."""
        if not admitted.reserved:
            self.leave()
            return False
        self.taken = True
        self.decision = admitted.reservation
        return True

    def __call__(self) -> None:
        """Not used by an attempt: everything given back."""
        if self.taken:
            self.taken = False
            self.leave()
            joint = self.traffic.joint
            assert joint is not None
            joint.unreserve(self.reservation)

    def hand_over(self, call: Call, provider: str, charge: Charge, held: list[str], leases: list[tuple[str, str]]) -> bool:
        """To the attempt reserving ``charge`` on ``provider``, if it is what was taken (else
        given back now); whether it was."""
        if provider != self.provider or tuple(charge.buckets) != tuple(self.reservation.buckets) or (
                charge.estimate != self.estimate):
            self()
            return False
        self.taken = False
        if self.entered:
            self.entered = False
            held.append(provider)
        if self.decision is not None:
            self.traffic._headers(call, charge.buckets, self.decision)
        charge.charged = bool(charge.buckets)
        leases.extend((name, self.reservation.holder) for name, _ in self.reservation.caps)
        return True


def plan(relay: Relay, call: Call) -> First | None:
    """The first attempt's reservation, when it is known now and the cache cannot answer."""
    from ..storage.redis_admission import Reservation

    model, traffic = call.model, relay.traffic
    if model is None or _cache_may_answer(relay, call):
        return None
    targets = relay.router.targets.get(model.alias)
    if not targets:
        return None
    provider = targets[0].model.provider
    if any(t.model.provider != provider for t in targets):  # which one is first is decided later
        return None
    shared, joint = traffic.shared, traffic.joint
    if shared is not None and (joint is None or joint.leases is None):  # the leases have calls of their own
        return None
    buckets = traffic.upstream_buckets(targets[0].model) if traffic.limited else ()
    caps = shared.caps(provider) if shared is not None else []
    if not buckets and not caps:  # at most this process's slot: nothing to save
        return None
    estimate = traffic.estimate(call) if buckets else 0
    costs = [1 if b.kind == "requests" else estimate for b in buckets]
    holder = shared.holder() if shared is not None and caps else ""
    ttl = shared.ttl_ms if shared is not None else 0
    return First(traffic, provider, Reservation(buckets, costs, caps, holder, ttl), estimate)


def _cache_may_answer(relay: Relay, call: Call) -> bool:
    """Whether the cache stage may answer this request (a hit, or an identical one in flight):
    :func:`.cache.lookup`'s and :func:`.embed_cache.lookup`'s choice, read before they run."""
    use = call.body.get("use_cache")
    if relay.config.cache.mode == "off" or use is False or not _directives(call)[0]:
        return False
    if use is not None or relay.config.cache.mode == "all" or call.endpoint == "embeddings":
        return True
    gemini = call.body.get("generationConfig")  # Gemini keeps its sampling settings here
    settings = gemini if isinstance(gemini, dict) else call.body
    return settings.get("temperature") == 0 or settings.get("seed") is not None


async def reserve_joint(traffic: Traffic, call: Call, provider: str, charge: Charge, held: list[str],
                        leases: list[tuple[str, str]], deadline: float) -> None:
    """``Traffic.reserve`` on the joint script: the reservation the admission took when it is
    this one; otherwise this process's slot first, then the buckets and the shared caps in one
    call (all or nothing), waiting for whichever refused.

    :raises RateLimited, ServiceUnavailable: as ``Traffic.reserve``.
    """
    first = next((r for r in call.releases if type(r) is First and r.taken), None)
    if first is not None and first.hand_over(call, provider, charge, held, leases):
        if traffic.gated and not held:  # this process's slot was left to the attempt
            await traffic.enter(call, provider, deadline)
            held.append(provider)
        return
    joint, shared = traffic.joint, traffic.shared
    assert joint is not None
    if traffic.gated:
        await traffic.enter(call, provider, deadline)
        held.append(provider)
    caps = shared.caps(provider) if shared is not None and joint.leases is not None else []
    if charge.buckets or caps:
        holder = shared.holder() if shared is not None and caps else ""
        ttl = shared.ttl_ms if shared is not None else 0
        costs, poll = [1 if b.kind == "requests" else charge.estimate for b in charge.buckets], FIRST_POLL
        while True:
            try:
                admitted = await joint.take(charge.buckets, costs, (), caps, holder, ttl)
            except StorageError as exc:
                traffic._storage_failed(exc)
                return
            if admitted.decision is not None:
                traffic._headers(call, charge.buckets, admitted.decision)
            if admitted.ok:
                charge.charged = bool(charge.buckets)
                leases.extend((name, holder) for name, _ in caps)
                break
            if admitted.decision is not None and not admitted.decision.allowed:
                await traffic.refused(call, admitted.decision, deadline)
                continue
            await traffic.wait(call, asyncio.sleep(poll), deadline)  # a cap is full: poll again
            poll = min(poll * 2, MAX_POLL)
    if shared is not None and joint.leases is None:
        await traffic.wait(call, shared.take(provider, leases), deadline)
