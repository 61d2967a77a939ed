"""Exact costs against a hand-computed table, the reporting currency and usage estimates."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from asgi_ai_relay import Relay
from asgi_ai_relay.config import Price, load_config
from asgi_ai_relay.pricing import cost_at, estimate_usage, list_price, model_cost, to_currency
from asgi_ai_relay.tokens import prompt_tokens
from asgi_ai_relay.types import Usage

D = Decimal

# price (in, out, cached), multiplier, usage (prompt, completion, cached) -> USD, worked by hand:
TABLE = [
    # 1000 * 2.50/1e6 + 500 * 8.00/1e6 = 0.0025 + 0.004
    (("2.50", "8.00", "0.625"), "1", (1000, 500, 0), "0.0065"),
    # (1000-400) * 2.5e-6 + 400 * 0.625e-6 + 500 * 8e-6 = 0.0015 + 0.00025 + 0.004
    (("2.50", "8.00", "0.625"), "1", (1000, 500, 400), "0.00575"),
    # no cached price: cached tokens at the input price -> 0.0065, then x 0.137 (¥1 = $1 at ¥7.3)
    (("2.50", "8.00", None), "0.137", (1000, 500, 400), "0.0008905"),
    # one token of each at deepseek prices: 0.10e-6 + 0.42e-6
    (("0.10", "0.42", "0.028"), "1", (1, 1, 0), "0.00000052"),
    # 3 cached of 3 prompt tokens: 3 * 0.028e-6 = 0.000000084, x 0.5
    (("0.10", "0.42", "0.028"), "0.5", (3, 0, 3), "0.000000042"),
    # cached above prompt is capped at prompt: 10 * 0.3e-6 (cached) + 2 * 15e-6
    (("3.00", "15.00", "0.30"), "1", (10, 2, 99), "0.000033"),
    ((("0", "0", None)), "1", (10**9, 10**9, 0), "0"),
]


@pytest.mark.parametrize(("price", "multiplier", "usage", "expected"), TABLE)
def test_cost_table(price, multiplier, usage, expected):
    p = Price(D(price[0]), D(price[1]), D(price[2]) if price[2] is not None else None)
    assert cost_at(p, Usage(*usage), D(multiplier)) == D(expected)


def test_model_cost_uses_provider_multiplier_and_currency():
    config = load_config({
        "providers": {"cheap": {"kind": "openai_compatible", "base_url": "http://127.0.0.1:9/v1", "price_multiplier": "0.137"}},
        "models": {"m": {"provider": "cheap", "price": {"input": 2.5, "output": 8}}},
        "pricing": {"currency": "CNY", "exchange_rate": "7.3", "lists": {"direct": {"m": {"input": 3, "output": 9}}}},
    })
    cost = model_cost(config, config.models["m"], Usage(1000, 500))
    assert cost == D("0.0065") * D("0.137") == D("0.0008905")
    assert to_currency(config, cost) == D("0.00650065")
    assert list_price(config, "direct", "m") == Price(D(3), D(9))
    assert list_price(config, "catalog", "m") == Price(D("2.5"), D(8))
    assert list_price(config, "direct", "other") is None


def test_estimated_usage_whole_and_streamed():
    body = {"messages": [{"role": "user", "content": "x" * 40}]}
    whole = orjson.dumps({"choices": [{"message": {"role": "assistant", "content": "y" * 20}}]})
    prompt = prompt_tokens(body)
    assert 10 < prompt < 20  # 40 characters, and the message's framing
    assert estimate_usage(body, [whole], stream=False) == Usage(prompt, 5, estimated=True)
    events = [b'data: {"choices":[{"delta":{"content":"yyyy"}}]}\n\ndata: {"choices":[{"delta":', b'{"content":"yyyyyyyy"}}]}\n\n', b"data: [DONE]\n\n"]
    assert estimate_usage(body, events, stream=True) == Usage(prompt, 3, estimated=True)


def _no_usage_upstream():
    """A provider that never reports usage (some OpenAI-compatible servers), served for real."""
    from starlette.applications import Starlette
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    async def completions(request):
        body = await request.json()
        if body.get("stream"):
            async def events():
                for word in ("abcd", "efgh", "ijkl"):
                    yield b'data: {"id":"x","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"' + word.encode() + b'"}}]}\n\n'
                yield b"data: [DONE]\n\n"
            return StreamingResponse(events(), media_type="text/event-stream")
        answer = {"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": "z" * 16}, "finish_reason": "stop"}]}
        return Response(orjson.dumps(answer), media_type="application/json")

    return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])


async def test_missing_usage_is_estimated_and_marked():
    from tests.live import LiveServer
    from tests.relay_calls import chat, pieces

    with LiveServer(_no_usage_upstream()) as server:
        relay = Relay({
            "storage": {"ledger": "memory://"},
            "providers": {"bare": {"kind": "openai_compatible", "base_url": f"{server.url}/v1"}},
            "models": {"bare-model": {"provider": "bare", "price": {"input": 1, "output": 2}}},
        })
        body = {"model": "bare-model", "messages": [{"role": "user", "content": "x" * 40}]}
        assert (await chat(relay, body)).status == 200
        assert b"".join(await pieces(await chat(relay, {**body, "stream": True}))).endswith(b"data: [DONE]\n\n")
        await relay.shutdown()
    whole, streamed = relay.ledger.rows()
    prompt = prompt_tokens(body)
    assert (whole.prompt_tokens, whole.completion_tokens, whole.estimated) == (prompt, 4, True)
    assert (streamed.prompt_tokens, streamed.completion_tokens, streamed.estimated) == (prompt, 3, True)
    assert whole.cost_usd == D(prompt * 1 + 4 * 2) / 10**6
