"""The ledger row of a finished request carries each of the request's values in its own field
(the row is built by position, in :data:`~asgi_ai_relay.storage.base.LEDGER_COLUMNS` order)."""

from __future__ import annotations

import logging
from decimal import Decimal
from types import SimpleNamespace

from asgi_ai_relay.call import Call
from asgi_ai_relay.config.schema import ModelConfig
from asgi_ai_relay.config.settings import Price
from asgi_ai_relay.errors import UpstreamTimeout
from asgi_ai_relay.protocol import OPENAI
from asgi_ai_relay.stages.usage import record
from asgi_ai_relay.storage.memory import MemoryLedger
from asgi_ai_relay.types import Caller, RelayRequest, Usage


def _relay() -> SimpleNamespace:
    return SimpleNamespace(ledger=MemoryLedger(), config=SimpleNamespace(log_requests=False, prefix="/ai"),
                           logger=logging.getLogger("asgi_ai_relay.test"))


def _call(endpoint: str, method: str = "POST", path: str = "/v1/chat/completions", **fields) -> Call:
    call = Call(RelayRequest(method, path, {}), fields.pop("request_id"), endpoint, OPENAI)
    for name, value in fields.items():
        assert hasattr(call, name), name
        setattr(call, name, value)
    return call


def test_every_field_of_the_row_comes_from_its_own_value():
    relay = _relay()
    flex = Price(input=Decimal(1), output=Decimal(2))
    model = ModelConfig(alias="alias-m", provider="prov", upstream="up-m",
                        price=Price(input=Decimal(3), output=Decimal(4), tiers={"flex": flex}))
    call = _call("chat.completions", request_id="rid-1", ts=1234.5, stream=True, model=model,
                 caller=Caller(id="who", extra={"key_id": "k-1", "team": "t-1"}), provider="prov",
                 cost=Decimal("0.25"), counted_prompt=77, usage_flag="prompt", status=502,
                 error=UpstreamTimeout("boom"), cache="miss", saved=Decimal("0.5"), attempts=2,
                 attempt_log=[{"deployment": "d"}], upstream_ms=12.34567, ttfb_ms=5.4321)
    call.usage = Usage(100, 50, 10, 20, True, cache_write_1h_tokens=5, reasoning_tokens=7, audio_input_tokens=3,
                       image_input_tokens=4, web_search_requests=2, service_tier="flex")
    record(relay, call)  # type: ignore[arg-type]
    (row,) = relay.ledger.rows()
    expected = dict(
        ts=1234.5, request_id="rid-1", caller="who", endpoint="chat.completions", model="alias-m", provider="prov",
        upstream_model="up-m", stream=True, status=502, error_type="upstream_timeout",
        prompt_tokens=100, completion_tokens=50, cached_tokens=10, cost_usd=Decimal("0.25"), cache_hit=False,
        ttfb_ms=5.432, upstream_ms=12.346, attempts=2, estimated=True, attempt_log='[{"deployment":"d"}]',
        cache_saved_usd=Decimal("0.5"), cache_write_5m_tokens=15, cache_write_1h_tokens=5, reasoning_tokens=7,
        audio_input_tokens=3, image_input_tokens=4, web_search_requests=2, service_tier="flex", price_rule="tier:flex",
        counted_prompt_tokens=77, usage_flag="prompt", route=None, key_id="k-1", team="t-1",
    )
    got = row.as_dict()
    assert got.pop("latency_ms") >= 0
    assert got == expected


def test_a_plain_request_has_the_defaults_of_what_it_lacks():
    relay = _relay()
    call = _call("unknown", "GET", "/nowhere", request_id="rid-2", requested_model="m\x00", status=404)
    record(relay, call)  # type: ignore[arg-type]
    (row,) = relay.ledger.rows()
    assert (row.model, row.provider, row.upstream_model, row.error_type, row.price_rule, row.key_id, row.team) == (
        "m\\x00", None, None, None, None, None, None)
    assert (row.prompt_tokens, row.cache_write_5m_tokens, row.service_tier, row.attempt_log) == (0, 0, None, None)
    assert row.route == "GET /ai/nowhere"
