"""What shared state on Redis adds to a request: round trips and latency, in-process, bounded.

Two relays answer ``--requests`` chat requests each, one at a time (so the numbers are the
path's own cost, not queueing), from ``benchmarks/fake_upstream.py`` (its own process,
loopback): one with every store in memory, one with the rate limits (global, caller and model;
RPM and TPM), the budget and the concurrency caps (``queue.max_in_flight``, ``per_provider``) on
a private ``redis-server`` started for the run. Their requests alternate (memory, Redis, Redis,
memory, ...), so a change in the machine's load during a round weighs on both alike. The
requests are not deterministic: the cache cannot answer them, so each one's first attempt
reserves in the admission's call. Redis's own ``INFO commandstats`` counts the top-level script
calls (``EVALSHA``: each one a round trip; what a script runs inside Redis is not one).

    PYTHONPATH=.:integrations python benchmarks/redis_roundtrips.py [--requests 400]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from asgi_ai_relay import Relay, RelayRequest
from tests.workers.servers import RedisServer

BIG = 10**9
BODY = orjson.dumps({"model": "test-model", "messages": [{"role": "user", "content": "Hello, benchmark."}]})
HEADERS = {"content-type": "application/json", "authorization": "Bearer bench-key"}


def config(upstream: str, redis: str | None) -> dict[str, Any]:
    storage: dict[str, str] = {"ledger": "memory://"}
    if redis is not None:
        prefix = f"bench-{os.urandom(4).hex()}"
        storage.update(limits=f"{redis}?prefix={prefix}&timeout=1", slots=f"{redis}?prefix={prefix}&timeout=1")
    return dict(
        storage=storage, api_keys=[{"key": "bench-key", "caller": "bench"}],
        providers={"up": {"kind": "openai_compatible", "base_url": f"{upstream}/v1", "api_key": "sk-bench"}},
        models={"test-model": {"provider": "up", "upstream": "gpt-4o-mini", "price": {"input": 2.5, "output": 10}}},
        limits={"global": {"rpm": BIG, "tpm": BIG}, "caller": {"rpm": BIG, "tpm": BIG}, "model": {"rpm": BIG, "tpm": BIG}},
        queue={"max_in_flight": 64, "per_provider": 32}, budgets={"default": {"daily": "100000"}},
    )


def script_calls(redis: RedisServer) -> int:
    calls = 0
    for line in redis.cli("info", "commandstats").splitlines():
        name, _, stats = line.partition(":")
        if name in ("cmdstat_evalsha", "cmdstat_eval"):
            calls += int(stats.split(",")[0].split("=")[1])
    return calls


async def settle(relay: Relay) -> None:
    await asyncio.sleep(0)
    while relay.background:
        await asyncio.gather(*list(relay.background), return_exceptions=True)
    await relay.traffic.settle()


async def run(relays: dict[str, Relay], requests: int, redis: RedisServer) -> tuple[dict[str, list[float]], float]:
    """Each relay's latencies (ms), their requests alternating, and the Redis relay's script calls per request."""
    request = RelayRequest("POST", "/v1/chat/completions", HEADERS, BODY)
    for relay in relays.values():
        for _ in range(20):  # warm up: connections, scripts loaded, budget counters seeded
            assert (await relay.handle(request)).status == 200
        await settle(relay)
    before = script_calls(redis)
    times: dict[str, list[float]] = {name: [] for name in relays}
    order = list(relays.items())
    for i in range(requests):
        for name, relay in order if i % 2 == 0 else reversed(order):
            started = time.perf_counter()
            response = await relay.handle(request)
            times[name].append((time.perf_counter() - started) * 1000)
            assert response.status == 200
            await settle(relay)  # the end-of-request calls land before the next request starts
    return times, (script_calls(redis) - before) / requests


def summary(times: list[float]) -> str:
    ordered = sorted(times)
    return (f"median {statistics.median(ordered):.3f} ms, p95 {ordered[int(len(ordered) * 0.95)]:.3f} ms, "
            f"mean {statistics.fmean(ordered):.3f} ms")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="redis-roundtrips-"))
    fake = subprocess.Popen(["timeout", "600", sys.executable, str(Path(__file__).parent / "fake_upstream.py"), "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert fake.stdout is not None
        port = int(fake.stdout.readline().split()[1])
        with RedisServer(tmp) as redis:
            await measure(f"http://127.0.0.1:{port}", redis, args.requests, args.rounds)
    finally:
        fake.terminate()
        fake.wait(timeout=10)
        subprocess.run(["rm", "-rf", str(tmp)], check=False)


async def measure(upstream: str, redis: RedisServer, requests: int, rounds: int) -> None:
    print(f"{requests} requests one at a time per relay, alternating, {rounds} rounds, redis-server on 127.0.0.1:{redis.port}")
    added = []
    for round_ in range(rounds):
        relays = {name: Relay(config(upstream, redis.url if name == "redis" else None)) for name in ("memory", "redis")}
        try:
            times, trips = await run(relays, requests, redis)
        finally:
            for relay in relays.values():
                await relay.shutdown()
        for name in ("memory", "redis"):
            extra = f", {trips:.2f} script round trips/request" if name == "redis" else ""
            print(f"  round {round_ + 1} {name:6s}: {summary(times[name])}{extra}")
        added.append(statistics.median(times["redis"]) - statistics.median(times["memory"]))
    print(f"Redis adds per request (median of each round): {', '.join(f'{a:.3f}' for a in added)} ms "
          f"(median {statistics.median(added):.3f} ms)")


if __name__ == "__main__":
    asyncio.run(main())
