"""Fixtures of the multi-worker tests; a test module imports the ones it uses.

``worker_host`` is one host per (kind, worker count), started once per module and shared by the
module's tests: each test keeps to its own caller (its own relay key), so limits, budgets and
ledger rows of one test never meet another's.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REQUIRE_SERVICES, UPSTREAM_KEY
from tests.fake_upstream import FakeUpstream
from tests.workers.hosts import PID_HEADER
from tests.workers.servers import KINDS, Host, RedisServer

#: Callers ``rpm0``... each have this requests-per-minute limit (a fresh one per try).
RPM = 10
RPM_CALLERS = tuple(f"rpm{i}" for i in range(8))

#: The callers of the shared hosts, each a relay key of its own.
CALLERS = ("spread", "ledger", "metrics", "kill", *RPM_CALLERS)

HOST_PARAMS = [pytest.param((kind, workers), id=f"{kind}-w{workers}") for kind in KINDS for workers in (1, 2)]


def relay_key(caller: str) -> str:
    return f"rk-{caller}-0123456789"


def key_env(callers: tuple[str, ...] = CALLERS) -> dict[str, str]:
    """The environment a host needs: the upstream key and one relay key per caller."""
    return {"TEST_UPSTREAM_KEY": UPSTREAM_KEY, **{f"RELAY_KEY_{c.upper()}": relay_key(c) for c in callers}}


def host_config(upstream: FakeUpstream, callers: tuple[str, ...] = CALLERS, **sections: Any) -> dict[str, Any]:
    """A relay config for a harness host: ``test-model`` on the fake upstream, one key per caller."""
    config: dict[str, Any] = {
        "prefix": "/ai",
        "api_keys": [{"key": f"env:RELAY_KEY_{c.upper()}", "caller": c} for c in callers],
        "providers": {"up": {"kind": "openai_compatible", "base_url": f"{upstream.url}/v1", "api_key": "env:TEST_UPSTREAM_KEY"}},
        "models": {"test-model": {"provider": "up", "upstream": "gpt-4o-mini", "price": {"input": 2.5, "output": 10}}},
        "storage": {"ledger": "memory://"},
    }
    for name, value in sections.items():
        config[name] = {**config.get(name, {}), **value} if isinstance(value, Mapping) else value
    return config


def chat(host: Host, caller: str, text: str, *, temperature: float | None = None, **headers: str) -> httpx.Response:
    """One chat request of ``caller``; ``temperature=0`` makes it cacheable (``cache.mode``)."""
    body: dict[str, Any] = {"model": "test-model", "messages": [{"role": "user", "content": text}]}
    if temperature is not None:
        body["temperature"] = temperature
    return host.post("/ai/v1/chat/completions", headers={"authorization": f"Bearer {relay_key(caller)}", **headers}, json=body)


def burst(host: Host, caller: str, count: int, concurrency: int = 12, prefix: str = "") -> list[httpx.Response]:
    """``count`` requests of ``caller``, ``concurrency`` at a time, each with its own request id
    and on a connection of its own (a kept-alive connection would stay with one worker, and
    one worker may accept every connection of a burst, so each request is a new chance)."""
    tag = prefix or uuid.uuid4().hex[:8]

    def one(i: int) -> httpx.Response:
        return chat(host, caller, f"hello {tag} {i}", **{"x-request-id": f"{tag}-{i:05d}", "connection": "close"})

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, range(count)))


def pids(answers: list[httpx.Response]) -> set[int]:
    return {int(a.headers[PID_HEADER]) for a in answers}


def spread_burst(host: Host, caller: str, count: int, concurrency: int = 12, tries: int = 10) -> list[httpx.Response]:
    """A burst that every worker of ``host`` served part of (tried up to ``tries`` times)."""
    answers: list[httpx.Response] = []
    for _ in range(tries):
        answers += burst(host, caller, count, concurrency)
        if len(pids(answers)) >= host.workers:
            return answers
    raise AssertionError(f"{tries} bursts of {count} reached only workers {pids(answers)} of {host.worker_pids()}")


def need_binary(name: str) -> None:
    if shutil.which(name) is None:
        message = f"{name} is not on PATH: the multi-worker tests need it"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of this module alone (free port, no persistence), stopped at its end."""
    need_binary("redis-server")
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="module", params=HOST_PARAMS)
def worker_host(
    request: pytest.FixtureRequest, _upstream_server: FakeUpstream, private_redis: RedisServer,
    postgres_url: str, tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Host]:
    """A host of each kind with 1 and 2 workers; limits on the private Redis, the ledger in its
    own PostgreSQL table (``host.table``)."""
    kind, workers = request.param
    table = f"relay_workers_{uuid.uuid4().hex}"
    prefix = f"w-{uuid.uuid4().hex[:8]}:"
    config = host_config(
        _upstream_server,
        # timeout=2: a shared test machine may hold a call past the 0.25 s default; failing
        # closed, a Redis failure shows as a 503 instead of passing as an admission.
        storage={"ledger": f"{postgres_url}?table={table}", "limits": f"{private_redis.url}?prefix={prefix}&timeout=2"},
        limits={"callers": {c: {"rpm": RPM} for c in RPM_CALLERS}},
        queue={"on_limit": "reject", "fail_mode": "closed"},
    )
    host = Host(kind, workers=workers, config=config, tmp=tmp_path_factory.mktemp(kind), env=key_env())
    host.table = table  # type: ignore[attr-defined]
    with host:
        yield host
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
