"""Presets of OpenAI-compatible services, their quirks as flags, and base URLs written the way
each SDK writes them (the anthropic SDK's ``ANTHROPIC_BASE_URL`` has no ``/v1``)."""

from __future__ import annotations

import anthropic
import openai
import orjson
import pytest
from starlette.applications import Starlette

from asgi_ai_relay import Relay, RelayMiddleware
from asgi_ai_relay.config import load_config
from asgi_ai_relay.config.cloud import PRESETS
from asgi_ai_relay.errors import ConfigurationError
from tests.fake_upstream import Fault, echo_reply
from tests.live import LiveServer

MESSAGES = [{"role": "user", "content": "Hello there"}]


def sse(payload):
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def chunk(delta, finish=None, **extra):
    return {"id": "cmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}


#: Usage on the chunk that carries the finish reason (as Mistral sends it), and no [DONE].
MISTRAL_STREAM = [
    sse(chunk({"role": "assistant", "content": ""})),
    sse(chunk({"content": "Bonjour"})),
    sse(chunk({"content": " !"}, "stop", usage={"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10})),
]


def serve(upstream, providers, models):
    config = {"storage": {"ledger": "memory://"}, "providers": providers, "models": models, "retry": {"max_attempts": 1}}
    relay = Relay(config)
    return relay, LiveServer(RelayMiddleware(Starlette(), relay=relay))


def provider(upstream, **extra):
    return {"base_url": f"{upstream.url}/v1", "api_key": "env:TEST_UPSTREAM_KEY", **extra}


@pytest.mark.parametrize("named", [True, False])
def test_mistral_stream_quirks_make_a_complete_openai_stream(upstream, named):
    no_done = {"quirks": {"sends_done": False}}
    entry = provider(upstream, **no_done) if named else provider(upstream, preset="mistral", **no_done)
    relay, live = serve(upstream, {"mistral" if named else "eu-llm": entry}, {"small": {"provider": "mistral" if named else "eu-llm", "upstream": "mistral-small-latest"}})
    upstream.script(Fault.raw(events=MISTRAL_STREAM))
    with live:
        client = openai.OpenAI(base_url=f"{live.url}/ai/v1", api_key="x", max_retries=0)
        chunks = list(client.chat.completions.create(model="small", messages=MESSAGES, stream=True, max_completion_tokens=20, stream_options={"include_usage": True}))
    sent = upstream.last_request.json
    assert "stream_options" not in sent and sent["max_tokens"] == 20 and "max_completion_tokens" not in sent
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Bonjour !"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 3
    assert [c.usage for c in chunks[:-1] if c.usage] == []  # the usage moved to its own chunk, as OpenAI sends it
    (row,) = relay.ledger.rows()
    assert (row.status, row.prompt_tokens, row.completion_tokens) == (200, 7, 3)


def test_the_same_stream_without_the_preset_is_incomplete(upstream):
    relay, live = serve(upstream, {"plain": {"kind": "openai_compatible", **provider(upstream)}}, {"small": {"provider": "plain", "upstream": "m"}})
    upstream.script(Fault.raw(events=MISTRAL_STREAM))
    with live:
        client = openai.OpenAI(base_url=f"{live.url}/ai/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.APIError):
            list(client.chat.completions.create(model="small", messages=MESSAGES, stream=True))
    assert relay.ledger.rows()[0].status == 502


def test_a_stream_cut_before_its_finish_stays_incomplete_under_the_preset(upstream):
    relay, live = serve(upstream, {"mistral": provider(upstream, quirks={"sends_done": False})}, {"small": {"provider": "mistral", "upstream": "m"}})
    upstream.script(Fault.raw(events=MISTRAL_STREAM[:2]))
    with live:
        client = openai.OpenAI(base_url=f"{live.url}/ai/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.APIError):
            list(client.chat.completions.create(model="small", messages=MESSAGES, stream=True))
    assert relay.ledger.rows()[0].status == 502


def test_groq_takes_max_completion_tokens_and_quirks_can_be_overridden(upstream):
    providers = {"groq": provider(upstream), "mistral": provider(upstream, quirks={"stream_options": True, "max_tokens_field": "max_completion_tokens"})}
    relay, live = serve(upstream, providers, {"g": {"provider": "groq", "upstream": "llama-3.3-70b"}, "m": {"provider": "mistral", "upstream": "m"}})
    with live:
        client = openai.OpenAI(base_url=f"{live.url}/ai/v1", api_key="x", max_retries=0)
        client.chat.completions.create(model="g", messages=MESSAGES, max_tokens=30)
        assert upstream.last_request.json["max_completion_tokens"] == 30 and "max_tokens" not in upstream.last_request.json
        list(client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=30, stream=True))
        assert upstream.last_request.json["stream_options"] == {"include_usage": True}
        assert upstream.last_request.json["max_completion_tokens"] == 30


def test_deepseek_strips_reasoning_content_going_up_and_passes_it_back(upstream):
    relay, live = serve(upstream, {"deepseek": provider(upstream)}, {"r1": {"provider": "deepseek", "upstream": "deepseek-reasoner"}})
    answer = {"id": "x", "object": "chat.completion", "created": 1, "model": "deepseek-reasoner",
              "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "42", "reasoning_content": "Think."}}],
              "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}
    upstream.script(Fault.raw(orjson.dumps(answer)))
    history = [*MESSAGES, {"role": "assistant", "content": "Hi", "reasoning_content": "earlier thoughts"}, {"role": "user", "content": "And?"}]
    with live:
        client = openai.OpenAI(base_url=f"{live.url}/ai/v1", api_key="x", max_retries=0)
        reply = client.chat.completions.create(model="r1", messages=history)
    assert [m.get("reasoning_content") for m in upstream.last_request.json["messages"]] == [None, None, None]
    assert reply.choices[0].message.model_extra["reasoning_content"] == "Think."


def test_presets_and_their_errors():
    parsed = load_config({"providers": {"ollama": {}, "vllm": {"base_url": "http://gpu:8000/v1"}, "x": {"preset": "xai", "api_key": "vertex-express-key-for-tests"}}})
    assert parsed.providers["ollama"].base_url == "http://127.0.0.1:11434/v1" and parsed.providers["ollama"].kind == "openai_compatible"
    assert parsed.providers["vllm"].base_url == "http://gpu:8000/v1" and parsed.providers["x"].base_url == "https://api.x.ai/v1"
    assert {"mistral", "groq", "together", "fireworks", "xai", "openrouter", "deepseek", "holysheep", "ollama", "vllm"} <= set(PRESETS)
    with pytest.raises(ConfigurationError, match=r"providers.x.preset: unknown preset 'grok'"):
        load_config({"providers": {"x": {"preset": "grok"}}})
    with pytest.raises(ConfigurationError, match=r"providers.mistral.quirks.no_done: unknown key"):
        load_config({"providers": {"mistral": {"quirks": {"no_done": True}}}})
    with pytest.raises(ConfigurationError, match=r"providers.b.region: required for preset 'bedrock_openai'"):
        load_config({"providers": {"b": {"preset": "bedrock_openai"}}})
    with pytest.raises(ConfigurationError, match=r"providers.o.auth: \"aws\" \(SigV4\) is for kind 'bedrock'"):
        load_config({"providers": {"o": {"kind": "openai", "base_url": "https://x.example/v1", "auth": "aws"}}})
    # a provider named like a preset but of another kind is not that preset
    other = load_config({"providers": {"mistral": {"kind": "anthropic", "base_url": "https://a.example"}}}).providers["mistral"]
    assert other.cloud.preset is None and other.base_url == "https://a.example/v1"


@pytest.mark.parametrize("suffix", ["", "/", "/v1"])
def test_anthropic_base_url_with_or_without_v1(upstream, suffix):
    providers = {"an": {"kind": "anthropic", "base_url": upstream.url + suffix, "api_key": "env:TEST_UPSTREAM_KEY"}}
    relay, live = serve(upstream, providers, {"c": {"provider": "an", "upstream": "claude-sonnet-4-5"}})
    with live:
        client = anthropic.Anthropic(base_url=f"{live.url}/ai", api_key="x", max_retries=0)
        message = client.messages.create(model="c", max_tokens=50, messages=MESSAGES)
    assert upstream.last_request.path == "/v1/messages"
    assert message.content[0].text == echo_reply({"messages": MESSAGES}, "anthropic")
