"""Gemini-format callers, table-driven: Gemini requests -> the hub, hub answers and chunks ->
Gemini answers and events, and what is refused."""

from __future__ import annotations

import orjson
import pytest

from asgi_ai_relay.errors import InvalidRequest
from asgi_ai_relay.protocol import gemini_answer, gemini_inbound
from asgi_ai_relay.protocol.gemini_stream import GeminiEncoder
from asgi_ai_relay.protocol.openai import chunk
from asgi_ai_relay.protocol.sse import SSESplitter
from asgi_ai_relay.types import Usage

PNG = "iVBORw0KGgo="
USER = {"role": "user", "parts": [{"text": "hi"}]}
HUB_USER = {"role": "user", "content": "hi"}
CALL = {"functionCall": {"id": "c1", "name": "weather", "args": {"city": "Paris"}}}
HUB_CALL = {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}


def ge(*contents, **fields):
    return {"contents": list(contents) or [USER], **fields}


def hub(*messages, **params):
    return {"model": "", "messages": list(messages) or [HUB_USER], **params}


# name, Gemini request, hub request it becomes
GEMINI_TO_HUB = [
    ("text", ge(), hub()),
    ("role defaults to user", ge({"parts": [{"text": "hi"}]}), hub()),
    ("system instruction", ge(systemInstruction={"parts": [{"text": "S1"}, {"text": "S2"}]}), hub({"role": "system", "content": "S1S2"}, HUB_USER)),
    ("model turn", ge(USER, {"role": "model", "parts": [{"text": "yo"}]}), hub(HUB_USER, {"role": "assistant", "content": "yo"})),
    ("thought parts dropped", ge({"role": "model", "parts": [{"text": "hmm", "thought": True}, {"text": "yo", "thoughtSignature": "x"}]}),
     hub({"role": "assistant", "content": "yo"})),
    ("image inline", ge({"role": "user", "parts": [{"text": "see"}, {"inlineData": {"mimeType": "image/png", "data": PNG}}]}),
     hub({"role": "user", "content": [{"type": "text", "text": "see"}, {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]})),
    ("audio inline", ge({"role": "user", "parts": [{"inlineData": {"mimeType": "audio/mp3", "data": "AA"}}]}),
     hub({"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AA", "format": "mp3"}}]})),
    ("pdf inline", ge({"role": "user", "parts": [{"inlineData": {"mimeType": "application/pdf", "data": "AA"}}]}),
     hub({"role": "user", "content": [{"type": "file", "file": {"file_data": "data:application/pdf;base64,AA"}}]})),
    ("file uri", ge({"role": "user", "parts": [{"fileData": {"mimeType": "image/png", "fileUri": "https://x/y.png"}}]}),
     hub({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]})),
    ("call and its answer by id", ge(USER, {"role": "model", "parts": [CALL]},
                                      {"role": "user", "parts": [{"functionResponse": {"id": "c1", "name": "weather", "response": {"sky": "clear"}}}]}),
     hub(HUB_USER, {"role": "assistant", "content": None, "tool_calls": [HUB_CALL]}, {"role": "tool", "tool_call_id": "c1", "content": '{"sky":"clear"}'})),
    ("answer matched by name, in order", ge(USER, {"role": "model", "parts": [{"functionCall": {"name": "t", "args": {}}}] * 2},
                                             {"role": "user", "parts": [{"functionResponse": {"name": "t", "response": {"n": 1}}},
                                                                        {"functionResponse": {"name": "t", "response": {"n": 2}}}]}),
     None),
    ("generation config", ge(generationConfig={"temperature": 0.2, "topP": 0.5, "topK": 3, "maxOutputTokens": 7, "stopSequences": ["X"],
                                               "seed": 4, "candidateCount": 1, "thinkingConfig": {"thinkingBudget": 0}}),
     hub(temperature=0.2, top_p=0.5, max_tokens=7, stop=["X"], seed=4, n=1)),
    ("json with schema", ge(generationConfig={"responseMimeType": "application/json", "responseSchema": {"type": "OBJECT", "properties": {"a": {"type": "STRING"}}}}),
     hub(response_format={"type": "json_schema", "json_schema": {"name": "response", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}})),
    ("json without schema", ge(generationConfig={"responseMimeType": "application/json"}), hub(response_format={"type": "json_object"})),
    ("tools and a forced one", ge(tools=[{"functionDeclarations": [{"name": "t", "description": "d", "parametersJsonSchema": {"type": "object"}}]}],
                                  toolConfig={"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["t"]}}),
     hub(tools=[{"type": "function", "function": {"name": "t", "description": "d", "parameters": {"type": "object"}}}],
         tool_choice={"type": "function", "function": {"name": "t"}})),
    ("tool without parameters, mode NONE", ge(tools=[{"functionDeclarations": [{"name": "t"}]}], toolConfig={"functionCallingConfig": {"mode": "NONE"}}),
     hub(tools=[{"type": "function", "function": {"name": "t", "parameters": {"type": "object", "properties": {}}}}], tool_choice="none")),
    ("safety settings dropped", ge(safetySettings=[{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]), hub()),
    ("stream mark", ge(stream=True), hub(stream=True, stream_options={"include_usage": True})),
]


@pytest.mark.parametrize(("name", "body", "expected"), GEMINI_TO_HUB, ids=[r[0] for r in GEMINI_TO_HUB])
def test_gemini_to_hub(name, body, expected):
    gemini_inbound.validate_gemini_request(body)
    out = gemini_inbound.to_chat(body)
    if expected is None:  # calls without ids get fresh ones, answered in order
        calls = out["messages"][1]["tool_calls"]
        assert [m["tool_call_id"] for m in out["messages"][2:]] == [c["id"] for c in calls] and calls[0]["id"] != calls[1]["id"]
        assert [m["content"] for m in out["messages"][2:]] == ['{"n":1}', '{"n":2}']
    else:
        assert out == expected


REFUSED = [
    ("no contents", {"contents": []}, "contents"),
    ("role", ge({"role": "system", "parts": []}), "contents[0].role"),
    ("role not a string", ge({"role": ["user"], "parts": []}), "contents[0].role"),
    ("text not a string", ge({"parts": [{"text": 3}]}), "contents[0].parts[0].text"),
    ("temperature", ge(generationConfig={"temperature": "hot"}), "generationConfig.temperature"),
    ("cached content", ge(cachedContent="cachedContents/1"), "cachedContent"),
]


@pytest.mark.parametrize(("name", "body", "param"), REFUSED, ids=[r[0] for r in REFUSED])
def test_invalid_requests_name_the_field(name, body, param):
    with pytest.raises(InvalidRequest) as info:
        gemini_inbound.validate_gemini_request(body)
    assert info.value.param == param


UNTRANSLATABLE = [
    ("server tool", ge(tools=[{"googleSearch": {}}]), "tools[0]"),
    ("code part", ge({"parts": [{"executableCode": {"code": "1"}}]}), "contents[0].parts[0]"),
    ("orphan answer", ge({"parts": [{"functionResponse": {"name": "t", "response": {}}}]}), "contents[0].parts[0].functionResponse"),
]


@pytest.mark.parametrize(("name", "body", "param"), UNTRANSLATABLE, ids=[r[0] for r in UNTRANSLATABLE])
def test_untranslatable_requests_name_the_field(name, body, param):
    gemini_inbound.validate_gemini_request(body)
    with pytest.raises(InvalidRequest) as info:
        gemini_inbound.to_chat(body)
    assert info.value.param == param and info.value.status_code == 400


def test_completion_becomes_a_gemini_answer():
    completion = {"model": "up", "choices": [{"message": {"role": "assistant", "content": "hello", "tool_calls": [HUB_CALL]}, "finish_reason": "tool_calls"}]}
    answer = gemini_answer.from_completion(completion, Usage(10, 4, cached_tokens=2))
    assert answer["candidates"] == [{"content": {"role": "model", "parts": [{"text": "hello"}, CALL]}, "index": 0, "finishReason": "STOP"}]
    assert answer["usageMetadata"] == {"promptTokenCount": 10, "candidatesTokenCount": 4, "totalTokenCount": 14, "cachedContentTokenCount": 2}
    cut = gemini_answer.from_completion({"choices": [{"message": {"content": "he"}, "finish_reason": "length"}]}, None)
    assert cut["candidates"][0]["finishReason"] == "MAX_TOKENS" and "usageMetadata" not in cut


def events(raw: bytes) -> list[dict]:
    return [orjson.loads(e.data) for e in SSESplitter().feed(raw)]


def test_stream_encoder_text_then_interleaved_calls_whole_at_the_end():
    encoder = GeminiEncoder()
    pieces = [
        chunk("x", 0, "up", {"role": "assistant", "content": ""}),
        chunk("x", 0, "up", {"content": "Hel"}),
        chunk("x", 0, "up", {"content": "lo"}),
        chunk("x", 0, "up", {"tool_calls": [{"index": 0, "id": "a", "function": {"name": "f", "arguments": '{"x":'}}]}),
        chunk("x", 0, "up", {"tool_calls": [{"index": 1, "id": "b", "function": {"name": "g", "arguments": "{}"}}]}),
        chunk("x", 0, "up", {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
        chunk("x", 0, "up", {}, "tool_calls"),
    ]
    raw = b"".join(encoder.encode(p) for p in pieces) + encoder.finish(Usage(5, 3))
    out = events(raw)
    assert [e["candidates"][0]["content"]["parts"] for e in out[:2]] == [[{"text": "Hel"}], [{"text": "lo"}]]
    last = out[-1]
    assert len(out) == 3 and last["candidates"][0]["finishReason"] == "STOP"
    assert last["candidates"][0]["content"]["parts"] == [
        {"functionCall": {"id": "a", "name": "f", "args": {"x": 1}}}, {"functionCall": {"id": "b", "name": "g", "args": {}}}]
    assert last["usageMetadata"]["totalTokenCount"] == 8 and {e["responseId"] for e in out} == {out[0]["responseId"]}


def test_stream_error_event_in_googles_shape():
    from asgi_ai_relay.errors import UpstreamTimeout

    (event,) = events(gemini_answer.stream_error(UpstreamTimeout("slow")))
    assert event == {"error": {"code": 504, "message": "slow", "status": "DEADLINE_EXCEEDED"}}
