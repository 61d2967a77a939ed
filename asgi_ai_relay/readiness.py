"""Readiness, for load balancers and Kubernetes probes: ``{prefix}/readyz`` (no
authentication, an answer that names only the failing checks) and ``{prefix}/v1/health?ready``
(authenticated like ``/v1/health``, with each check's details). Both answer 503 while

- ``ledger``: the ledger's writer is down (PostgreSQL unreachable, rows spooling; an SQLite
  write failing) or more than ``readiness.ledger_max_behind`` rows are recorded and not stored;
- ``redis``: with ``queue.fail_mode = "closed"``, a Redis server the limits, slots or budgets
  use does not answer a PING within ``readiness.redis_timeout`` seconds (with ``open`` the
  relay serves without it, so it stays ready);
- ``models``: every deployment of some model has its circuit breaker open;

and 200 otherwise. ``/v1/health`` without ``?ready`` keeps its per-deployment view (always 200).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from . import redact
from .telemetry_metrics import ledger_health
from .types import RelayResponse

if TYPE_CHECKING:
    from .call import Call
    from .relay import Relay

__all__ = ["asked", "readiness", "ready_report", "readyz"]


def asked(query: str) -> bool:
    """Whether a ``/v1/health`` query asks for readiness (``?ready``, ``?ready=1``)."""
    return any(name == "ready" and value not in ("0", "false") for name, value in parse_qsl(query, keep_blank_values=True))


async def readiness(relay: Relay) -> dict[str, Any]:
    """``{"ready": bool, "checks": {name: {"ok": bool, ...}}}``."""
    checks = {"ledger": _ledger(relay), "redis": await _redis(relay), "models": await _models(relay)}
    return {"object": "relay.readiness", "ready": all(c["ok"] for c in checks.values()), "checks": checks}


async def ready_report(relay: Relay, call: Call) -> RelayResponse:
    """``/v1/health?ready``: every check with its details."""
    report = await readiness(relay)
    return relay.json_response(call, report, 200 if report["ready"] else 503)


async def readyz(relay: Relay, call: Call) -> RelayResponse:
    """``/readyz``: ready or not, and the names of the failing checks only."""
    report = await readiness(relay)
    failing = sorted(name for name, check in report["checks"].items() if not check["ok"])
    return relay.json_response(call, {"ready": report["ready"], "failing": failing}, 200 if report["ready"] else 503)


def _ledger(relay: Relay) -> dict[str, Any]:
    health = ledger_health(relay)
    if health is None:
        return {"ok": True}
    bound = relay.config.readiness.ledger_max_behind
    behind = int(health.get("behind") or 0)
    error = health.get("last_error")
    return {
        "ok": bool(health.get("ok", True)) and behind <= bound,
        "writing": bool(health.get("ok", True)),
        "behind": behind,
        "max_behind": bound,
        "dropped": int(health.get("dropped") or 0),
        "last_error": redact.scrub(str(error))[:300] if error else None,
    }


def _redis_uris(relay: Relay) -> list[str]:
    storage = relay.config.storage
    uris = {storage.limits, storage.slots, storage.budgets}
    return sorted(u for u in uris if u.split(":", 1)[0] in ("redis", "rediss", "redis+cluster", "rediss+cluster"))


async def _redis(relay: Relay) -> dict[str, Any]:
    if relay.config.queue.fail_mode != "closed":
        return {"ok": True, "fail_mode": relay.config.queue.fail_mode}
    from .storage.redis_client import close_client, redis_client, safe_url

    down: list[str] = []
    timeout = relay.config.readiness.redis_timeout
    for uri in _redis_uris(relay):
        parts = urlsplit(uri)
        rest = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "prefix"])
        client = redis_client(urlunsplit(parts._replace(query=rest)), "readiness")
        try:
            async with asyncio.timeout(timeout):
                await client.ping()
        except Exception:  # noqa: BLE001 - any failure means the server does not answer
            down.append(safe_url(uri))
        finally:
            await close_client(client)
    return {"ok": not down, "fail_mode": "closed", "unreachable": down}


async def _models(relay: Relay) -> dict[str, Any]:
    router = relay.router
    unavailable = [alias for alias, model in relay.config.models.items() if not await router.healthy(model)]
    return {"ok": not unavailable, "all_open": unavailable}
