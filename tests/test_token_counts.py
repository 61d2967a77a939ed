"""Token counts that cost no upstream call: the Responses ``input_tokens`` endpoint (the openai
SDK's ``client.responses.input_tokens.count``), with a stored conversation too."""

from __future__ import annotations

import openai
import pytest
from starlette.applications import Starlette

from asgi_ai_relay import Relay, RelayMiddleware
from asgi_ai_relay.tokens import prompt_tokens
from tests.live import LiveServer
from tests.test_formats_e2e import config


@pytest.fixture
def relay(upstream):
    return Relay(config(upstream))


@pytest.fixture
def gpt(relay):
    with LiveServer(RelayMiddleware(Starlette(), relay=relay)) as live:
        yield openai.OpenAI(base_url=f"{live.url}/ai/v1", api_key="client-key", max_retries=0)


@pytest.mark.parametrize("provider", ["oa", "an", "ge"])
def test_responses_input_tokens_counted_by_the_relay(gpt, upstream, relay, provider):
    tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    raw = gpt.responses.input_tokens.with_raw_response.count(model=f"m-{provider}", input="Weather in Paris", instructions="Be brief.", tools=tools)
    counted = raw.parse()
    assert raw.headers["x-relay-token-count"] == "estimate" and counted.object == "response.input_tokens"
    expected = prompt_tokens({"input": [{"type": "message", "role": "user", "content": "Weather in Paris"}], "instructions": "Be brief.", "tools": tools})
    assert counted.input_tokens == expected > prompt_tokens({"input": "Weather in Paris"})
    assert upstream.requests == []
    (row,) = relay.ledger.rows()
    assert (row.endpoint, row.status, row.cost_usd, row.prompt_tokens) == ("responses.input_tokens", 200, 0, 0)


def test_input_tokens_include_the_stored_conversation(gpt, upstream):
    first = gpt.responses.create(model="m-oa", input="Remember the word relay")
    alone = gpt.responses.input_tokens.count(model="m-oa", input="And now?").input_tokens
    chained = gpt.responses.input_tokens.count(model="m-oa", input="And now?", previous_response_id=first.id).input_tokens
    assert chained > alone
    with pytest.raises(openai.NotFoundError):
        gpt.responses.input_tokens.count(model="m-oa", input="x", previous_response_id="resp_nope")
    with pytest.raises(openai.NotFoundError):
        gpt.responses.input_tokens.count(model="nope", input="x")
    assert len(upstream.requests) == 1
