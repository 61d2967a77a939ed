"""The usage check: a provider that reports far more (or fewer) tokens than the traffic it
carried is flagged in the ledger and counted in the metrics; an honest one is not."""

from __future__ import annotations

import pytest

from tests.fake_upstream import Fault, plan_reply
from tests.relay_calls import get, pieces, relays  # noqa: F401 - fixture
from tests.test_cost_truth import post, relay_config

#: About 300 tokens of prompt, as the relay counts it and as the fake provider does (words + 3).
PROMPT = "abc " * 300


async def ask(relay, model, stream=False, **body):
    response = await post(relay, "/v1/chat/completions",
                          {"model": model, "messages": [{"role": "user", "content": PROMPT}], "stream": stream, **body})
    assert response.status == 200, response.body
    if stream:
        await pieces(response)


def honest_counts(upstream):
    request = upstream.last_request
    return plan_reply(request.json, request.api)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("model", ["m-oa", "m-an", "m-ge"])
async def test_an_honest_provider_is_not_flagged(upstream, relays, model, stream):
    relay = relays(relay_config(upstream))
    await ask(relay, model, stream)
    (row,) = relay.ledger.rows()
    plan = honest_counts(upstream)
    assert (row.prompt_tokens, row.completion_tokens) == (plan.prompt_tokens, plan.completion_tokens)
    assert row.usage_flag is None
    assert abs(row.counted_prompt_tokens - row.prompt_tokens) < 10


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("model", ["m-oa", "m-an", "m-ge"])
async def test_three_times_the_prompt_is_flagged_and_counted(upstream, relays, model, stream):
    relay = relays(relay_config(upstream))
    await ask(relay, model, stream)
    honest = honest_counts(upstream).prompt_tokens
    upstream.script(Fault.usage(prompt_tokens=3 * honest))
    await ask(relay, model, stream)
    first, inflated = relay.ledger.rows()
    assert first.usage_flag is None
    assert (inflated.prompt_tokens, inflated.usage_flag) == (3 * honest, "prompt")
    assert inflated.counted_prompt_tokens == first.counted_prompt_tokens
    provider = model.removeprefix("m-")
    metrics = (await get(relay, "/metrics")).body.decode()
    assert f'relay_usage_flagged_total{{flag="prompt",model="{model}",provider="{provider}"}} 1.0' in metrics
    report = (await get(relay, "/v1/usage")).body
    assert b'"usage_flagged_rows":1' in report


@pytest.mark.parametrize("model", ["m-oa", "m-an", "m-ge"])
async def test_a_stream_claiming_more_output_than_it_sent_is_flagged(upstream, relays, model):
    relay = relays(relay_config(upstream))
    await ask(relay, model, stream=True)
    words = honest_counts(upstream).completion_tokens
    upstream.script(Fault.usage(completion_tokens=3 * words))
    await ask(relay, model, stream=True)
    honest, padded = relay.ledger.rows()
    assert honest.usage_flag is None
    assert (padded.completion_tokens, padded.usage_flag) == (3 * words, "output")


async def test_the_tolerance_and_the_check_are_configurable(upstream, relays):
    lenient = relays(relay_config(upstream, pricing={"usage_check": {"tolerance": 3}}))
    await ask(lenient, "m-oa")
    upstream.script(Fault.usage(prompt_tokens=3 * honest_counts(upstream).prompt_tokens))
    await ask(lenient, "m-oa")
    assert [r.usage_flag for r in lenient.ledger.rows()] == [None, None]

    off = relays(relay_config(upstream, pricing={"usage_check": {"enabled": False}}))
    upstream.script(Fault.usage(prompt_tokens=10_000))
    await ask(off, "m-oa")
    (row,) = off.ledger.rows()
    assert (row.usage_flag, row.counted_prompt_tokens) == (None, None)


async def test_a_forwarding_relays_own_overhead_can_be_allowed_for(upstream, relays):
    """A relay in front of the provider that adds its own 500-token system prompt: flagged
    until ``overhead`` says so."""
    strict = relays(relay_config(upstream))
    loose = relays(relay_config(upstream, pricing={"usage_check": {"overhead": 500}}))
    for relay in (strict, loose):
        await ask(relay, "m-oa")
        upstream.script(Fault.usage(prompt_tokens=honest_counts(upstream).prompt_tokens + 500))
        await ask(relay, "m-oa")
    assert [r.usage_flag for r in strict.ledger.rows()] == [None, "prompt"]
    assert [r.usage_flag for r in loose.ledger.rows()] == ["prompt", None]


async def test_a_long_stream_is_counted_from_a_sample_and_scaled(upstream, relays):
    """A stream of far more than the check reads (its first 8 KiB, scaled by what was sent):
    an honest one stays unflagged, one claiming twice its output is flagged."""
    from asgi_ai_relay.stages.usage_check import SAMPLE

    relay = relays(relay_config(upstream))
    long_prompt = "abc " * 2000
    body = {"model": "m-oa", "messages": [{"role": "user", "content": long_prompt}], "stream": True}
    sent = b"".join(await pieces(await post(relay, "/v1/chat/completions", body)))
    assert len(sent) > 10 * SAMPLE
    words = honest_counts(upstream).completion_tokens
    upstream.script(Fault.usage(completion_tokens=2 * words))
    await pieces(await post(relay, "/v1/chat/completions", body))
    assert [r.usage_flag for r in relay.ledger.rows()] == [None, "output"]


STREAMS = {
    "chat": ("/v1/chat/completions", {"messages": [{"role": "user", "content": PROMPT}]}),
    "messages": ("/v1/messages", {"max_tokens": 4000, "messages": [{"role": "user", "content": PROMPT}]}),
    "responses": ("/v1/responses", {"input": PROMPT}),
}


@pytest.mark.parametrize("endpoint", list(STREAMS))
@pytest.mark.parametrize("model", ["m-oa", "m-an"])
async def test_the_output_check_reads_each_callers_stream(upstream, relays, endpoint, model):
    """What the caller received is read in its own format: OpenAI chunks, Anthropic events, and
    Responses events (whose text also comes whole in its final events, counted once)."""
    relay = relays(relay_config(upstream))
    path, body = STREAMS[endpoint]
    body = {"model": model, "stream": True, **body}
    for script in (None, 2):
        if script:
            upstream.script(Fault.usage(completion_tokens=script * honest_counts(upstream).completion_tokens))
        response = await post(relay, path, body)
        assert response.status == 200
        await pieces(response)
    assert [r.usage_flag for r in relay.ledger.rows()] == [None, "output"]
