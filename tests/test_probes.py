"""Clients probe their base URL before the first call (Claude Code sends ``HEAD {prefix}``):
the prefix root answers 200 without a key, and is recorded like every other request."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.applications import Starlette

from asgi_ai_relay import Relay, RelayMiddleware, RelayRequest
from asgi_ai_relay.storage.base import ROUTE_CHARS
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


def test_an_unknown_route_names_its_method_and_sanitised_path_in_log_and_ledger(caplog):
    relay = Relay(make_config(metrics={"enabled": True}))
    with caplog.at_level("INFO", logger="asgi_ai_relay"), LiveServer(RelayMiddleware(Starlette(), relay=relay)) as live:
        plain = httpx.post(f"{live.url}/ai/v2/chat/completions?key=secret-query-value", json={})
        encoded = httpx.get(f"{live.url}/ai/v1/some%20thing")
        wrong = httpx.delete(f"{live.url}/ai/v1/chat/completions")
        routed = httpx.get(f"{live.url}/ai/v1/models")
        # A path as a WSGI server may decode it: a space, a control character, far too long.
        odd = asyncio.run(relay.handle(RelayRequest("GET", "/v1/some thing\x07\u00e9/" + "x" * 500, {})))
        metrics = httpx.get(f"{live.url}/ai/metrics").text
    statuses = (plain.status_code, encoded.status_code, wrong.status_code, routed.status_code, odd.status)
    assert statuses == (404, 404, 405, 200, 404)
    rows = relay.ledger.rows()
    assert [(r.endpoint, r.status) for r in rows[:5]] == [("unknown", 404)] * 2 + [("unknown", 405), ("models", 200), ("unknown", 404)]
    first, second, third, fourth, fifth = (r.route for r in rows[:5])
    assert first == "POST /ai/v2/chat/completions" and second == "GET <non-canonical>"
    assert third == "DELETE /ai/v1/chat/completions" and fourth is None  # only unrouted requests name their route
    method, _, path = fifth.partition(" ")
    assert method == "GET" and path.startswith("/ai/v1/some%20thing\\x07\\xe9/x") and path.isprintable()
    assert len(path) == ROUTE_CHARS and path.endswith("x")
    lines = [r.getMessage() for r in caplog.records if "endpoint=unknown" in r.getMessage()]
    assert "method=POST path=/ai/v2/chat/completions" in lines[0] and "method=GET path=/ai/v1/some%20thing" in lines[-1]
    assert "secret-query-value" not in "\n".join(lines) + str(rows)
    # The metrics keep bounded labels: the endpoint "unknown", never the path.
    assert 'endpoint="unknown"' in metrics and "/v2/chat" not in metrics and "some" not in metrics
