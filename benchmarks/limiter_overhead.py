"""Time the relay's limiter and queue per request, in-process: the rate-limit stage
(``ratelimit.admit``) plus the release and reconciliation ``Relay.finish`` runs.

Each request is charged in a global, a per-caller and a per-model bucket (RPM and TPM, set
high enough never to refuse) and takes and gives back a concurrency slot, one request at a
time, so the numbers are the path's own cost and not queueing. Redis numbers include the
round trips to the server: one script to admit (the request waits for it) and one to reconcile
(in the background after the answer, counted here because the loop waits for it at the end).

Run: python benchmarks/limiter_overhead.py [--requests 5000] [--redis redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import orjson

from asgi_ai_relay import Relay, RelayRequest
from asgi_ai_relay.call import Call
from asgi_ai_relay.protocol import OPENAI
from asgi_ai_relay.stages import ratelimit
from asgi_ai_relay.types import Usage

BODY = orjson.dumps({"model": "gpt-4.1", "messages": [{"role": "user", "content": "Hello, benchmark."}]})
BIG = 10**9


def build(limits_uri: str | None) -> Relay:
    config: dict = {"storage": {"ledger": "memory://", "limits": limits_uri or "memory://"}}
    if limits_uri is not None:
        config["limits"] = {
            "global": {"rpm": BIG, "tpm": BIG},
            "caller": {"rpm": BIG, "tpm": BIG},
            "model": {"rpm": BIG, "tpm": BIG},
        }
        config["queue"] = {"max_in_flight": 64, "per_provider": 32}
    return Relay(config)


def new_call(relay: Relay, request: RelayRequest) -> Call:
    call = Call(request, "bench", "chat.completions", OPENAI)
    call.body = orjson.loads(request.body)
    call.model = relay.config.models["gpt-4.1"]
    call.attempts = 1
    return call


async def per_request_us(relay: Relay, requests: int) -> tuple[float, float]:
    """(whole path, admission alone) in microseconds per request."""
    request = RelayRequest("POST", "/v1/chat/completions", {}, BODY)
    calls = [new_call(relay, request) for _ in range(requests + 100)]
    for call in calls[:100]:  # warm up (Redis: connect, load the scripts)
        await ratelimit.admit(relay, call)
        call.usage = Usage(10, 5)
        relay.traffic.release(call)
    await relay.traffic.settle()
    admitting = 0.0
    started = time.perf_counter()
    for call in calls[100:]:
        before = time.perf_counter()
        await ratelimit.admit(relay, call)
        admitting += time.perf_counter() - before
        call.usage = Usage(10, 5)
        relay.traffic.release(call)
    await relay.traffic.settle()
    return (time.perf_counter() - started) / requests * 1e6, admitting / requests * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="'' to skip Redis")
    args = parser.parse_args()
    cases = [("no limits (stage off)", None), ("memory limits + queue", "memory://")]
    if args.redis:
        cases.append(("redis limits + queue", f"{args.redis}?prefix=bench-{uuid.uuid4().hex}"))
    for name, uri in cases:
        relay = build(uri)
        try:
            whole, admit = await per_request_us(relay, args.requests)
            print(f"{name:24s} {whole:9.1f} us/request ({admit:.1f} us in admission, the rest in release)")
        except Exception as exc:  # noqa: BLE001 - a missing Redis should not hide the others
            print(f"{name:24s} failed: {exc}")
        finally:
            await relay.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
