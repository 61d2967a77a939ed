"""Budgets across workers: with the budget store on Redis (``storage.budgets``), a caller's
spend stays within its budget plus what was already in flight when it ran out, however many
workers answer it."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal

import psycopg
import pytest

from tests.workers.fixtures import HOST_PARAMS, burst, host_config, key_env, pids, private_redis  # noqa: F401
from tests.workers.servers import Host

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.timeout(240)]

#: Requests that may be in flight at once: the client's concurrency.
IN_FLIGHT = 8
#: The budget, in requests of the fixed size every request of the test has.
BUDGET_REQUESTS = 20


def spend_rows(postgres_url, table, count):
    """The ledger rows of the test (bounded wait until every answered request has its row)."""
    deadline = time.monotonic() + 30
    while True:
        with psycopg.connect(postgres_url) as conn:
            rows = conn.execute(f"SELECT status, cost_usd FROM {table}").fetchall()
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


@pytest.mark.parametrize("host_kind", HOST_PARAMS)
def test_spend_stays_within_budget_plus_in_flight(host_kind, upstream, private_redis, postgres_url, tmp_path):
    kind, workers = host_kind
    table = f"relay_budget_{uuid.uuid4().hex}"
    prefix = f"b-{uuid.uuid4().hex[:8]}:"

    def config(budget):
        return host_config(
            upstream, callers=("budget",),
            # A shared machine may hold a call past the 0.25 s default; failing closed, a Redis
            # failure would show as a 503 here instead of passing as an unbudgeted admission.
            storage={"ledger": f"{postgres_url}?table={table}", "budgets": f"{private_redis.url}?prefix={prefix}&timeout=2"},
            budgets={"callers": {"budget": {"daily": str(budget)}}}, queue={"fail_mode": "closed"},
        )

    # Every request has the same size (same text length), so one costs the same as any other.
    probe = host_config(upstream, callers=("budget",), storage={"ledger": "memory://"})
    with Host(kind, workers=1, config=probe, tmp=tmp_path, env=key_env(("budget",))) as host:
        one = burst(host, "budget", 1, prefix="probe000")[0]
        assert one.status_code == 200
        cost = Decimal(one.headers["x-relay-cost-usd"])
    budget = cost * BUDGET_REQUESTS
    try:
        with Host(kind, workers=workers, config=config(budget), tmp=tmp_path, env=key_env(("budget",))) as host:
            answers = burst(host, "budget", 3 * BUDGET_REQUESTS, concurrency=IN_FLIGHT, prefix="spend000")
            assert {a.status_code for a in answers} <= {200, 429}
            assert len(pids(answers)) == workers
            refused = [a for a in answers if a.status_code == 429]
            assert refused and all(a.json()["error"]["code"] == "budget_exceeded" for a in refused)
            rows = spend_rows(postgres_url, table, len(answers))
        assert len(rows) == len(answers)
        spent = sum((Decimal(str(c)) for s, c in rows if c is not None), Decimal(0))
        # Overspend is bounded by the requests in flight when the budget ran out.
        assert spent <= budget + IN_FLIGHT * cost, (spent, budget, cost)
        assert spent >= budget - cost  # and the budget was there to be spent
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
