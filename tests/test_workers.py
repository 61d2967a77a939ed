"""One relay across worker processes: uvicorn ``--workers`` (FastAPI), gunicorn gthread (Flask,
Django WSGI), each with 1 and 2 workers on one private Redis and one PostgreSQL ledger table.

Every test first makes sure both workers served part of its traffic (the ``x-worker-pid`` of
the answers), so a 2-worker run is really two processes sharing the state under test.
"""

from __future__ import annotations

import math
import time
from collections import Counter

import psycopg
import pytest

from tests.workers.fixtures import RPM, RPM_CALLERS, burst, pids, private_redis, spread_burst, worker_host  # noqa: F401

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.timeout(240)]


def test_requests_reach_every_worker(worker_host, upstream):
    answers = spread_burst(worker_host, "spread", 24)
    assert {a.status_code for a in answers} == {200}
    assert pids(answers) == worker_host.worker_pids()
    assert len(pids(answers)) == worker_host.workers


def rpm_burst(host):
    """A burst of 4 x RPM requests of one limited caller that every worker took part in (each
    try with a caller of its own, so each starts with a full allowance)."""
    for caller in RPM_CALLERS:
        started = time.monotonic()
        answers = burst(host, caller, 4 * RPM, concurrency=8)
        elapsed = time.monotonic() - started
        if len(pids(answers)) == host.workers:
            return answers, elapsed
    raise AssertionError(f"no burst reached all {host.workers} workers")


def test_rpm_limit_admits_exactly_n_across_workers(worker_host, upstream):
    answers, elapsed = rpm_burst(worker_host)
    statuses = Counter(a.status_code for a in answers)
    assert set(statuses) <= {200, 429}, statuses
    # GCRA gives one unit back every 60/RPM s: a slow burst may earn that many more.
    earned = math.floor(elapsed / (60 / RPM))
    assert RPM <= statuses[200] <= RPM + earned, (statuses, elapsed)
    assert all(a.headers["retry-after"] for a in answers if a.status_code == 429)


def ledger_rows(postgres_url, table, caller):
    with psycopg.connect(postgres_url) as conn:
        return conn.execute(f"SELECT request_id, status FROM {table} WHERE caller = %s", (caller,)).fetchall()


def test_ledger_rows_from_every_worker_in_one_postgres_table(worker_host, upstream, postgres_url):
    answers = spread_burst(worker_host, "ledger", 40)
    sent = sorted(a.headers["x-request-id"] for a in answers)
    assert {a.status_code for a in answers} == {200} and len(set(sent)) == len(sent)
    # Rows are written in batches behind the answers: wait (bounded) until all could be there.
    deadline = time.monotonic() + 30
    while len(rows := ledger_rows(postgres_url, worker_host.table, "ledger")) < len(sent) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sorted(r[0] for r in rows) == sent  # no row lost, none twice
    assert {r[1] for r in rows} == {200}
