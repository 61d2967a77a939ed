"""Request translation, table-driven: one row per feature, each direction."""

from __future__ import annotations

import pytest

from asgi_ai_relay.config import ModelConfig
from asgi_ai_relay.errors import InvalidRequest
from asgi_ai_relay.protocol import anthropic_request, gemini

CLAUDE = ModelConfig("claude", "an", "claude-up", default_max_tokens=1234)
GEM = ModelConfig("gem", "ge", "gemini-up")
PNG = "iVBORw0KGgo="
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}
USER = {"role": "user", "content": "hi"}


def oa(*messages, **params):
    return {"model": "alias", "messages": list(messages) or [USER], **params}


def an(*messages, **params):
    return {"model": "claude-up", "max_tokens": params.pop("max_tokens", 1234), "messages": list(messages), **params}


AN_USER = {"role": "user", "content": [{"type": "text", "text": "hi"}]}
CALL = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}
CALL2 = {"id": "call_2", "type": "function", "function": {"name": "time", "arguments": "{}"}}

# name, OpenAI request, Anthropic request it becomes
OPENAI_TO_ANTHROPIC = [
    ("plain text, default max_tokens", oa(), an(AN_USER)),
    ("system and developer -> system", oa({"role": "system", "content": "S1"}, {"role": "developer", "content": "S2"}, USER), an(AN_USER, system="S1\n\nS2")),
    ("mid-conversation system joins system", oa(USER, {"role": "system", "content": "late"}), an(AN_USER, system="late")),
    ("max_completion_tokens wins", oa(max_completion_tokens=9, max_tokens=50), an(AN_USER, max_tokens=9)),
    ("temperature, top_p", oa(temperature=0.5, top_p=0.9), an(AN_USER, temperature=0.5, top_p=0.9)),
    ("stop string", oa(stop="END"), an(AN_USER, stop_sequences=["END"])),
    ("stop list", oa(stop=["a", "b"]), an(AN_USER, stop_sequences=["a", "b"])),
    ("user -> metadata.user_id", oa(user="u-1"), an(AN_USER, metadata={"user_id": "u-1"})),
    ("stream", oa(stream=True, stream_options={"include_usage": True}), an(AN_USER, stream=True)),
    (
        "image base64 and url",
        oa({"role": "user", "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            {"type": "image_url", "image_url": {"url": "https://x.test/cat.jpg"}},
        ]}),
        an({"role": "user", "content": [
            {"type": "text", "text": "look"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
            {"type": "image", "source": {"type": "url", "url": "https://x.test/cat.jpg"}},
        ]}),
    ),
    (
        "tools and forced tool_choice",
        oa(tools=[{"type": "function", "function": {"name": "weather", "description": "W", "parameters": SCHEMA}}],
           tool_choice={"type": "function", "function": {"name": "weather"}}),
        an(AN_USER, tools=[{"name": "weather", "input_schema": SCHEMA, "description": "W"}], tool_choice={"type": "tool", "name": "weather"}),
    ),
    (
        "required + no parallel",
        oa(tools=[{"type": "function", "function": {"name": "t"}}], tool_choice="required", parallel_tool_calls=False),
        an(AN_USER, tools=[{"name": "t", "input_schema": {"type": "object"}}], tool_choice={"type": "any", "disable_parallel_tool_use": True}),
    ),
    ("tool_choice none", oa(tools=[{"type": "function", "function": {"name": "t"}}], tool_choice="none"),
     an(AN_USER, tools=[{"name": "t", "input_schema": {"type": "object"}}], tool_choice={"type": "none"})),
    (
        "several tool calls and their results in one turn",
        oa(USER, {"role": "assistant", "content": "checking", "tool_calls": [CALL, CALL2]},
           {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
           {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "noon"}]},
           {"role": "user", "content": "thanks"}),
        an(AN_USER,
           {"role": "assistant", "content": [
               {"type": "text", "text": "checking"},
               {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
               {"type": "tool_use", "id": "call_2", "name": "time", "input": {}},
           ]},
           {"role": "user", "content": [
               {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
               {"type": "tool_result", "tool_use_id": "call_2", "content": "noon"},
               {"type": "text", "text": "thanks"},
           ]}),
    ),
    ("unknown and dropped params", oa(seed=1, presence_penalty=0.1, reasoning_effort="low", custom={"x": 1}), an(AN_USER)),
]


@pytest.mark.parametrize(("name", "body", "expected"), OPENAI_TO_ANTHROPIC, ids=[r[0] for r in OPENAI_TO_ANTHROPIC])
def test_openai_to_anthropic(name, body, expected):
    assert anthropic_request.from_openai(body, CLAUDE, stream=bool(body.get("stream"))) == expected


# name, Anthropic request, OpenAI (hub) request it becomes
def hub(*messages, **params):
    return {"model": "alias", "messages": list(messages), **params}


ANTHROPIC_TO_OPENAI = [
    ("string content", {"model": "alias", "max_tokens": 5, "messages": [USER]}, hub(USER, max_tokens=5)),
    ("system blocks", {"model": "alias", "system": [{"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "B"}], "messages": [USER]},
     hub({"role": "system", "content": "A\n\nB"}, USER)),
    ("mid-conversation system turn stays in place", {"model": "alias", "messages": [USER, {"role": "system", "content": "note"}, USER]},
     hub(USER, {"role": "system", "content": "note"}, USER)),
    ("params", {"model": "alias", "messages": [USER], "temperature": 0.3, "top_p": 0.8, "top_k": 5, "stop_sequences": ["X"], "metadata": {"user_id": "u"}, "stream": True},
     hub(USER, temperature=0.3, top_p=0.8, stop=["X"], user="u", stream=True)),
    (
        "dropped: thinking, cache_control, output_config, defer_loading",
        {"model": "alias", "messages": [USER], "thinking": {"type": "enabled", "budget_tokens": 100}, "output_config": {"effort": "low"},
         "tools": [{"name": "t", "input_schema": SCHEMA, "defer_loading": True, "cache_control": {"type": "ephemeral"}}]},
        hub(USER, tools=[{"type": "function", "function": {"name": "t", "parameters": SCHEMA}}]),
    ),
    (
        "tool_choice any, no parallel",
        {"model": "alias", "messages": [USER], "tools": [{"name": "t"}], "tool_choice": {"type": "any", "disable_parallel_tool_use": True}},
        hub(USER, tools=[{"type": "function", "function": {"name": "t", "parameters": {"type": "object"}}}], tool_choice="required", parallel_tool_calls=False),
    ),
    ("tool_choice tool", {"model": "alias", "messages": [USER], "tools": [{"name": "t", "input_schema": SCHEMA}], "tool_choice": {"type": "tool", "name": "t"}},
     hub(USER, tools=[{"type": "function", "function": {"name": "t", "parameters": SCHEMA}}], tool_choice={"type": "function", "function": {"name": "t"}})),
    (
        "tool use, thinking dropped, results with image",
        {"model": "alias", "messages": [
            USER,
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "s"},
                {"type": "text", "text": "ok"},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "time", "input": {}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny", "is_error": False},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": [
                    {"type": "text", "text": "noon"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                ]},
            ]},
        ]},
        hub(
            USER,
            {"role": "assistant", "content": "ok", "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}},
                {"id": "toolu_2", "type": "function", "function": {"name": "time", "arguments": "{}"}},
            ]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": "noon"},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]},
        ),
    ),
    ("image url", {"model": "alias", "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}}]}]},
     hub({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}]})),
]


@pytest.mark.parametrize(("name", "body", "expected"), ANTHROPIC_TO_OPENAI, ids=[r[0] for r in ANTHROPIC_TO_OPENAI])
def test_anthropic_to_openai(name, body, expected):
    assert anthropic_request.to_openai(body, "up", "openai") == expected


GEM_USER = {"role": "user", "parts": [{"text": "hi"}]}

# name, OpenAI request, Gemini body it becomes
OPENAI_TO_GEMINI = [
    ("plain", oa(), {"contents": [GEM_USER]}),
    ("system -> systemInstruction", oa({"role": "system", "content": "S"}, USER), {"contents": [GEM_USER], "systemInstruction": {"parts": [{"text": "S"}]}}),
    ("generation config", oa(max_tokens=7, temperature=0.2, top_p=0.5, stop="Z", seed=3),
     {"contents": [GEM_USER], "generationConfig": {"temperature": 0.2, "topP": 0.5, "seed": 3, "maxOutputTokens": 7, "stopSequences": ["Z"]}}),
    ("json schema", oa(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}}),
     {"contents": [GEM_USER], "generationConfig": {"responseMimeType": "application/json", "responseJsonSchema": SCHEMA}}),
    ("images", oa({"role": "user", "content": [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}, {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}]}),
     {"contents": [{"role": "user", "parts": [{"inlineData": {"mimeType": "image/png", "data": PNG}}, {"fileData": {"mimeType": "image/png", "fileUri": "https://x.test/a.png"}}]}]}),
    (
        "tools, choice, calls and results",
        oa(USER, {"role": "assistant", "content": None, "tool_calls": [CALL, CALL2]},
           {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
           {"role": "tool", "tool_call_id": "call_2", "content": '{"hour": 12}'},
           tools=[{"type": "function", "function": {"name": "weather", "description": "W", "parameters": SCHEMA}}],
           tool_choice="required"),
        {"contents": [
            GEM_USER,
            {"role": "model", "parts": [{"functionCall": {"name": "weather", "args": {"city": "Paris"}}}, {"functionCall": {"name": "time", "args": {}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "weather", "response": {"result": "sunny"}}}, {"functionResponse": {"name": "time", "response": {"hour": 12}}}]},
        ],
         "tools": [{"functionDeclarations": [{"name": "weather", "description": "W", "parametersJsonSchema": SCHEMA}]}],
         "toolConfig": {"functionCallingConfig": {"mode": "ANY"}}},
    ),
    ("forced tool", oa(tools=[{"type": "function", "function": {"name": "t"}}], tool_choice={"type": "function", "function": {"name": "t"}}),
     {"contents": [GEM_USER], "tools": [{"functionDeclarations": [{"name": "t"}]}], "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["t"]}}}),
]


@pytest.mark.parametrize(("name", "body", "expected"), OPENAI_TO_GEMINI, ids=[r[0] for r in OPENAI_TO_GEMINI])
def test_openai_to_gemini(name, body, expected):
    assert gemini.from_openai(body, GEM, stream=False) == expected


# name, translate function, body, parameter named in the 400
REFUSED = [
    ("n to anthropic", lambda b: anthropic_request.from_openai(b, CLAUDE, False), oa(n=2), "n"),
    ("n to gemini", lambda b: gemini.from_openai(b, GEM, False), oa(n=3), "n"),
    ("logprobs to anthropic", lambda b: anthropic_request.from_openai(b, CLAUDE, False), oa(logprobs=True), "logprobs"),
    ("json mode with tools to anthropic", lambda b: anthropic_request.from_openai(b, CLAUDE, False),
     oa(response_format={"type": "json_object"}, tools=[{"type": "function", "function": {"name": "t"}}]), "response_format"),
    ("temperature 1.5 to anthropic", lambda b: anthropic_request.from_openai(b, CLAUDE, False), oa(temperature=1.5), "temperature"),
    ("audio to anthropic", lambda b: anthropic_request.from_openai(b, CLAUDE, False),
     oa({"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}]}), "messages[0].content[0].type"),
    ("custom tool to gemini", lambda b: gemini.from_openai(b, GEM, False), oa(tools=[{"type": "custom", "custom": {"name": "x"}}]), "tools[0]"),
    ("orphan tool result to gemini", lambda b: gemini.from_openai(b, GEM, False), oa({"role": "tool", "tool_call_id": "nope", "content": "x"}), "messages[0].tool_call_id"),
    ("server tool from anthropic", lambda b: anthropic_request.to_openai(b, "up", "openai"),
     {"model": "m", "messages": [USER], "tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0.type"),
    ("document url from anthropic", lambda b: anthropic_request.to_openai(b, "up", "openai"),
     {"model": "m", "messages": [{"role": "user", "content": [{"type": "document", "source": {"type": "url", "url": "https://x"}}]}]}, "messages.0.content.0.type"),
]


@pytest.mark.parametrize(("name", "translate", "body", "param"), REFUSED, ids=[r[0] for r in REFUSED])
def test_untranslatable_requests_name_parameter_and_provider(name, translate, body, param):
    with pytest.raises(InvalidRequest) as info:
        translate(body)
    assert info.value.param == param and info.value.status_code == 400
    assert repr(param) in info.value.message or f"'{param}'" in info.value.message
    assert any(p in info.value.message for p in ("'an'", "'ge'", "'up'"))
