"""Traffic control over real sockets: a client leaving the queue, Redis going away and back."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import subprocess
import threading
import time
import uuid

import httpx
import orjson
import pytest

from asgi_ai_relay import Relay, RelayMiddleware
from tests.conftest import REQUIRE_SERVICES, make_config
from tests.fake_upstream import Fault
from tests.live import LiveServer
from tests.test_ratelimit import chat


def wait_for(condition, timeout=10.0):
    """Poll a condition set by another thread, with a bound."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_client_disconnect_while_queued_frees_its_place(upstream):
    relay = Relay(make_config(upstream, queue={"max_in_flight": 1, "max_queue": 1}))
    upstream.script(Fault.stream_stall(after_chunks=2, seconds=30))
    gate = relay.traffic.gate
    body = orjson.dumps({"model": "test-model", "messages": [{"role": "user", "content": "queued"}]})
    with LiveServer(RelayMiddleware(relay=relay)) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        payload = {"model": "test-model", "stream": True, "messages": [{"role": "user", "content": "holder"}]}
        with client.stream("POST", "/ai/v1/chat/completions", json=payload) as holder:
            assert holder.status_code == 200
            wait_for(lambda: gate.in_flight == 1)
            raw = socket.create_connection(("127.0.0.1", server.port))
            raw.sendall(b"POST /ai/v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                        b"content-length: %d\r\n\r\n%s" % (len(body), body))
            wait_for(lambda: gate.waiting == 1)
            raw.close()
            wait_for(lambda: gate.waiting == 0)  # left the queue without waiting for a slot
            assert [r.status for r in relay.ledger.rows()] == [499]
            # Its place is free: with max_queue=1 another request may queue again.
            with httpx.Client(base_url=server.url, timeout=10) as other:
                result = {}
                worker = threading.Thread(target=lambda: result.update(
                    answer=other.post("/ai/v1/chat/completions", content=body,
                                      headers={"content-type": "application/json"})))
                worker.start()
                wait_for(lambda: gate.waiting == 1)
                holder.close()  # the stream ends, its slot goes to the queued request
                worker.join(timeout=10)
        assert result["answer"].status_code == 200
    assert gate.in_flight == 0 and gate.waiting == 0
    assert len(upstream.requests) == 2  # the departed request never reached the provider


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class OwnRedis:
    """A private redis-server on a free port, to stop and restart without touching the shared one."""

    def __init__(self):
        self.port = free_port()
        self.process = None

    def start(self):
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                assert time.monotonic() < deadline and self.process.poll() is None, "redis-server did not start"
                time.sleep(0.02)

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture
def own_redis():
    if shutil.which("redis-server") is None:
        message = "redis-server is not on PATH: cannot test Redis stopping and restarting"
        if REQUIRE_SERVICES:
            pytest.fail(message + " (RELAY_TEST_REQUIRE_SERVICES=1 makes this a failure)")
        pytest.skip(message)
    server = OwnRedis()
    server.start()
    yield server
    if server.process.poll() is None:
        server.stop()


@pytest.mark.redis
@pytest.mark.parametrize("fail_mode", ["open", "closed"])
async def test_redis_stopped_and_restarted_mid_test(upstream, own_redis, fail_mode, caplog):
    # timeout=2: the calls made while Redis runs must not fail only because a loaded machine held one
    # past a short bound; a stopped server refuses at once, whatever the bound.
    uri = f"redis://127.0.0.1:{own_redis.port}/0?prefix=t-{uuid.uuid4().hex}&timeout=2&retry_interval=0.05"
    relay = Relay(make_config(upstream, storage={"limits": uri}, limits={"caller": {"rpm": 2}},
                              queue={"on_limit": "reject", "fail_mode": fail_mode}))
    caplog.set_level(logging.WARNING, logger="asgi_ai_relay")
    try:
        statuses = [(await relay.handle(chat())).status for _ in range(3)]
        assert statuses == [200, 200, 429]

        await asyncio.to_thread(own_redis.stop)
        # Never a hang: each answer comes within a bound, however Redis fails.
        during = [await asyncio.wait_for(relay.handle(chat()), timeout=5) for _ in range(3)]
        expected = 200 if fail_mode == "open" else 503
        assert [a.status for a in during] == [expected] * 3
        if fail_mode == "closed":
            assert during[0].headers["retry-after"] == "1"
        down = [r.getMessage() for r in caplog.records if "is unavailable" in r.getMessage()]
        assert len(down) == 1  # one line for the outage, not one per request
        assert down[0].startswith(f"rate limits: Redis at redis://127.0.0.1:{own_redis.port}/0 is unavailable")

        await asyncio.to_thread(own_redis.start)  # empty again: --save ''
        deadline = asyncio.get_running_loop().time() + 10
        while (answer := await relay.handle(chat())).headers.get("x-ratelimit-remaining-requests") is None:
            assert asyncio.get_running_loop().time() < deadline, "the limiter did not recover"
            await asyncio.sleep(0.05)
        assert answer.status == 200
        assert (await relay.handle(chat())).status == 200
        assert (await relay.handle(chat())).status == 429  # enforced again
        assert [r.getMessage() for r in caplog.records if "available again" in r.getMessage()] == [
            f"rate limits: Redis at redis://127.0.0.1:{own_redis.port}/0 is available again"
        ]
    finally:
        await relay.shutdown()
