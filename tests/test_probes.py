"""Clients probe their base URL before the first call (Claude Code sends ``HEAD {prefix}``):
the prefix root answers 200 without a key, and is recorded like every other request."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette

from asgi_ai_relay import Relay, RelayMiddleware
from tests.conftest import make_config
from tests.live import LiveServer


@pytest.mark.parametrize("root", ["/ai", "/ai/"])
def test_the_prefix_root_answers_probes(root):
    relay = Relay(make_config(require_auth=True, api_keys=[{"key": "k-1", "caller": "c"}]))
    with LiveServer(RelayMiddleware(Starlette(), relay=relay)) as live:
        head = httpx.head(f"{live.url}{root}")
        get = httpx.get(f"{live.url}{root}")
        models = httpx.get(f"{live.url}/ai/v1/models")
    assert (head.status_code, head.content) == (200, b"") and head.headers["x-request-id"]
    assert get.status_code == 200 and get.json() == {"object": "relay", "status": "ok"}
    assert models.status_code == 401  # the probe opens nothing else
    assert [(r.endpoint, r.status) for r in relay.ledger.rows()] == [("probe", 200), ("probe", 200), ("models", 401)]
