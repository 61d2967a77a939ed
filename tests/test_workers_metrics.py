"""``{prefix}/metrics`` across workers: with ``PROMETHEUS_MULTIPROC_DIR`` every scrape, whichever
worker answers it, counts the requests of all of them."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.workers.fixtures import host_config, key_env, pids, relay_key, spread_burst
from tests.workers.hosts import PID_HEADER
from tests.workers.servers import KINDS, ROOT, Host

pytestmark = [pytest.mark.timeout(180)]


def samples(text, name, **labels):
    return [
        s for family in text_string_to_metric_families(text) for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]


def scrapes_from_every_worker(host, tries=10, together=8):
    """Scrapes, each on a new connection, ``together`` at once, until each worker answered one
    (bounded by ``tries`` rounds). One at a time, a gunicorn host's idle worker that woke first
    last time may accept every connection."""
    answers = []
    headers = {"authorization": f"Bearer {relay_key('metrics')}", "connection": "close"}
    with ThreadPoolExecutor(together) as pool:
        for _ in range(tries):
            answers += pool.map(lambda _: host.get("/ai/metrics", headers=headers), range(together))
            if len(pids(answers)) == host.workers:
                return answers
    raise AssertionError(f"{tries * together} scrapes reached only workers {pids(answers)}")


@pytest.mark.parametrize("kind", [k for k in KINDS if k.startswith("gunicorn")] + ["uvicorn-fastapi"])
def test_every_scrape_counts_the_requests_of_both_workers(kind, upstream, tmp_path):
    directory = tmp_path / "prometheus"
    directory.mkdir()
    env = {**key_env(), "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    with Host(kind, workers=2, config=host_config(upstream), tmp=tmp_path, env=env) as host:
        answers = spread_burst(host, "metrics", 24)
        assert {a.status_code for a in answers} == {200}
        per_worker = {pid: sum(1 for a in answers if a.headers[PID_HEADER] == str(pid)) for pid in pids(answers)}
        assert len(per_worker) == 2 and all(per_worker.values())
        for scrape in scrapes_from_every_worker(host):
            assert scrape.status_code == 200
            text = scrape.text
            counted = samples(text, "relay_requests_total", endpoint="chat.completions", status="200")
            assert sum(s.value for s in counted) == len(answers), (scrape.headers[PID_HEADER], per_worker)
            latency = samples(text, "relay_request_latency_seconds_count", endpoint="chat.completions")
            assert sum(s.value for s in latency) == len(answers)
            # Queue depth: one gauge summed over the live workers, not one line per worker.
            waiting = samples(text, "relay_queue_depth", state="waiting")
            assert [s.value for s in waiting] == [0.0] and "pid" not in waiting[0].labels


WORKER = """
import asyncio, sys
from asgi_ai_relay.metrics import Metrics

metrics = Metrics()
state, depth = sys.argv[1], int(sys.argv[2])
if state != "-":
    metrics.watch_queue_depth(lambda: {("in_flight",): depth, ("waiting",): 0})

    async def health():
        return {"deployments": {"up/gpt-4o-mini": {"provider": "up", "state": state}}}

    metrics.watch_breakers(health)
sys.stdout.write(asyncio.run(metrics.scrape()).decode())
"""


def run_worker(directory, state, depth=0):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", WORKER, state, str(depth)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("states", [("open", "closed"), ("closed", "open")])
def test_watched_gauges_combine_across_processes(states, tmp_path):
    """Queue depth sums over the workers; the breaker state is the most recent reading."""
    first, last = states
    run_worker(tmp_path, first, depth=3)
    run_worker(tmp_path, last, depth=4)
    text = run_worker(tmp_path, "-")  # a worker that watches nothing answers the scrape
    assert [s.value for s in samples(text, "relay_queue_depth", state="in_flight")] == [7.0]
    breaker = samples(text, "relay_breaker_state", deployment="up/gpt-4o-mini", provider="up")
    assert [s.value for s in breaker] == [{"open": 2.0, "closed": 0.0}[last]]
