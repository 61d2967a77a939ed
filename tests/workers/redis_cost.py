"""What each request costs on Redis: a bounded run (``COUNT`` requests, loopback only) against a
2-worker host with limits, breakers and cache on a private redis-server, counted with ``MONITOR``
(commands a client sent, i.e. round trips, apart from those Lua scripts ran inside Redis).

    PYTHONPATH=.:integrations python -m tests.workers.redis_cost [host kind]
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.conftest import UPSTREAM_KEY
from tests.fake_upstream import FakeUpstream
from tests.workers.fixtures import host_config, key_env, relay_key
from tests.workers.servers import Host, RedisServer

COUNT = 200
_LINE = re.compile(r'^\d+\.\d+ \[\d+ (\S+)\] "([^"]+)"(?: "([0-9a-f]{40})")?')


def script_names() -> dict[str, str]:
    """SHA1 -> which script it is, for the relay's Lua scripts."""
    from asgi_ai_relay.storage import redis as limits, redis_admission as admission, redis_breakers as breakers
    from asgi_ai_relay.storage import redis_cache as cache, redis_giveback as giveback, redis_leases as leases

    try:
        from asgi_ai_relay.storage import redis_budgets as budgets
    except ImportError:  # no shared budget store
        budget_sources = {}
    else:
        budget_sources = {"budgets.hold": budgets._HOLD, "budgets.settle": budgets._SETTLE, "budgets.seed": budgets._SEED}
    sources = {**budget_sources,
        "limits.acquire": limits._ACQUIRE, "limits.adjust": limits._ADJUST, "breakers.allow": breakers._ALLOW,
        "breakers.record": breakers._RECORD, "breakers.release": breakers._RELEASE, "leases.acquire": leases._ACQUIRE,
        "leases.release": leases._RELEASE, "admission.admit": admission._ADMIT, "admission.finish": giveback._FINISH,
        "cache.claim": cache._CLAIM, "cache.unclaim": cache._UNCLAIM, "cache.publish": cache._PUBLISH,
    }
    return {hashlib.sha1(source.encode()).hexdigest(): name for name, source in sources.items()}


def scenarios(redis: str) -> dict[str, dict]:
    limits = {"caller": {"rpm": 100000}, "global": {"rpm": 100000}}
    return {
        "limits (caller + global rpm)": {"storage": {"limits": f"{redis}?prefix=a"}, "limits": limits},
        "limits with tpm": {"storage": {"limits": f"{redis}?prefix=b"}, "limits": {"caller": {"rpm": 100000, "tpm": 10**8}}},
        "limits + breakers": {"storage": {"limits": f"{redis}?prefix=c", "breakers": f"{redis}?prefix=c:"}, "limits": limits},
        "limits + breakers + cache (misses)": {
            "storage": {"limits": f"{redis}?prefix=d", "breakers": f"{redis}?prefix=d:", "cache": f"{redis}?prefix=d:cache:"},
            "limits": limits,
        },
        "limits + breakers + cache (hits)": {
            "storage": {"limits": f"{redis}?prefix=e", "breakers": f"{redis}?prefix=e:", "cache": f"{redis}?prefix=e:cache:"},
            "limits": limits, "_same_prompt": True,
        },
        "limits + breakers + cache + budgets (misses)": {
            "storage": {"limits": f"{redis}?prefix=f", "breakers": f"{redis}?prefix=f:", "cache": f"{redis}?prefix=f:cache:"},
            "limits": limits, "budgets": {"default": {"daily": "1000"}},
        },
        "limits (rpm, tpm; caller, model) + budgets + slots": {
            "storage": {"limits": f"{redis}?prefix=g", "slots": f"{redis}?prefix=g"},
            "limits": {"caller": {"rpm": 100000, "tpm": 10**8}, "model": {"rpm": 100000, "tpm": 10**8}},
            "budgets": {"default": {"daily": "1000"}}, "queue": {"max_in_flight": 64, "per_provider": 32},
        },
        "everything: + breakers + cache (misses)": {
            "storage": {"limits": f"{redis}?prefix=h", "slots": f"{redis}?prefix=h", "breakers": f"{redis}?prefix=h:",
                        "cache": f"{redis}?prefix=h:cache:"},
            "limits": {"caller": {"rpm": 100000, "tpm": 10**8}, "model": {"rpm": 100000, "tpm": 10**8}},
            "budgets": {"default": {"daily": "1000"}}, "queue": {"max_in_flight": 64, "per_provider": 32},
        },
    }


def measure(kind: str, upstream: FakeUpstream, redis: RedisServer, sections: dict, tmp: Path) -> tuple[Counter[str], int]:
    same = sections.pop("_same_prompt", False)
    config = host_config(upstream, callers=("cost",), **sections)
    with Host(kind, workers=2, config=config, tmp=tmp, env=key_env(("cost",))) as host:
        log = tmp / f"monitor-{os.urandom(3).hex()}.log"
        with log.open("wb") as out:
            monitor = subprocess.Popen(["timeout", "120", "redis-cli", "-p", str(redis.port), "monitor"], stdout=out)
            time.sleep(0.3)  # MONITOR shows only what comes after it started

            def one(i: int) -> int:
                text = "same prompt" if same else f"prompt {i}"
                return host.post(
                    "/ai/v1/chat/completions", headers={"authorization": f"Bearer {relay_key('cost')}"},
                    json={"model": "test-model", "temperature": 0, "messages": [{"role": "user", "content": text}]},
                ).status_code

            with ThreadPoolExecutor(8) as pool:
                statuses = Counter(pool.map(one, range(COUNT)))
            time.sleep(0.5)  # cache writes and limit settles run just after the answers
            monitor.terminate()
            monitor.wait(timeout=10)
        assert statuses == {200: COUNT}, statuses
    sent: Counter[str] = Counter()
    names = script_names()
    for line in log.read_text(errors="replace").splitlines():
        match = _LINE.match(line)
        if match and match.group(1) != "lua":
            command = match.group(2).upper()
            sent[f"EVALSHA {names.get(match.group(3) or '', '?')}" if command == "EVALSHA" else command] += 1
    return sent, COUNT


async def script_latency(redis: RedisServer) -> tuple[float, float]:
    """Median and 95th percentile (ms) of one limiter decision (one EVALSHA), ``COUNT`` in a row."""
    from asgi_ai_relay.limits import Bucket, Rate
    from asgi_ai_relay.storage.redis import RedisRateLimits

    store = RedisRateLimits(f"{redis.url}?prefix=latency")
    buckets = [Bucket("caller:x", Rate(100000), "requests"), Bucket("global", Rate(100000), "requests")]
    await store.acquire(buckets, [1, 1])
    times = []
    for _ in range(COUNT):
        started = time.perf_counter()
        await store.acquire(buckets, [1, 1])
        times.append((time.perf_counter() - started) * 1000)
    await store.aclose()
    times.sort()
    return times[len(times) // 2], times[int(len(times) * 0.95)]


def main() -> None:
    kind = sys.argv[1] if len(sys.argv) > 1 else "uvicorn-fastapi"
    os.environ.update({"TEST_UPSTREAM_KEY": UPSTREAM_KEY})
    tmp = Path(tempfile.mkdtemp(prefix="redis-cost-"))
    with FakeUpstream(api_key=UPSTREAM_KEY) as upstream, RedisServer(tmp) as redis:
        print(f"{kind}, 2 workers, {COUNT} requests, 8 at a time; Redis commands sent per request:")
        for name, sections in scenarios(redis.url).items():
            sent, count = measure(kind, upstream, redis, sections, tmp)
            setup = {c: n for c, n in sent.items() if c in ("HELLO", "CLIENT", "SELECT", "PING")}
            per = {c: round(n / count, 2) for c, n in sorted(sent.items()) if c not in setup}
            total = sum(n for c, n in sent.items() if c not in setup) / count
            print(f"  {name}: {total:.2f} round trips/request {per} (connection set-up: {setup})")
        median, p95 = asyncio.run(script_latency(redis))
        print(f"one limiter round trip from asyncio (loopback): median {median:.3f} ms, p95 {p95:.3f} ms")


if __name__ == "__main__":
    main()
