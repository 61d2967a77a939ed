"""``{prefix}/metrics`` across workers: with ``PROMETHEUS_MULTIPROC_DIR`` every scrape, whichever
worker answers it, counts the requests of all of them."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.workers.fixtures import host_config, key_env, pids, relay_key, spread_burst
from tests.workers.hosts import PID_HEADER
from tests.workers.servers import KINDS, Host

pytestmark = [pytest.mark.timeout(180)]


def samples(text, name, **labels):
    return [
        s for family in text_string_to_metric_families(text) for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]


def scrapes_from_every_worker(host, tries=20):
    """Scrapes, each on a new connection, until each worker answered one (bounded by ``tries``)."""
    answers = []
    headers = {"authorization": f"Bearer {relay_key('metrics')}", "connection": "close"}
    for _ in range(tries):
        answers.append(host.get("/ai/metrics", headers=headers))
        if len(pids(answers)) == host.workers:
            return answers
    raise AssertionError(f"{tries} scrapes reached only workers {pids(answers)}")


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
