"""Every billable token class priced apart, per provider format, whole and streamed: the fake
upstream reports each usage shape and the ledger row's columns and cost are checked against
costs worked by hand, as Decimals."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import orjson
import pytest

from asgi_ai_relay import RelayRequest
from asgi_ai_relay.config import Price, load_config
from asgi_ai_relay.pricing import cost_at, price_for
from asgi_ai_relay.types import Usage
from tests.cost_shapes import an_stream, an_whole, ge_stream, ge_whole, oa_stream, oa_whole
from tests.relay_calls import pieces, relays  # noqa: F401 - fixture

D = Decimal
UPSTREAM = {"oa": "gpt-4o-mini", "an": "claude-sonnet-4-5", "ge": "gemini-2.0-flash"}
#: USD per million tokens (web_search: USD per search). Long prompts above 200k tokens move the
#: whole request to the long-context price; flex and batch bill half, priority its own rates.
PRICE = {
    "input": "3", "output": "15", "cached_input": "0.30", "cache_write": "3.75", "cache_write_1h": "6",
    "audio_input": "10", "image_input": "5", "web_search": "0.01",
    "long_context": {"above": 200_000, "input": "6", "output": "22.5", "cached_input": "0.6", "cache_write": "7.5",
                     "cache_write_1h": "12"},
    "tiers": {"flex": {"multiplier": "0.5"}, "batch": {"multiplier": "0.5"}, "priority": {"input": "5", "output": "25"}},
}


def relay_config(upstream, ledger="memory://", **extra):
    base = upstream.url
    return {
        "storage": {"ledger": ledger},
        "providers": {
            "oa": {"kind": "openai_compatible", "base_url": f"{base}/v1", "api_key": "env:TEST_UPSTREAM_KEY"},
            "an": {"kind": "anthropic", "base_url": f"{base}/v1", "api_key": "env:TEST_UPSTREAM_KEY"},
            "ge": {"kind": "gemini", "base_url": f"{base}/v1beta", "api_key": "env:TEST_UPSTREAM_KEY"},
        },
        "models": {f"m-{p}": {"provider": p, "upstream": name, "price": PRICE} for p, name in UPSTREAM.items()},
        "retry": {"max_attempts": 1},
        **extra,
    }


async def post(relay, path, body):
    return await relay.handle(RelayRequest("POST", path, {"content-type": "application/json"}, orjson.dumps(body)))


async def ask(relay, endpoint, model, stream=False):
    if endpoint == "messages":
        body = {"model": model, "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
        response = await post(relay, "/v1/messages", body)
    else:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
        response = await post(relay, "/v1/chat/completions", body)
    assert response.status == 200, response.body
    return b"".join(await pieces(response)) if stream else response.body


OA_REASONING = {"prompt_tokens": 2000, "completion_tokens": 400, "total_tokens": 2400,
                "prompt_tokens_details": {"cached_tokens": 1500, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 300}}
OA_AUDIO = {"prompt_tokens": 1000, "completion_tokens": 100, "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 200}}
OA_LONG = {"prompt_tokens": 250_000, "completion_tokens": 1000, "prompt_tokens_details": {"cached_tokens": 50_000}}
DEEPSEEK = {"prompt_tokens": 1000, "completion_tokens": 10, "prompt_cache_hit_tokens": 800, "prompt_cache_miss_tokens": 200}
AN_FULL = {"input_tokens": 100, "output_tokens": 500, "cache_read_input_tokens": 2000, "cache_creation_input_tokens": 3000,
           "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000},
           "server_tool_use": {"web_search_requests": 3}}
AN_START = {k: v for k, v in AN_FULL.items() if k != "server_tool_use"} | {"output_tokens": 1}
AN_DELTA = {"output_tokens": 500, "server_tool_use": {"web_search_requests": 3}}
GE_AUDIO = {"promptTokenCount": 3000, "cachedContentTokenCount": 1000, "candidatesTokenCount": 200, "thoughtsTokenCount": 300,
            "totalTokenCount": 3500, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 2500}, {"modality": "AUDIO", "tokenCount": 500}]}
GE_IMAGE = {"promptTokenCount": 2000, "candidatesTokenCount": 100,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 1000}, {"modality": "IMAGE", "tokenCount": 1000}]}

# name, endpoint, model, stream, what the upstream sends, the row's counts
#   (prompt, completion, cached, 5m writes, 1h writes, reasoning, audio, image, searches), tier, rule, USD by hand
CASES = [
    # (500 * 3 + 1500 * 0.30 + 400 * 15) / 1e6; reasoning is inside the 400 output tokens
    ("openai cached+reasoning", "chat", "m-oa", False, oa_whole(OA_REASONING), (2000, 400, 1500, 0, 0, 300, 0, 0, 0), None, None, "0.00795"),
    ("openai stream, usage-only chunk", "chat", "m-oa", True, oa_stream(OA_REASONING), (2000, 400, 1500, 0, 0, 300, 0, 0, 0), None, None, "0.00795"),
    ("openai stream, usage beside choices", "chat", "m-oa", True, oa_stream(OA_REASONING, with_choices=True),
     (2000, 400, 1500, 0, 0, 300, 0, 0, 0), None, None, "0.00795"),
    # the flex tier the answer says it ran at: half of 0.00795
    ("openai flex", "chat", "m-oa", False, oa_whole(OA_REASONING, "flex"), (2000, 400, 1500, 0, 0, 300, 0, 0, 0), "flex", "tier:flex", "0.003975"),
    ("openai flex streamed", "chat", "m-oa", True, oa_stream(OA_REASONING, "flex"), (2000, 400, 1500, 0, 0, 300, 0, 0, 0), "flex", "tier:flex", "0.003975"),
    # priority: (800 * 5 + 200 * 10 audio + 100 * 25) / 1e6
    ("openai audio, priority", "chat", "m-oa", False, oa_whole(OA_AUDIO, "priority"), (1000, 100, 0, 0, 0, 0, 200, 0, 0), "priority", "tier:priority", "0.0085"),
    # "default" is no tier of its own: the flat rate, (800 * 3 + 200 * 10 + 100 * 15) / 1e6
    ("openai default tier", "chat", "m-oa", False, oa_whole(OA_AUDIO, "default"), (1000, 100, 0, 0, 0, 0, 200, 0, 0), "default", None, "0.0059"),
    # above 200k: (200000 * 6 + 50000 * 0.6 + 1000 * 22.5) / 1e6 for the whole request
    ("openai long context", "chat", "m-oa", False, oa_whole(OA_LONG), (250_000, 1000, 50_000, 0, 0, 0, 0, 0, 0), None, "long_context", "1.2525"),
    ("openai long context streamed", "chat", "m-oa", True, oa_stream(OA_LONG), (250_000, 1000, 50_000, 0, 0, 0, 0, 0, 0), None, "long_context", "1.2525"),
    # DeepSeek's cache hits: (200 * 3 + 800 * 0.3 + 10 * 15) / 1e6
    ("deepseek cache hits", "chat", "m-oa", False, oa_whole(DEEPSEEK), (1000, 10, 800, 0, 0, 0, 0, 0, 0), None, None, "0.00099"),
    # (100 * 3 + 2000 * 0.3 + 1000 * 3.75 + 2000 * 6 + 500 * 15) / 1e6 + 3 * 0.01
    ("anthropic every class", "messages", "m-an", False, an_whole(AN_FULL), (5100, 500, 2000, 1000, 2000, 0, 0, 0, 3), None, None, "0.05415"),
    ("anthropic every class, to an openai caller", "chat", "m-an", False, an_whole(AN_FULL), (5100, 500, 2000, 1000, 2000, 0, 0, 0, 3), None, None, "0.05415"),
    ("anthropic split across start and delta", "messages", "m-an", True, an_stream(AN_START, AN_DELTA),
     (5100, 500, 2000, 1000, 2000, 0, 0, 0, 3), None, None, "0.05415"),
    ("anthropic split, to an openai caller", "chat", "m-an", True, an_stream(AN_START, AN_DELTA),
     (5100, 500, 2000, 1000, 2000, 0, 0, 0, 3), None, None, "0.05415"),
    # the delta repeats the input counts (cumulative): counted once
    ("anthropic delta repeating the input", "messages", "m-an", True, an_stream(AN_START, {**AN_FULL, "output_tokens": 500}),
     (5100, 500, 2000, 1000, 2000, 0, 0, 0, 3), None, None, "0.05415"),
    # the delta's larger input (server tool results) is authoritative: 300 more input tokens at 3
    ("anthropic delta with more input", "messages", "m-an", True, an_stream(AN_START, {**AN_DELTA, "input_tokens": 400}),
     (5400, 500, 2000, 1000, 2000, 0, 0, 0, 3), None, None, "0.05505"),
    # batch: half of (1000 * 3 + 1000 * 15) / 1e6
    ("anthropic batch tier", "messages", "m-an", False, an_whole({"input_tokens": 1000, "output_tokens": 1000, "service_tier": "batch"}),
     (1000, 1000, 0, 0, 0, 0, 0, 0, 0), "batch", "tier:batch", "0.009"),
    # 210000 prompt tokens > 200k: (150000 * 6 + 60000 * 0.6 + 2000 * 22.5) / 1e6
    ("anthropic long context", "messages", "m-an", False,
     an_whole({"input_tokens": 150_000, "cache_read_input_tokens": 60_000, "output_tokens": 2000}),
     (210_000, 2000, 60_000, 0, 0, 0, 0, 0, 0), None, "long_context", "0.981"),
    # (1500 * 3 + 1000 * 0.3 + 500 * 10 audio + (200 + 300 thinking) * 15) / 1e6
    ("gemini cache+thoughts+audio", "chat", "m-ge", False, ge_whole(GE_AUDIO), (3000, 500, 1000, 0, 0, 300, 500, 0, 0), None, None, "0.0173"),
    ("gemini cache+thoughts+audio streamed", "chat", "m-ge", True, ge_stream(GE_AUDIO), (3000, 500, 1000, 0, 0, 300, 500, 0, 0), None, None, "0.0173"),
    # (1000 * 3 + 1000 * 5 image + 100 * 15) / 1e6
    ("gemini image input", "chat", "m-ge", False, ge_whole(GE_IMAGE), (2000, 100, 0, 0, 0, 0, 0, 1000, 0), None, None, "0.0095"),
]
COLUMNS = ("prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens",
           "reasoning_tokens", "audio_input_tokens", "image_input_tokens", "web_search_requests")


@pytest.mark.parametrize(("name", "endpoint", "model", "stream", "behaviour", "counts", "tier", "rule", "usd"), CASES,
                         ids=[c[0] for c in CASES])
async def test_each_usage_shape_is_priced_by_hand(upstream, relays, name, endpoint, model, stream, behaviour, counts, tier, rule, usd):
    relay = relays(relay_config(upstream))
    upstream.script(behaviour)
    await ask(relay, endpoint, model, stream)
    (row,) = relay.ledger.rows()
    assert (row.status, row.stream, row.estimated) == (200, stream, False)
    assert tuple(getattr(row, c) for c in COLUMNS) == counts
    assert (row.service_tier, row.price_rule) == (tier, rule)
    assert row.cost_usd == D(usd)


async def test_the_usage_only_chunk_reaches_only_callers_that_asked(upstream, relays):
    relay = relays(relay_config(upstream))
    upstream.script(oa_stream(OA_REASONING), oa_stream(OA_REASONING, with_choices=True))
    silent = await ask(relay, "chat", "m-oa", stream=True)
    beside = await ask(relay, "chat", "m-oa", stream=True)
    assert b'"usage"' not in silent  # the caller did not ask for it: left out, still recorded
    assert b'"usage"' in beside  # it rode on a chunk with choices: the caller gets the chunk
    assert [r.cost_usd for r in relay.ledger.rows()] == [D("0.00795")] * 2


# price rules on their own: (prompt, completion, cached, writes, 1h writes, reasoning, audio, image,
# searches, tier) -> USD, worked by hand at PRICE
RULES = [
    ((1000, 0, 0, 0, 0, 0, 0, 0, 0, None), "0.003"),  # 1000 * 3
    ((1000, 0, 0, 1000, 400, 0, 0, 0, 0, None), "0.00465"),  # 600 * 3.75 + 400 * 6
    ((200_000, 0, 0, 0, 0, 0, 0, 0, 0, None), "0.6"),  # exactly at the threshold: not above it
    ((200_001, 0, 0, 0, 0, 0, 0, 0, 0, None), "1.200006"),  # one more: all 200001 at 6
    ((200_001, 0, 0, 0, 0, 0, 0, 0, 0, "flex"), "0.600003"),  # the tier's long-context price, halved
    ((10, 10, 0, 0, 0, 10, 0, 0, 0, None), "0.00018"),  # reasoning is output: 10 * 3 + 10 * 15
    ((0, 0, 0, 0, 0, 0, 0, 0, 7, None), "0.07"),  # searches are per call
    ((100, 0, 0, 0, 0, 0, 0, 0, 0, "scale"), "0.0003"),  # a tier the price does not name: the flat rate
]


@pytest.mark.parametrize(("counts", "usd"), RULES)
def test_price_rules_by_hand(counts, usd):
    *numbers, tier = counts
    prompt, completion, cached, written, hour, reasoning, audio, image, searches = numbers
    usage = Usage.reported(prompt, completion, cached, written, write_1h=hour, reasoning=reasoning, audio=audio,
                           image=image, web_search=searches, service_tier=tier)
    price = load_config({"models": {"m": {"provider": "mock", "price": PRICE}}}).models["m"].price
    assert cost_at(price, usage) == D(usd)
    assert cost_at(price, usage, D("0.5")) == D(usd) * D("0.5")


def test_parts_stay_within_their_totals():
    usage = Usage.reported(100, 10, 60, 80, write_1h=99, reasoning=50, audio=99, image=99, service_tier="FLEX")
    assert (usage.cached_tokens, usage.cache_creation_tokens, usage.cache_write_1h_tokens) == (60, 40, 40)
    assert (usage.reasoning_tokens, usage.audio_input_tokens, usage.image_input_tokens, usage.service_tier) == (10, 0, 0, "flex")


def test_the_catalog_states_its_rules_and_when_its_prices_were_checked():
    from asgi_ai_relay.config.catalog import PRICES_CHECKED

    config = load_config({})
    assert set(PRICES_CHECKED) == set(config.models)
    sonnet = config.models["claude-sonnet-4.5"].price
    assert (sonnet.cache_write, sonnet.cache_write_1h, sonnet.web_search, sonnet.long_context_above) == (D("3.75"), D("6.00"), D("0.01"), 200_000)
    long_usage = Usage.reported(250_000, 1000)
    assert price_for(sonnet, long_usage)[1] == "long_context"
    assert cost_at(sonnet, long_usage) == (250_000 * D(6) + 1000 * D("22.50")) / 10**6
    gpt = config.models["gpt-4.1"].price
    assert gpt.tiers["flex"] == replace(gpt.scaled(D("0.5")), tiers={})


@pytest.mark.parametrize(("price", "message"), [
    ({"long_context": {"input": 6}}, "models.m.price.long_context.above: required"),
    ({"tiers": {"flex": {"colour": 1}}}, "models.m.price.tiers.flex.colour: unknown key"),
    ({"web_search": -1}, "models.m.price.web_search: must be a finite number >= 0"),
])
def test_price_rules_are_validated(price, message):
    from asgi_ai_relay.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=message):
        load_config({"models": {"m": {"provider": "mock", "price": price}}})


def test_a_tier_inherits_what_it_does_not_name():
    price = load_config({"models": {"m": {"provider": "mock", "price": PRICE}}}).models["m"].price
    priority = price.tiers["priority"]
    assert (priority.input, priority.output, priority.cached_input, priority.audio_input) == (D(5), D(25), D("0.30"), D(10))
    assert priority.long_context is not None and priority.long_context.input == D(6)
    assert Price().tiers == {}


async def test_a_cache_hit_saves_what_the_answer_cost(upstream, relays):
    """A hit records the classes and tier of the answer it replays: its saving is that answer's
    cost (flex, with reasoning), not the flat-rate price of its three main counts."""
    relay = relays(relay_config(upstream))
    upstream.script(oa_whole(OA_REASONING, "flex"))
    body = {"model": "m-oa", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
    for _ in range(2):
        assert (await post(relay, "/v1/chat/completions", body)).status == 200
    miss, hit = relay.ledger.rows()
    assert (miss.cost_usd, hit.cost_usd, hit.cache_saved_usd) == (D("0.003975"), 0, D("0.003975"))
    assert (hit.reasoning_tokens, hit.service_tier, hit.price_rule) == (300, "flex", "tier:flex")


READERS = [
    # Anthropic with only the TTL split: the writes are its sum
    ("anthropic", {"input_tokens": 10, "output_tokens": 1, "cache_creation": {"ephemeral_5m_input_tokens": 30, "ephemeral_1h_input_tokens": 20}},
     Usage(60, 1, 0, 50, cache_write_1h_tokens=20)),
    # Anthropic's tier and searches; a web_fetch count is not a search
    ("anthropic", {"input_tokens": 5, "output_tokens": 2, "service_tier": "Priority",
                   "server_tool_use": {"web_search_requests": 2, "web_fetch_requests": 4}},
     Usage(5, 2, web_search_requests=2, service_tier="priority")),
    # OpenAI: nothing but the totals; details null
    ("openai", {"prompt_tokens": 7, "completion_tokens": 3, "prompt_tokens_details": None, "completion_tokens_details": None},
     Usage(7, 3)),
    # Gemini: audio in a tool-use prompt's details too
    ("gemini", {"promptTokenCount": 100, "toolUsePromptTokenCount": 50, "candidatesTokenCount": 5,
                "promptTokensDetails": [{"modality": "AUDIO", "tokenCount": 40}],
                "toolUsePromptTokensDetails": [{"modality": "AUDIO", "tokenCount": 10}, {"modality": "TEXT", "tokenCount": 40}]},
     Usage(150, 5, audio_input_tokens=50)),
    # hostile numbers stay within their totals
    ("openai", {"prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 4, "audio_tokens": 1e30},
                "completion_tokens_details": {"reasoning_tokens": -3}},
     Usage(10, 2, 4, audio_input_tokens=6)),
]


@pytest.mark.parametrize(("fmt", "raw", "expected"), READERS)
def test_usage_readers_table(fmt, raw, expected):
    from asgi_ai_relay.protocol import anthropic, gemini, openai

    reader = {"openai": openai.usage_from_body, "anthropic": anthropic.usage_from_body, "gemini": gemini.usage_from_metadata}[fmt]
    assert reader(raw) == expected
