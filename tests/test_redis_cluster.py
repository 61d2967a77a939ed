"""The limiter, budgets, breakers and cache on a real 3-node Redis Cluster on loopback ports,
started by the test (``redis-server --cluster-enabled yes`` + ``redis-cli --cluster create``)."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
import uuid

import pytest

from tests.conftest import REQUIRE_SERVICES, make_config
from tests.relay_calls import chat, relays  # noqa: F401 - relays: the fixture
from tests.test_budget import KEYS, actual_cost

pytestmark = pytest.mark.redis

BODY = {"model": "test-model", "messages": [{"role": "user", "content": "spend some money please"}]}


def _free(port):
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port(taken):
    """A free port whose cluster bus port (the port + 10000) is free too."""
    while True:
        port = random.randrange(20_000, 50_000)
        if port not in taken and _free(port) and _free(port + 10_000):
            return port


def _wait_port(port, process):
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            assert time.monotonic() < deadline and process.poll() is None, "redis-server did not start"
            time.sleep(0.02)


def _cluster_ok(port):
    info = subprocess.run(["redis-cli", "-p", str(port), "cluster", "info"], capture_output=True, text=True, timeout=5)
    return "cluster_state:ok" in info.stdout


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The URI of a fresh 3-primary cluster; stopped after the module."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        message = "redis-server and redis-cli are not on PATH: cannot start a cluster"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)
    ports: list[int] = []
    for _ in range(3):
        ports.append(cluster_port(ports))
    processes = []
    try:
        for port in ports:
            folder = tmp_path_factory.mktemp(f"node{port}")
            processes.append(subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", str(folder / "nodes.conf"), "--save", "", "--appendonly", "no"],
                cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
        for port, process in zip(ports, processes, strict=True):
            _wait_port(port, process)
        subprocess.run(["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
                        "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, capture_output=True, timeout=30)
        deadline = time.monotonic() + 10
        while not all(_cluster_ok(p) for p in ports):
            assert time.monotonic() < deadline, "the cluster did not reach cluster_state:ok"
            time.sleep(0.05)
        yield f"redis+cluster://127.0.0.1:{ports[0]}"
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=10)


def slot(cluster, key):
    port = cluster.rsplit(":", 1)[1]
    out = subprocess.run(["redis-cli", "-p", port, "cluster", "keyslot", key], capture_output=True, text=True, timeout=5)
    return int(out.stdout)


async def test_limiter_and_budgets_on_a_cluster(upstream, cluster, relays):  # noqa: F811
    tag = uuid.uuid4().hex
    cost = actual_cost(BODY)
    relay = relays(make_config(
        upstream, api_keys=KEYS,
        storage={"limits": f"{cluster}/?prefix=l-{tag}&timeout=1", "budgets": f"{cluster}/?prefix=b-{tag}&timeout=1",
                 "breakers": f"{cluster}/?prefix=k-{tag}:&timeout=1", "cache": f"{cluster}/?prefix=c-{tag}:&timeout=1"},
        limits={"caller": {"rpm": 3}, "global": {"rpm": 100}, "model": {"tpm": 100_000}},
        queue={"on_limit": "reject"},
        budgets={"callers": {"b": {"daily": str(2 * cost)}}},
    ))
    # Rate limits: three buckets per request (global, caller, model) in one script, one slot.
    limited = [(await chat(relay, BODY, key="key-a")).status for _ in range(4)]
    assert limited == [200, 200, 200, 429]
    spent = []
    for _ in range(3):
        spent.append((await chat(relay, BODY, key="key-b")).status)
        for task in list(relay.background):
            await task
    assert spent == [200, 200, 429]  # the budget: seeded, held, settled, refused, on the cluster
    cached = await chat(relay, {**BODY, "temperature": 0}, key="key-b")
    assert cached.status == 429  # the budget comes before the cache


def test_every_multi_key_script_stays_in_one_slot(cluster):
    from asgi_ai_relay.storage.budgets import Window
    from asgi_ai_relay.storage.redis_budgets import RedisBudgets

    async def seeder(caller, since_month, since_day):
        raise AssertionError("not called")

    store = RedisBudgets(f"{cluster}/?prefix=p", seeder)
    slots = {}
    for caller in ("alice", "bob}{x", "{carol}", "dave"):
        day, month = store.keys(Window(caller, "2026-12-01", "2026-12", None, None, 0, 0, 1, 1))
        assert slot(cluster, day) == slot(cluster, month), caller
        slots[caller] = slot(cluster, day)
    assert len(set(slots.values())) > 1  # callers spread over the cluster
    # The limiter's keys all carry the prefix's tag: every bucket of a request in one slot.
    assert slot(cluster, "{relay}:global:all:r") == slot(cluster, "{relay}:caller:x:t")
