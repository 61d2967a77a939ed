"""Responses requests the hub cannot take are a 400 naming the parameter, never a crash."""

from __future__ import annotations

import pytest

from asgi_ai_relay.errors import InvalidRequest
from asgi_ai_relay.protocol.responses import to_chat, validate_responses_request


@pytest.mark.parametrize(("item", "param"), [
    ({"type": "message", "role": "assistant", "content": 1}, "input[0].content"),
    ({"type": "message", "role": ["user"], "content": "x"}, "input[0].role"),
    ({"role": {}, "content": "x"}, "input[0].role"),
    ({"type": "function_call", "name": "f", "arguments": "{}"}, "input[0].call_id"),
    ({"type": "function_call", "call_id": "c", "arguments": "{}"}, "input[0].name"),
    ({"type": "function_call", "call_id": "c", "name": "f", "arguments": {"a": 1}}, "input[0].arguments"),
    ({"type": "function_call_output", "call_id": "c", "output": 7}, "input[0].output"),
    ({"type": "function_call_output", "output": "x"}, "input[0].call_id"),
    ({"type": "message", "role": "user", "content": [{"type": "input_audio"}]}, "input[0].content[0].type"),
    ({"type": "message", "role": "user", "content": [{"type": "input_image", "file_id": "f"}]}, "input[0].content[0].image_url"),
])
def test_items_the_hub_cannot_take_are_400s(item, param):
    body = {"model": "m", "input": [item]}
    with pytest.raises(InvalidRequest) as refused:
        validate_responses_request(body)
        to_chat(body)
    assert refused.value.param == param


@pytest.mark.parametrize("tools", [[{"type": "namespace", "tools": [1]}], [{"type": "function"}], ["x"]])
def test_malformed_tools_are_400s(tools):
    with pytest.raises(InvalidRequest) as refused:
        validate_responses_request({"model": "m", "input": "x", "tools": tools})
    assert refused.value.param.startswith("tools")


@pytest.mark.parametrize("tools", [[{"type": "mcp"}], [{"type": "namespace", "tools": [{"type": "web_search"}]}]])
def test_built_in_tools_pass_validation_and_are_refused_by_the_hub(tools):
    body = {"model": "m", "input": "x", "tools": tools}
    validate_responses_request(body)  # a provider that serves the Responses API takes them
    with pytest.raises(InvalidRequest, match="refused tool types") as refused:
        to_chat(body)
    assert refused.value.param == "tools" and refused.value.code == "unsupported_tool_type"


def test_a_conversation_of_every_item_kind_becomes_chat_messages():
    body = {"model": "m", "instructions": "Be brief.", "input": [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "rules"}]},
        {"role": "user", "content": [{"type": "input_text", "text": "look"}, {"type": "input_image", "image_url": "data:image/png;base64,AA", "detail": "low"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "calling"}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{\"a\":1}"},
        {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "one"},
        {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "two"}]},
    ]}
    validate_responses_request(body)
    assert to_chat(body)["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "rules"}]},
        {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA", "detail": "low"}}]},
        {"role": "assistant", "content": "calling", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}},
            {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
        ]},
        {"role": "tool", "tool_call_id": "c1", "content": "one"},
        {"role": "tool", "tool_call_id": "c2", "content": "two"},
    ]
