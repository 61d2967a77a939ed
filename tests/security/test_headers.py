"""Caller headers that are echoed or logged: only a safe X-Request-ID ever is."""

from __future__ import annotations

import logging

import pytest

from asgi_ai_relay import RelayMiddleware
from tests.live import LiveServer
from tests.security.raw_http import raw_request

CONFIG = {"storage": {"ledger": "memory://"}}


async def _get(app, headers):
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/ai/v1/models", "root_path": "", "query_string": b"", "headers": headers}
    await app(scope, receive, send)
    return dict(sent[0]["headers"])


@pytest.mark.parametrize(
    "given",
    [b"abc\r\nSet-Cookie: session=evil", b"abc\nrequest_id=forged caller=admin", b"a" * 129, b"id with spaces", b"id%0d%0a", b"\xc3\xa9t\xc3\xa9", b""],
)
async def test_unsafe_request_ids_are_replaced_not_echoed_nor_logged(given, caplog):
    caplog.set_level(logging.INFO, logger="asgi_ai_relay")
    headers = await _get(RelayMiddleware(config=CONFIG), [(b"x-request-id", given)])
    echoed = headers[b"x-request-id"]
    assert echoed != given and len(echoed) <= 128 and echoed.isalnum()
    (line,) = [r.getMessage() for r in caplog.records if r.name == "asgi_ai_relay"]
    assert f"request_id={echoed.decode()} " in line and "forged" not in line and "\n" not in line
    assert b"set-cookie" not in headers


@pytest.mark.parametrize("given", ["req-1", "a" * 128, "trace:span.01_x-y"])
async def test_safe_request_ids_are_kept(given):
    assert (await _get(RelayMiddleware(config=CONFIG), [(b"x-request-id", given.encode())]))[b"x-request-id"] == given.encode()


def test_request_id_over_the_wire():
    with LiveServer(RelayMiddleware(config=CONFIG)) as live:
        long = raw_request(live.url, "GET", "/ai/v1/models", headers={"X-Request-ID": "x" * 5000})
        kept = raw_request(live.url, "GET", "/ai/v1/models", headers={"X-Request-ID": "client-42"})
    assert long.status == 200 and long.headers["x-request-id"] != "x" * 5000 and len(long.headers["x-request-id"]) <= 128
    assert kept.headers["x-request-id"] == "client-42"
