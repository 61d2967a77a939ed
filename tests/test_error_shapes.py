"""Refusals before any stage still speak the format of the endpoint at that path."""

from __future__ import annotations

import orjson

from asgi_ai_relay import Relay, RelayRequest


async def test_wrong_method_on_messages_is_answered_in_anthropic_shape():
    relay = Relay({"storage": {"ledger": "memory://"}})
    try:
        answer = await relay.handle(RelayRequest("GET", "/v1/messages", {}))
        assert answer.status == 405
        body = orjson.loads(answer.body)
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
        assert "GET" in body["error"]["message"]
        chat = await relay.handle(RelayRequest("GET", "/v1/chat/completions", {}))
        assert chat.status == 405 and orjson.loads(chat.body)["error"]["code"] == "method_not_allowed"
    finally:
        await relay.shutdown()
