"""AWS Bedrock through the relay: Converse and ConverseStream signed with SigV4 (the fake checks
the signature with botocore's own signer) or a Bedrock API key, the binary event stream framing,
cross-region inference profile ids, usage with cache tokens; and the API-key endpoints
(OpenAI-compatible Chat Completions, Anthropic-compatible Messages). Driven by the official
openai and anthropic SDKs."""

from __future__ import annotations

import random
import struct
import uuid

import anthropic
import openai
import orjson
import pytest
from botocore.eventstream import EventStreamBuffer
from starlette.applications import Starlette

from asgi_ai_relay import Relay, RelayMiddleware
from asgi_ai_relay.errors import UpstreamProtocolError, UpstreamStatusError
from asgi_ai_relay.protocol.bedrock import from_openai
from asgi_ai_relay.protocol.bedrock_stream import ConverseStreamDecoder
from asgi_ai_relay.protocol.eventstream import EventStreamDecoder
from asgi_ai_relay.config import ModelConfig
from tests.fake_cloud import FakeBedrock, converse_to_anthropic, event, exception, frame
from tests.fake_upstream import Fault, echo_reply, fake_tool_arguments, plan_reply
from tests.live import LiveServer

ACCESS_KEY = "AKIAFAKEACCESSKEY123"
SECRET_KEY = "fake/secret+key/0123456789abcdefABCDEF"
SESSION_TOKEN = "FwoGZXIvYXdzEFAKESESSIONTOKEN0123456789"
BEDROCK_KEY = "ABSKQmVkcm9ja0FQSUtleS1mYWtlLWtleQ=="
REGION = "eu-central-1"
PROFILE_ID = "eu.anthropic.claude-sonnet-4-5-20250929-v1:0"
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
OA_TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": SCHEMA}}]
AN_TOOLS = [{"name": "get_weather", "description": "Weather", "input_schema": SCHEMA}]
MESSAGES = [{"role": "user", "content": "Weather in Paris please"}]
ARGS = fake_tool_arguments(SCHEMA, "Weather in Paris please")
PRICE = {"input": 3, "output": 15, "cached_input": 0.3, "cache_write": 3.75}


@pytest.fixture(scope="module")
def bedrock():
    with FakeBedrock(region=REGION, access_key=ACCESS_KEY, secret_key=SECRET_KEY, session_token=SESSION_TOKEN, api_key=BEDROCK_KEY) as fake:
        yield fake


@pytest.fixture(autouse=True)
def _aws_env(bedrock, monkeypatch, secret_scan, tmp_path):
    bedrock.reset()
    bedrock.refusals.clear()
    bedrock.betas.clear()
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    # The usual chain, from the environment; no shared files, no instance metadata lookups.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("TEST_BEDROCK_KEY", BEDROCK_KEY)
    for name, value in (("AWS_SECRET", SECRET_KEY), ("AWS_SESSION_TOKEN", SESSION_TOKEN), ("BEDROCK_KEY", BEDROCK_KEY)):
        secret_scan.add(name, value)


def config(bedrock):
    return {
        "storage": {"ledger": "memory://"},
        "providers": {
            "aws": {"kind": "bedrock", "region": REGION, "base_url": bedrock.url},
            "aws-claude": {"kind": "bedrock_anthropic", "region": REGION, "base_url": bedrock.url},
            "aws-key": {"kind": "bedrock", "region": REGION, "base_url": bedrock.url, "api_key": "env:TEST_BEDROCK_KEY"},
            "aws-openai": {"preset": "bedrock_openai", "region": REGION, "base_url": f"{bedrock.url}/openai/v1", "api_key": "env:TEST_BEDROCK_KEY"},
            "aws-mantle": {"preset": "bedrock_mantle", "region": REGION, "base_url": f"{bedrock.url}/anthropic", "api_key": "env:TEST_BEDROCK_KEY"},
        },
        "models": {
            "claude": {"provider": "aws", "upstream": PROFILE_ID, "price": PRICE},
            "claude-native": {"provider": "aws-claude", "upstream": PROFILE_ID, "price": PRICE},
            "claude-key": {"provider": "aws-key", "upstream": "anthropic.claude-haiku-4-5-20251001-v1:0", "price": PRICE},
            "gpt-oss": {"provider": "aws-openai", "upstream": "openai.gpt-oss-120b-1:0", "price": PRICE},
            "claude-mantle": {"provider": "aws-mantle", "upstream": "anthropic.claude-sonnet-4-5", "price": PRICE},
        },
        "retry": {"max_attempts": 1},
    }


@pytest.fixture
def relay(bedrock):
    return Relay(config(bedrock))


@pytest.fixture
def server(relay):
    with LiveServer(RelayMiddleware(Starlette(), relay=relay)) as live:
        yield live


@pytest.fixture
def gpt(server):
    return openai.OpenAI(base_url=f"{server.url}/ai/v1", api_key="client-secret-abc", max_retries=0)


@pytest.fixture
def claude(server):
    return anthropic.Anthropic(base_url=f"{server.url}/ai", api_key="client-secret-abc", max_retries=0)


def plan_of(request):
    return plan_reply(converse_to_anthropic(request.json), "anthropic")


def test_converse_whole_signed_with_sigv4_profile_id_in_the_path(gpt, bedrock, relay):
    bedrock.script(Fault.cache(read=5, written=3))
    reply = gpt.chat.completions.create(model="claude", messages=[{"role": "system", "content": "Be brief."}, *MESSAGES], max_tokens=200)
    request = bedrock.last_request
    assert request.raw_path == "/model/eu.anthropic.claude-sonnet-4-5-20250929-v1:0/converse"
    assert bedrock.refusals == [] and request.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")
    assert request.headers["x-amz-security-token"] == SESSION_TOKEN and SECRET_KEY not in repr(request.headers)
    assert request.json["system"] == [{"text": "Be brief."}] and request.json["inferenceConfig"] == {"maxTokens": 200}
    assert "client-secret-abc" not in repr(request.headers)
    plan = plan_reply(converse_to_anthropic(request.json), "anthropic", Fault.cache(read=5, written=3))
    assert reply.choices[0].message.content == echo_reply({"messages": MESSAGES}, "anthropic")
    assert reply.choices[0].finish_reason == "stop" and reply.model == PROFILE_ID
    assert reply.usage.prompt_tokens == plan.prompt_tokens and reply.usage.completion_tokens == plan.completion_tokens
    assert reply.usage.prompt_tokens_details.cached_tokens == 5
    (row,) = relay.ledger.rows()
    assert (row.provider, row.upstream_model, row.cached_tokens, row.status) == ("aws", PROFILE_ID, 5, 200)
    uncached = plan.prompt_tokens - 8
    assert float(row.cost_usd) == pytest.approx((3 * uncached + 0.3 * 5 + 3.75 * 3 + 15 * plan.completion_tokens) / 1e6)


@pytest.mark.parametrize("client", ["h1", "aiohttp", "httpx"])
def test_every_http_client_sends_the_path_it_signed(bedrock, client):
    settings = config(bedrock)
    settings["http"] = {"client": client}
    settings["models"]["arn"] = {"provider": "aws", "upstream": "arn:aws:bedrock:eu-central-1:123456789012:inference-profile/eu.anthropic.claude-v1:0"}
    fresh = Relay(settings)
    with LiveServer(RelayMiddleware(Starlette(), relay=fresh)) as live:
        gpt = openai.OpenAI(base_url=f"{live.url}/ai/v1", api_key="x", max_retries=0)
        for model in ("claude", "arn"):
            assert gpt.chat.completions.create(model=model, messages=MESSAGES).choices[0].message.content.startswith("Echo: ")
            assert "".join(c.choices[0].delta.content or "" for c in gpt.chat.completions.create(model=model, messages=MESSAGES, stream=True) if c.choices)
    assert bedrock.refusals == []
    assert bedrock.last_request.raw_path == "/model/arn:aws:bedrock:eu-central-1:123456789012:inference-profile%2Feu.anthropic.claude-v1:0/converse-stream"


def test_converse_stream_text_through_the_event_stream(gpt, bedrock, relay):
    chunks = list(gpt.chat.completions.create(model="claude", messages=MESSAGES, stream=True, stream_options={"include_usage": True}))
    request = bedrock.last_request
    assert request.raw_path.endswith("/converse-stream") and bedrock.refusals == []
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == echo_reply({"messages": MESSAGES}, "anthropic")
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    plan = plan_of(request)
    assert chunks[-1].usage.completion_tokens == plan.completion_tokens and chunks[-1].usage.prompt_tokens == plan.prompt_tokens
    (row,) = relay.ledger.rows()
    assert row.stream and row.status == 200 and row.completion_tokens == plan.completion_tokens


def test_converse_tool_calls_whole_and_streamed_then_the_result(gpt, bedrock):
    first = gpt.chat.completions.create(model="claude", messages=MESSAGES, tools=OA_TOOLS, tool_choice="required")
    assert bedrock.last_request.json["toolConfig"]["toolChoice"] == {"any": {}}
    assert bedrock.last_request.json["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"] == {"json": SCHEMA}
    (call,) = first.choices[0].message.tool_calls
    assert first.choices[0].finish_reason == "tool_calls" and orjson.loads(call.function.arguments) == ARGS
    chunks = list(gpt.chat.completions.create(model="claude", messages=MESSAGES, tools=OA_TOOLS, stream=True))
    streamed = "".join(c.choices[0].delta.tool_calls[0].function.arguments or "" for c in chunks if c.choices and c.choices[0].delta.tool_calls)
    assert orjson.loads(streamed) == ARGS
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    follow = [*MESSAGES, first.choices[0].message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
    second = gpt.chat.completions.create(model="claude", messages=follow, tools=OA_TOOLS)
    sent = bedrock.last_request.json["messages"]
    assert sent[-1] == {"role": "user", "content": [{"toolResult": {"toolUseId": call.id, "content": [{"text": "sunny"}]}}]}
    assert sent[-2]["content"][-1]["toolUse"] == {"toolUseId": call.id, "name": "get_weather", "input": ARGS}
    assert second.choices[0].message.content.startswith("Echo: ")


def test_anthropic_sdk_to_converse_stream_with_tools(claude, bedrock, relay):
    with claude.messages.stream(model="claude", max_tokens=300, messages=MESSAGES, tools=AN_TOOLS) as stream:
        final = stream.get_final_message()
    (block,) = final.content
    assert block.type == "tool_use" and block.input == ARGS and final.stop_reason == "tool_use"
    plan = plan_of(bedrock.last_request)
    assert final.usage.output_tokens == plan.completion_tokens and final.usage.input_tokens == plan.prompt_tokens
    whole = claude.messages.create(model="claude", max_tokens=300, messages=MESSAGES)
    assert whole.content[0].text == echo_reply({"messages": MESSAGES}, "anthropic")
    assert [r.status for r in relay.ledger.rows()] == [200, 200]


def test_responses_api_to_converse(gpt, bedrock):
    answer = gpt.responses.create(model="claude", input="Say hi", instructions="Be brief.")
    assert bedrock.last_request.json["system"] == [{"text": "Be brief."}] and bedrock.refusals == []
    assert answer.output_text == echo_reply({"messages": [{"role": "user", "content": "Say hi"}]}, "anthropic")
    assert answer.usage.output_tokens > 0


def test_gemini_native_api_to_converse(server, bedrock):
    """Gemini CLI's API in, Converse out (whole and streamed through the event stream)."""
    import httpx

    body = {"contents": [{"role": "user", "parts": [{"text": "Say hi"}]}], "systemInstruction": {"parts": [{"text": "Be brief."}]}}
    whole = httpx.post(f"{server.url}/ai/v1beta/models/claude:generateContent", json=body)
    assert whole.status_code == 200 and bedrock.last_request.json["system"] == [{"text": "Be brief."}]
    expected = echo_reply({"messages": [{"role": "user", "content": "Say hi"}]}, "anthropic")
    assert whole.json()["candidates"][0]["content"]["parts"] == [{"text": expected}]
    streamed = httpx.post(f"{server.url}/ai/v1beta/models/claude:streamGenerateContent?alt=sse", json=body)
    events = [orjson.loads(line[5:]) for line in streamed.text.splitlines() if line.startswith("data:")]
    assert "".join(p.get("text", "") for e in events for p in e["candidates"][0]["content"]["parts"]) == expected
    assert events[-1]["candidates"][0]["finishReason"] == "STOP" and events[-1]["usageMetadata"]["candidatesTokenCount"] > 0


def test_bedrock_api_key_is_a_bearer_and_nothing_is_signed(gpt, bedrock):
    reply = gpt.chat.completions.create(model="claude-key", messages=MESSAGES)
    request = bedrock.last_request
    assert request.headers["authorization"] == f"Bearer {BEDROCK_KEY}" and "x-amz-date" not in request.headers
    assert request.raw_path == "/model/anthropic.claude-haiku-4-5-20251001-v1:0/converse"
    assert reply.choices[0].message.content.startswith("Echo: ")


def test_a_wrong_secret_fails_the_signature_check(gpt, bedrock, monkeypatch, relay):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "another/secret/key")
    fresh = Relay(config(bedrock))
    with LiveServer(RelayMiddleware(Starlette(), relay=fresh)) as live:
        client = openai.OpenAI(base_url=f"{live.url}/ai/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="claude", messages=MESSAGES)
    assert caught.value.status_code == 502 and bedrock.refusals[0].endswith(": signature mismatch")
    assert fresh.ledger.rows()[0].status == 502


def test_no_credentials_in_the_chain_is_an_upstream_error(bedrock, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    fresh = Relay(config(bedrock))
    with LiveServer(RelayMiddleware(Starlette(), relay=fresh)) as live:
        client = openai.OpenAI(base_url=f"{live.url}/ai/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="claude", messages=MESSAGES)
    assert caught.value.status_code == 502 and "has no usable AWS credentials (LookupError)" in caught.value.message
    assert bedrock.requests == []


def test_throttling_exception_mid_stream_ends_with_an_error_event(gpt, bedrock, relay):
    bedrock.script(Fault.stream_error(after_chunks=8))
    with pytest.raises(openai.APIError) as caught:  # mid-stream, or before the first byte when it came in one read
        list(gpt.chat.completions.create(model="claude", messages=MESSAGES, stream=True))
    assert "Too many requests" in str(caught.value)
    (row,) = relay.ledger.rows()
    assert row.status == 429


def test_status_error_and_its_message(gpt, bedrock):
    bedrock.script(Fault.status(400))
    with pytest.raises(openai.BadRequestError) as caught:
        gpt.chat.completions.create(model="claude", messages=MESSAGES)
    assert "Injected fault: HTTP 400" in caught.value.message


def test_openai_compatible_endpoint_with_the_api_key(gpt, bedrock):
    chunks = list(gpt.chat.completions.create(model="gpt-oss", messages=MESSAGES, stream=True, stream_options={"include_usage": True}))
    request = bedrock.last_request
    assert request.path == "/openai/v1/chat/completions" and request.headers["authorization"] == f"Bearer {BEDROCK_KEY}"
    assert request.json["model"] == "openai.gpt-oss-120b-1:0"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith("Echo: ")
    assert chunks[-1].usage.completion_tokens > 0


def test_anthropic_compatible_endpoint_base_url_without_v1(claude, bedrock):
    message = claude.messages.create(model="claude-mantle", max_tokens=100, messages=MESSAGES, tools=AN_TOOLS)
    request = bedrock.last_request
    assert request.path == "/anthropic/v1/messages" and request.headers["x-api-key"] == BEDROCK_KEY
    assert message.content[0].type == "tool_use" and message.content[0].input == ARGS


# ---- Claude in Anthropic's format (InvokeModel) ----------------------------------------


def test_invoke_model_keeps_anthropic_fields_and_reads_cache_usage(claude, bedrock, relay):
    bedrock.script(Fault.cache(read=6, written=2))
    system = [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
    message = claude.messages.create(model="claude-native", max_tokens=100, system=system, messages=MESSAGES)
    request = bedrock.last_request
    assert request.raw_path == "/model/eu.anthropic.claude-sonnet-4-5-20250929-v1:0/invoke" and bedrock.refusals == []
    assert request.json["system"] == system and request.json["anthropic_version"] == "bedrock-2023-05-31"
    assert message.content[0].text == echo_reply({"messages": MESSAGES}, "anthropic")
    assert (message.usage.cache_read_input_tokens, message.usage.cache_creation_input_tokens) == (6, 2)
    (row,) = relay.ledger.rows()
    assert (row.provider, row.cached_tokens, row.status) == ("aws-claude", 6, 200)


def test_invoke_model_stream_with_tools_and_beta_header(claude, bedrock, relay):
    with claude.messages.stream(model="claude-native", max_tokens=100, messages=MESSAGES, tools=AN_TOOLS,
                                extra_headers={"anthropic-beta": "fine-grained-tool-streaming-2025-05-14"}) as stream:
        final = stream.get_final_message()
    assert bedrock.last_request.raw_path.endswith("/invoke-with-response-stream") and bedrock.refusals == []
    assert bedrock.betas == [["fine-grained-tool-streaming-2025-05-14"]]
    (block,) = final.content
    assert block.type == "tool_use" and block.input == ARGS and final.stop_reason == "tool_use"
    plan = plan_reply({**bedrock.last_request.json, "model": PROFILE_ID}, "anthropic")
    assert final.usage.output_tokens == plan.completion_tokens
    assert relay.ledger.rows()[0].completion_tokens == plan.completion_tokens


def test_openai_sdk_to_invoke_model_streamed(gpt, bedrock):
    chunks = list(gpt.chat.completions.create(model="claude-native", messages=MESSAGES, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == echo_reply({"messages": MESSAGES}, "anthropic")
    assert chunks[-1].usage.completion_tokens > 0


def test_invoke_model_throttled_mid_stream(claude, bedrock, relay):
    bedrock.script(Fault.stream_error(after_chunks=5))
    with pytest.raises(anthropic.APIError) as caught:  # mid-stream, or before the first byte when it came in one read
        with claude.messages.stream(model="claude-native", max_tokens=100, messages=MESSAGES) as stream:
            list(stream.text_stream)
    assert "Too many requests" in str(caught.value)
    assert relay.ledger.rows()[0].status == 429


# ---- the event stream decoder ---------------------------------------------------------


def all_types_frame():
    headers = b""
    for name, kind, value in (("t", 0, b""), ("f", 1, b""), ("b", 2, struct.pack(">b", -3)), ("s", 3, struct.pack(">h", 300)),
                              ("i", 4, struct.pack(">i", -70000)), ("l", 5, struct.pack(">q", 2**40)),
                              ("ba", 6, struct.pack(">H", 3) + b"\x00\x01\x02"), ("st", 7, struct.pack(">H", 2) + b"ok"),
                              ("ts", 8, struct.pack(">q", 1700000000000)), ("u", 9, uuid.UUID(int=7).bytes)):
        headers += bytes([len(name)]) + name.encode() + bytes([kind]) + value
    import zlib

    payload = b'{"x":1}'
    total = 12 + len(headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(headers))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + headers + payload
    return body + struct.pack(">I", zlib.crc32(body))


def test_decoder_agrees_with_botocore_on_every_header_type_in_any_split():
    data = all_types_frame() + event("messageStart", {"role": "assistant"}) + exception("throttlingException", "slow down")
    reference = EventStreamBuffer()
    reference.add_data(data)
    expected = [(dict(m.headers), m.payload) for m in reference]
    for seed in range(20):
        rng = random.Random(seed)
        decoder, got, at = EventStreamDecoder(), [], 0
        while at < len(data):
            step = rng.randint(1, 40)
            got += decoder.feed(data[at : at + step])
            at += step
        assert [(m.headers, m.payload) for m in got] == expected and decoder.pending == 0
    assert expected[0][0]["t"] is True and expected[0][0]["ts"] == 1700000000000 and expected[0][0]["u"] == uuid.UUID(int=7).bytes


@pytest.mark.parametrize("where", ["prelude", "message"])
def test_decoder_refuses_a_bad_crc(where):
    data = bytearray(event("messageStart", {"role": "assistant"}))
    data[9 if where == "prelude" else -1] ^= 0xFF
    with pytest.raises(UpstreamProtocolError, match="CRC mismatch"):
        EventStreamDecoder().feed(bytes(data))


def test_decoder_refuses_an_absurd_length():
    prelude = struct.pack(">II", 1 << 30, 0)
    import zlib

    with pytest.raises(UpstreamProtocolError, match="message length"):
        EventStreamDecoder().feed(prelude + struct.pack(">I", zlib.crc32(prelude)))


def test_stream_decoder_needs_the_metadata_and_maps_exceptions():
    decoder = ConverseStreamDecoder()
    chunks = decoder.feed(event("messageStart", {"role": "assistant"}) + event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi"}}))
    assert [c["choices"][0]["delta"] for c in chunks] == [{"role": "assistant", "content": ""}, {"content": "Hi"}]
    decoder.feed(event("messageStop", {"stopReason": "max_tokens"}))
    assert not decoder.done
    decoder.feed(event("metadata", {"usage": {"inputTokens": 4, "outputTokens": 2, "cacheReadInputTokens": 6, "cacheWriteInputTokens": 1}}))
    assert decoder.done and (decoder.usage.prompt_tokens, decoder.usage.cached_tokens, decoder.usage.cache_creation_tokens) == (11, 6, 1)
    with pytest.raises(UpstreamStatusError) as caught:
        ConverseStreamDecoder().feed(exception("serviceUnavailableException", "try later"))
    assert caught.value.status_code == 503 and "try later" in str(caught.value)
    cut = ConverseStreamDecoder()
    cut.feed(event("messageStart", {"role": "assistant"})[:10])
    with pytest.raises(UpstreamProtocolError, match="inside a message"):
        cut.close()


def test_converse_request_translation():
    body = {
        "messages": [
            {"role": "developer", "content": "Rules."},
            {"role": "user", "content": [{"type": "text", "text": "Look"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
            {"role": "user", "content": "and answer"},
        ],
        "temperature": 0.2, "top_p": 0.9, "stop": "END", "max_completion_tokens": 50,
        "tools": OA_TOOLS, "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    }
    out = from_openai(body, ModelConfig("m", "aws", "x"), False)
    assert out["system"] == [{"text": "Rules."}]
    assert out["messages"] == [{"role": "user", "content": [{"text": "Look"}, {"image": {"format": "png", "source": {"bytes": "AAAA"}}}, {"text": "and answer"}]}]
    assert out["inferenceConfig"] == {"maxTokens": 50, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END"]}
    assert out["toolConfig"]["toolChoice"] == {"tool": {"name": "get_weather"}}
    blank = from_openai({"messages": [{"role": "user", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "hi"}]}]}, ModelConfig("m", "aws", "x"), False)
    assert blank["messages"] == [{"role": "user", "content": [{"text": "hi"}]}]  # Converse refuses blank text blocks
    from asgi_ai_relay.errors import InvalidRequest

    with pytest.raises(InvalidRequest, match="image_url"):
        from_openai({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}, ModelConfig("m", "aws", "x"), False)
    with pytest.raises(InvalidRequest, match="response_format"):
        from_openai({"messages": MESSAGES, "response_format": {"type": "json_object"}}, ModelConfig("m", "aws", "x"), False)
