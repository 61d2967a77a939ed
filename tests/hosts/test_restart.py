"""Budgets survive a restart of the host process: spend is seeded from the ledger on disk."""

from __future__ import annotations

import httpx
import orjson
import pytest

from tests.conftest import make_config
from tests.fake_upstream import Fault
from tests.hosts.servers import Host, wait_for

pytest.importorskip("gunicorn")

CHAT = "/ai/v1/chat/completions"
BODY = orjson.dumps({"model": "test-model", "messages": [{"role": "user", "content": "spend it"}]})

# The core starts itself (ledger, client, budget seeding) on its first request, behind a lock,
# so hosts without a lifespan (WSGI) seed their budgets like the ASGI hosts do.


def ask(host: Host, request_id: str) -> httpx.Response:
    return httpx.post(f"{host.url}{CHAT}", content=BODY, headers={"x-request-id": request_id}, timeout=30)


@pytest.mark.parametrize("kind", ["gunicorn-flask", "gunicorn-django", "uvicorn-fastapi"])
def test_a_caller_over_budget_is_still_refused_after_a_restart(kind, tmp_path, upstream):
    config = make_config(upstream, require_auth=False, budgets={"default": {"daily": "1.00"}})
    host = Host(kind, config=config, tmp=tmp_path)
    with host:
        upstream.script(Fault.usage(prompt_tokens=1_000_000))  # $2.50 at $2.50 per million
        assert ask(host, "spend").status_code == 200
        refused = ask(host, "refused")
        assert (refused.status_code, refused.json()["error"]["code"]) == (429, "budget_exceeded")
        wait_for(lambda: "spend" in host.rows(), what="the spending row on disk")
    with host:  # a new process on the same ledger
        after = ask(host, "after-restart")
        assert after.status_code == 429, after.text
        assert after.json()["error"]["code"] == "budget_exceeded"
    assert len(upstream.requests) == 1
