"""The upstream half of admission on Redis's joint script: an attempt's buckets and leases in one call.

:meth:`asgi_ai_relay.stages.ratelimit.Traffic.reserve` hands over here when its store has a
joint script (:mod:`asgi_ai_relay.storage.redis_admission`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..errors import StorageError
from ..slots import FIRST_POLL, MAX_POLL

if TYPE_CHECKING:
    from ..call import Call
    from .ratelimit import Charge, Traffic

__all__ = ["reserve_joint"]


async def reserve_joint(traffic: Traffic, call: Call, provider: str, charge: Charge, held: list[str],
                        leases: list[tuple[str, str]], deadline: float) -> None:
    """``Traffic.reserve`` on the joint script: this process's slot first, then the buckets and
    the shared caps in one call (all or nothing), waiting for whichever refused.

    :raises RateLimited, ServiceUnavailable: as ``Traffic.reserve``.
    """
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
