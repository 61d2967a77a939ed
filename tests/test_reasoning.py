"""Reasoning text from OpenAI-compatible providers (``reasoning_content``, as DeepSeek, vLLM and
SGLang send it) reaches Responses callers as a ``reasoning`` item, whole and streamed (the openai
SDK's stream helper assembles it), and Gemini callers as a ``thought`` part."""

from __future__ import annotations

import httpx
import openai
import orjson
import pytest
from starlette.applications import Starlette

from asgi_ai_relay import Relay, RelayMiddleware
from tests.fake_upstream import Fault
from tests.live import LiveServer
from tests.test_formats_e2e import config

COMPLETION = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "deepseek-reasoner",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "reasoning_content": "The user greets; greet back.", "content": "Hello!"}}],
    "usage": {"prompt_tokens": 7, "completion_tokens": 12, "total_tokens": 19, "completion_tokens_details": {"reasoning_tokens": 8}},
}


def sse(payload):
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def chunk(delta, finish=None):
    return sse({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "deepseek-reasoner",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


STREAM = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"reasoning_content": "The user greets; "}),
    chunk({"reasoning_content": "greet back."}),
    chunk({"content": "Hel"}),
    chunk({"content": "lo!"}),
    chunk({}, "stop"),
    sse({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "deepseek-reasoner", "choices": [],
         "usage": {"prompt_tokens": 7, "completion_tokens": 12, "total_tokens": 19}}),
    b"data: [DONE]\n\n",
]


@pytest.fixture
def live(upstream):
    with LiveServer(RelayMiddleware(Starlette(), relay=Relay(config(upstream)))) as server:
        yield server


@pytest.fixture
def gpt(live):
    return openai.OpenAI(base_url=f"{live.url}/ai/v1", api_key="client-key", max_retries=0)


def test_whole_answer_has_a_reasoning_item(gpt, upstream):
    upstream.script(Fault.raw(orjson.dumps(COMPLETION)))
    response = gpt.responses.create(model="m-oa", input="Hi")
    reasoning, message = response.output
    assert reasoning.type == "reasoning" and reasoning.id.startswith("rs_")
    assert [s.text for s in reasoning.summary] == ["The user greets; greet back."]
    assert message.type == "message" and response.output_text == "Hello!"
    assert response.usage.output_tokens_details.reasoning_tokens == 8


def test_streamed_reasoning_events_and_the_sdk_assembles_them(gpt, upstream):
    upstream.script(Fault.raw(events=STREAM))
    with gpt.responses.stream(model="m-oa", input="Hi") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds.index("response.reasoning_summary_text.delta") < kinds.index("response.output_text.delta")
    assert kinds.count("response.reasoning_summary_text.delta") == 2
    for kind in ("response.reasoning_summary_part.added", "response.reasoning_summary_text.done", "response.reasoning_summary_part.done"):
        assert kinds.count(kind) == 1
    reasoning, message = final.output
    assert reasoning.type == "reasoning" and reasoning.summary[0].text == "The user greets; greet back."
    assert final.output_text == "Hello!" and final.usage.output_tokens == 12


def test_gemini_callers_get_thought_parts(live, upstream):
    upstream.script(Fault.raw(orjson.dumps(COMPLETION)), Fault.raw(events=STREAM))
    base = f"{live.url}/ai/v1beta/models/m-oa"
    body = {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}
    whole = httpx.post(f"{base}:generateContent", json=body).json()
    assert whole["candidates"][0]["content"]["parts"] == [{"text": "The user greets; greet back.", "thought": True}, {"text": "Hello!"}]
    streamed = httpx.post(f"{base}:streamGenerateContent?alt=sse", json=body).text
    parts = [p for line in streamed.splitlines() if line.startswith("data:") for p in orjson.loads(line[5:])["candidates"][0]["content"]["parts"]]
    assert [p["text"] for p in parts if p.get("thought")] == ["The user greets; ", "greet back."]
    assert "".join(p["text"] for p in parts if not p.get("thought")) == "Hello!"
