"""Structured output across formats: OpenAI ``response_format`` (``json_schema``, ``json_object``)
and Responses ``text.format`` become a forced tool on Anthropic (its input given back as the
answer's JSON text) and ``responseMimeType`` + ``responseJsonSchema`` on Gemini, instead of a
400. The official openai SDK's own ``parse`` helpers read the answers."""

from __future__ import annotations

import json

import openai
import pytest
from pydantic import BaseModel
from starlette.applications import Starlette

from asgi_ai_relay import Relay, RelayMiddleware
from asgi_ai_relay.protocol.anthropic import OUTPUT_TOOL
from tests.fake_upstream import fake_tool_arguments
from tests.live import LiveServer
from tests.test_formats_e2e import config

PROMPT = "Weather in Paris please"
MESSAGES = [{"role": "user", "content": PROMPT}]
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
          "required": ["city", "days"], "additionalProperties": False}
FORMAT = {"type": "json_schema", "json_schema": {"name": "weather", "schema": SCHEMA, "strict": True}}


class Weather(BaseModel):
    city: str
    days: int


@pytest.fixture
def relay(upstream):
    return Relay(config(upstream))


@pytest.fixture
def gpt(relay):
    with LiveServer(RelayMiddleware(Starlette(), relay=relay)) as live:
        yield openai.OpenAI(base_url=f"{live.url}/ai/v1", api_key="client-key", max_retries=0)


def test_json_schema_to_anthropic_is_a_forced_tool(gpt, upstream, relay):
    completion = gpt.chat.completions.create(model="m-an", messages=MESSAGES, response_format=FORMAT)
    sent = upstream.last_request.json
    assert sent["tools"] == [{"name": OUTPUT_TOOL, "description": sent["tools"][0]["description"], "input_schema": SCHEMA}]
    assert sent["tool_choice"] == {"type": "tool", "name": OUTPUT_TOOL}
    choice = completion.choices[0]
    assert choice.finish_reason == "stop" and not choice.message.tool_calls
    assert json.loads(choice.message.content) == fake_tool_arguments(SCHEMA, PROMPT)
    (row,) = relay.ledger.rows()
    assert row.status == 200 and row.completion_tokens > 0


def test_sdk_parse_helper_reads_the_answer(gpt, upstream):
    completion = gpt.chat.completions.parse(model="m-an", messages=MESSAGES, response_format=Weather)
    assert completion.choices[0].message.parsed == Weather(city=PROMPT, days=1)
    assert upstream.last_request.json["tool_choice"] == {"type": "tool", "name": OUTPUT_TOOL}


def test_streamed_structured_output_from_anthropic(gpt, upstream, relay):
    chunks = list(gpt.chat.completions.create(model="m-an", messages=MESSAGES, response_format=FORMAT, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert json.loads(text) == fake_tool_arguments(SCHEMA, PROMPT)
    assert not any(c.choices[0].delta.tool_calls for c in chunks if c.choices)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert upstream.last_request.stream
    (row,) = relay.ledger.rows()
    assert row.status == 200 and row.stream


def test_json_object_and_responses_text_format_to_anthropic(gpt, upstream):
    loose = gpt.chat.completions.create(model="m-an", messages=MESSAGES, response_format={"type": "json_object"})
    assert upstream.last_request.json["tools"][0]["input_schema"] == {"type": "object"}
    assert json.loads(loose.choices[0].message.content) == {}
    response = gpt.responses.create(model="m-an", input=PROMPT,
                                    text={"format": {"type": "json_schema", "name": "weather", "schema": SCHEMA, "strict": True}})
    assert response.status == "completed" and json.loads(response.output_text) == fake_tool_arguments(SCHEMA, PROMPT)
    parsed = gpt.responses.parse(model="m-an", input=PROMPT, text_format=Weather)
    assert parsed.output_parsed == Weather(city=PROMPT, days=1)


def test_json_schema_to_gemini(gpt, upstream):
    gpt.chat.completions.create(model="m-ge", messages=MESSAGES, response_format=FORMAT)
    config = upstream.last_request.json["generationConfig"]
    assert config == {"responseMimeType": "application/json", "responseJsonSchema": SCHEMA}
    gpt.responses.create(model="m-ge", input=PROMPT, text={"format": {"type": "json_object"}})
    assert upstream.last_request.json["generationConfig"] == {"responseMimeType": "application/json"}


def test_what_anthropic_cannot_take_is_refused(gpt, upstream):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": SCHEMA}}]
    with pytest.raises(openai.BadRequestError) as together:
        gpt.chat.completions.create(model="m-an", messages=MESSAGES, response_format=FORMAT, tools=tools)
    array = {"type": "json_schema", "json_schema": {"name": "list", "schema": {"type": "array", "items": {"type": "string"}}}}
    with pytest.raises(openai.BadRequestError) as rooted:
        gpt.chat.completions.create(model="m-an", messages=MESSAGES, response_format=array)
    for refused in (together, rooted):
        assert refused.value.body["param"] == "response_format" and "'an'" in refused.value.body["message"]
    assert upstream.requests == []
