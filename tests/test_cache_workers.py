"""Single-flight across processes: two uvicorn servers (each its own process and relay) on one
Redis; identical concurrent requests spread over both make one upstream call.

:func:`worker_app` is the app factory the servers run (``uvicorn --factory``): a relay whose
config comes from ``RELAY_TEST_CONFIG`` (JSON).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid

import httpx
import orjson
import pytest

from tests.conftest import make_config
from tests.fake_upstream import Fault

BODY = {"model": "test-model", "messages": [{"role": "user", "content": "Twenty of us, one answer."}], "temperature": 0}


def worker_app():
    from asgi_ai_relay import RelayMiddleware

    return RelayMiddleware(config=orjson.loads(os.environ["RELAY_TEST_CONFIG"]))


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(config, port):
    env = {**os.environ, "RELAY_TEST_CONFIG": orjson.dumps(config).decode()}
    command = [sys.executable, "-m", "uvicorn", "tests.test_cache_workers:worker_app", "--factory",
               "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"]
    return subprocess.Popen(command, env=env, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _wait_until_serving(process, port, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, "the worker exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            assert time.monotonic() < deadline, "the worker did not start"
            time.sleep(0.05)


@pytest.mark.redis
def test_twenty_identical_requests_over_two_processes_make_one_upstream_call(upstream, redis_url):
    prefix = f"test:{uuid.uuid4().hex}:"
    config = make_config(upstream, storage={"cache": f"{redis_url}?prefix={prefix}&timeout=2"})
    ports = [_free_port(), _free_port()]
    workers = [_serve(config, port) for port in ports]
    try:
        for process, port in zip(workers, ports):
            _wait_until_serving(process, port)
        # The first request to reach the provider is held a while, so the others arrive while it
        # is in flight; whatever the timing, more than one call would be a failure.
        upstream.script(Fault.delay(1.0))

        async def run():
            async with httpx.AsyncClient(timeout=30) as client:
                return await asyncio.gather(*[
                    client.post(f"http://127.0.0.1:{ports[i % 2]}/ai/v1/chat/completions", json=BODY) for i in range(20)
                ])

        answers = asyncio.run(run())
        assert [a.status_code for a in answers] == [200] * 20
        assert len({a.content for a in answers}) == 1
        assert len(upstream.requests) == 1
        assert sorted(a.headers["x-relay-cache"] for a in answers) == ["hit"] * 19 + ["miss"]
    finally:
        for process in workers:
            process.terminate()
        for process in workers:
            process.wait(timeout=15)
        import redis

        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()
