"""Token estimates: every wire format's text, media never read as text, answers and streams
counted by their content, the optional tiktoken path, and a big image under a TPM limit."""

from __future__ import annotations

import base64
import logging
import os
import sys

import orjson
import pytest

from asgi_ai_relay import RelayRequest
from asgi_ai_relay.config import load_config
from asgi_ai_relay.errors import ConfigurationError
from asgi_ai_relay.tokens import (
    AUDIO_TOKENS, FILE_TOKENS, IMAGE_LOW_TOKENS, IMAGE_TOKENS, _Tiktoken, answer_tokens, estimate,
    output_allowance, output_tokens, prompt_tokens, text_tokens,
)
from tests.conftest import make_config
from tests.relay_calls import chat, relays  # noqa: F401 (a fixture)

#: A real PNG-sized payload: 150 KB of base64 once encoded.
IMAGE_B64 = base64.b64encode(os.urandom(115_000)).decode()
SMALL_B64 = base64.b64encode(os.urandom(300)).decode()
QUESTION = "What is in this picture?"

#: Sample texts and their token counts with tiktoken's cl100k_base (counted once, offline).
SAMPLES = {
    "english": ("The relay counts the tokens of every request before it leaves, so that rate limits and "
                "budgets hold even when a provider reports nothing. It must be quick, because it runs on "
                "every call.", 38),
    "code": ('def handle(request):\n    body = json.loads(request.body)\n    for message in body["messages"]:\n'
             '        if message.get("role") == "user":\n            yield message["content"][:100]\n', 40),
    "json": ('{"type": "object", "properties": {"city": {"type": "string", "description": "The city to look '
             'up"}, "units": {"enum": ["metric", "imperial"]}}, "required": ["city"]}', 48),
    "chinese": ("中继在请求离开之前计算每个请求的令牌数量，这样即使供应商没有报告任何内容，速率限制和预算也能保持有效。", 49),
    "russian": ("Ретранслятор считает токены каждого запроса до его отправки, чтобы ограничения скорости и "
                "бюджеты соблюдались.", 46),
    "french": ("Le relais compte les jetons de chaque requête avant son départ, afin que les limites de débit "
               "et les budgets tiennent.", 29),
}


@pytest.mark.parametrize("name", SAMPLES)
def test_estimate_is_within_a_factor_of_the_real_count(name):
    text, real = SAMPLES[name]
    assert 0.7 * real <= text_tokens(text) <= 1.4 * real


def test_text_tokens_of_nothing_and_of_one_character():
    assert text_tokens("") == 0 and text_tokens("a") == 1 and text_tokens("中") == 2


# -- media is charged a fixed count, never its base64 ---------------------------------------


def openai_part(data):
    return {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}


def openai(*parts):
    return {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": QUESTION}, *parts]}]}


def anthropic(*blocks):
    return {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": [{"type": "text", "text": QUESTION}, *blocks]}]}


def gemini(*parts):
    return {"contents": [{"role": "user", "parts": [{"text": QUESTION}, *parts]}]}


MEDIA = {
    "openai image": (openai, lambda d: openai_part(d), IMAGE_TOKENS),
    "openai low-detail image": (
        openai, lambda d: {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{d}", "detail": "low"}},
        IMAGE_LOW_TOKENS),
    "openai audio": (openai, lambda d: {"type": "input_audio", "input_audio": {"data": d, "format": "wav"}}, AUDIO_TOKENS),
    "openai file": (openai, lambda d: {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{d}",
                                                                 "filename": "a.pdf"}}, FILE_TOKENS),
    "responses image": (openai, lambda d: {"type": "input_image", "image_url": f"data:image/png;base64,{d}"}, IMAGE_TOKENS),
    "anthropic image": (
        anthropic, lambda d: {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": d}},
        IMAGE_TOKENS),
    "anthropic document": (
        anthropic, lambda d: {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": d}},
        FILE_TOKENS),
    "gemini inline_data": (gemini, lambda d: {"inline_data": {"mime_type": "image/jpeg", "data": d}}, IMAGE_TOKENS),
    "gemini inlineData": (gemini, lambda d: {"inlineData": {"mimeType": "audio/mp3", "data": d}}, AUDIO_TOKENS),
    "gemini fileData": (gemini, lambda d: {"fileData": {"mimeType": "application/pdf", "fileUri": d}}, FILE_TOKENS),
}


@pytest.mark.parametrize("name", MEDIA)
def test_media_costs_a_fixed_count_whatever_its_size(name):
    wrap, part, tokens = MEDIA[name]
    plain = prompt_tokens(wrap())
    assert plain > text_tokens(QUESTION)
    big, small = prompt_tokens(wrap(part(IMAGE_B64))), prompt_tokens(wrap(part(SMALL_B64)))
    assert big == small == plain + tokens
    assert big < 2_000 < len(IMAGE_B64) // 4  # the old estimate: bytes / 4, about 37,000 here


def test_media_nested_in_tool_results_is_skipped_too():
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": IMAGE_B64}}
    body = {"messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "here"}, image]}]}]}
    assert prompt_tokens(body) < IMAGE_TOKENS + 30


def test_a_document_made_of_text_counts_its_text():
    text = SAMPLES["english"][0] * 10
    doc = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": text}}
    assert prompt_tokens(anthropic(doc)) - prompt_tokens(anthropic()) == pytest.approx(text_tokens(text), abs=3)


def test_a_schema_word_named_like_media_is_text():
    tool = {"type": "function", "function": {"name": "show", "parameters": {
        "type": "object", "properties": {"image": {"type": "image", "description": "x" * 400}}}}}
    assert prompt_tokens({"messages": [], "tools": [tool]}) > 100


# -- every wire format's text --------------------------------------------------------------


def test_openai_tools_tool_calls_and_system_are_counted():
    long = "y" * 400  # 100 tokens
    base = {"messages": [{"role": "user", "content": "hi"}]}
    for extra in (
        {"messages": [{"role": "system", "content": long}, {"role": "user", "content": "hi"}]},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": orjson.dumps({"q": long}).decode()}}]}]},
        {"tools": [{"type": "function", "function": {"name": "f", "description": long, "parameters": {}}}]},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "description": long}}},
    ):
        assert prompt_tokens({**base, **extra}) - prompt_tokens(base) >= 100


def test_anthropic_system_tools_and_gemini_system_are_counted():
    long = "z" * 400
    base = anthropic()
    assert prompt_tokens({**base, "system": long}) - prompt_tokens(base) >= 100
    assert prompt_tokens({**base, "system": [{"type": "text", "text": long}]}) - prompt_tokens(base) >= 100
    tool = {"name": "lookup", "description": long, "input_schema": {"type": "object"}}
    assert prompt_tokens({**base, "tools": [tool]}) - prompt_tokens(base) >= 100
    g = gemini()
    assert prompt_tokens({**g, "systemInstruction": {"parts": [{"text": long}]}}) - prompt_tokens(g) >= 100


def test_parameters_are_not_prompt():
    body = {"messages": [{"role": "user", "content": "hi"}]}
    noisy = {**body, "model": "m" * 400, "user": "u" * 400, "metadata": {"k": "v" * 400}, "stop": ["s" * 400]}
    assert prompt_tokens(noisy) == prompt_tokens(body) < 10


def test_signatures_are_not_text():
    thinking = {"type": "thinking", "thinking": "hmm", "signature": "s" * 4000}
    body = {"messages": [{"role": "assistant", "content": [thinking]}]}
    assert prompt_tokens(body) < 20


def test_a_deeply_nested_body_is_counted_without_recursion():
    deep: object = "leaf"
    for _ in range(50_000):
        deep = [deep]
    assert prompt_tokens({"messages": [{"role": "user", "content": deep}]}) == prompt_tokens(
        {"messages": [{"role": "user", "content": "leaf"}]})


# -- the output a request may produce ------------------------------------------------------


@pytest.mark.parametrize("body, expected", [
    ({}, 256),
    ({"max_tokens": 10}, 10),
    ({"max_completion_tokens": 20, "max_tokens": 10}, 20),
    ({"max_output_tokens": 30}, 30),
    ({"generationConfig": {"maxOutputTokens": 40}}, 40),
    ({"max_tokens": 0}, 0),
    ({"max_tokens": True}, 256),
    ({"max_tokens": "9"}, 256),
    ({"max_tokens": -5}, 0),
    ({"max_tokens": 10, "n": 3}, 30),
    ({"max_tokens": 10**30}, 2**31 - 1),
])
def test_output_allowance(body, expected):
    assert output_allowance(body, 256) == expected


# -- what an answer and a stream said ------------------------------------------------------

CONTENT = "The answer is forty-two, and here is why it is so."
ARGS = '{"city": "Paris"}'


def sse(*events, named=False):
    out = []
    for event in events:
        data = orjson.dumps(event)
        out.append((b"event: " + event["type"].encode() + b"\n" if named else b"") + b"data: " + data + b"\n\n")
    return out


def split(pieces):
    """The same bytes cut at arbitrary places, as a network delivers them."""
    raw = b"".join(pieces)
    return [raw[i : i + 7] for i in range(0, len(raw), 7)]


def openai_stream():
    base = {"id": "chatcmpl-" + "x" * 40, "object": "chat.completion.chunk", "model": "gpt-4o-mini-2024-07-18"}
    words = CONTENT.split(" ")
    events = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}]
    events += [{**base, "choices": [{"index": 0, "delta": {"content": (" " if i else "") + w}}]} for i, w in enumerate(words)]
    events += [{**base, "choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "weather", "arguments": ARGS}}]}}]}]
    return sse(*events) + [b"data: [DONE]\n\n"]


def anthropic_stream():
    return sse(
        {"type": "message_start", "message": {"id": "msg_" + "x" * 40, "model": "claude-sonnet-4", "content": [],
                                              "usage": {"input_tokens": 5}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        *({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": (" " if i else "") + w}}
          for i, w in enumerate(CONTENT.split(" "))),
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "t", "name": "weather", "input": {}}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ARGS}},
        {"type": "ping"},
        named=True,
    )


def gemini_stream():
    return [
        b"data: " + orjson.dumps({"candidates": [{"content": {"role": "model", "parts": [{"text": w + " "}]}}],
                                   "modelVersion": "gemini-2.5-flash"}) + b"\r\n\r\n"
        for w in CONTENT.split(" ")
    ] + [b"data: " + orjson.dumps({"candidates": [{"content": {"parts": [
        {"functionCall": {"name": "weather", "args": {"city": "Paris"}}}]}}]}) + b"\r\n\r\n"]


@pytest.mark.parametrize("stream", [openai_stream, anthropic_stream, gemini_stream])
def test_streamed_pieces_count_their_content_only(stream):
    pieces = stream()
    expected = text_tokens(CONTENT + "weather" + ARGS)
    assert abs(output_tokens(pieces) - expected) <= 1
    assert output_tokens(split(pieces)) == output_tokens(pieces)
    assert sum(len(p) for p in pieces) // 4 > 3 * expected  # framing would have tripled the count


def test_a_stream_cut_mid_event_counts_what_arrived_whole():
    pieces = split(openai_stream())
    whole = output_tokens(pieces)
    assert 0 < output_tokens(pieces[: len(pieces) // 2]) < whole
    assert output_tokens([]) == 0 and output_tokens([b"data: [DONE]\n\n", b": ping\n\n", b"data: {bad\n\n"]) == 0


@pytest.mark.parametrize("answer", [
    {"choices": [{"message": {"role": "assistant", "content": CONTENT, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "weather", "arguments": ARGS}}]}}]},
    {"type": "message", "id": "msg_" + "x" * 60, "content": [
        {"type": "text", "text": CONTENT}, {"type": "tool_use", "id": "t", "name": "weather", "input": {"city": "Paris"}}]},
    {"candidates": [{"content": {"parts": [{"text": CONTENT}, {"functionCall": {"name": "weather", "args": {"city": "Paris"}}}]}}]},
])
def test_whole_answers_count_their_content_only(answer):
    assert abs(answer_tokens(orjson.dumps(answer)) - text_tokens(CONTENT + "weather" + ARGS)) <= 1


def test_an_answer_that_is_not_json_counts_as_text():
    assert answer_tokens(b"plain words here") == text_tokens("plain words here")


# -- tiktoken ------------------------------------------------------------------------------


def loaded(counter: _Tiktoken) -> _Tiktoken:
    counter.loading.join(timeout=60)
    assert not counter.loading.is_alive()
    return counter


def test_tokenizer_config_key():
    assert load_config({}).limits.tokenizer == "estimate"
    assert load_config({"limits": {"tokenizer": "tiktoken"}}).limits.tokenizer == "tiktoken"
    with pytest.raises(ConfigurationError, match="limits.tokenizer: one of estimate, tiktoken"):
        load_config({"limits": {"tokenizer": "bpe"}})


def test_without_tiktoken_the_estimate_serves_with_one_log_line(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "tiktoken", None)  # what an import of a missing package sees
    with caplog.at_level(logging.WARNING, logger="asgi_ai_relay"):
        counter = loaded(_Tiktoken())
    assert [r.getMessage() for r in caplog.records if "tiktoken is not installed" in r.getMessage()]
    assert len(caplog.records) == 1
    text = SAMPLES["english"][0]
    assert counter([text]) == estimate(text)


def tiktoken_encoding():
    """The encoding the tiktoken path would use, or a skip naming why it cannot load here."""
    tiktoken = pytest.importorskip("tiktoken", reason="tiktoken is not installed (the tokens extra)")
    for name in ("o200k_base", "cl100k_base"):
        try:
            return tiktoken.get_encoding(name)
        except Exception as exc:  # no network and no cached encoding file
            reason = f"{type(exc).__name__}"
    pytest.skip(f"no tiktoken encoding can be loaded on this machine (its files come from the network; "
                f"set TIKTOKEN_CACHE_DIR to a folder holding them): {reason}")


def test_with_tiktoken_counts_are_exact():
    encoding = tiktoken_encoding()
    counter = loaded(_Tiktoken())
    for text, _ in SAMPLES.values():
        assert counter([text]) == len(encoding.encode_ordinary(text))
    assert counter(["one", "two"]) == len(encoding.encode_ordinary("one\ntwo"))


def test_tiktoken_missing_encoding_falls_back_with_one_log_line(monkeypatch, caplog):
    tiktoken = pytest.importorskip("tiktoken", reason="tiktoken is not installed (the tokens extra)")

    def unavailable(name):
        raise ValueError(f"no file for {name}")

    monkeypatch.setattr(tiktoken, "get_encoding", unavailable)
    with caplog.at_level(logging.WARNING, logger="asgi_ai_relay"):
        counter = loaded(_Tiktoken())
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "no encoding could be loaded (o200k_base: ValueError; cl100k_base: ValueError)" in messages[0]
    assert counter(["hello there"]) == estimate("hello there")


# -- end to end ----------------------------------------------------------------------------


async def test_a_150kb_image_is_admitted_under_a_30000_tpm_limit(upstream, relays):
    relay = relays(make_config(upstream, limits={"caller": {"tpm": 30_000}}))
    body = {**openai(openai_part(IMAGE_B64)), "model": "test-model", "max_tokens": 50}
    assert len(orjson.dumps(body)) > 150_000
    answer = await chat(relay, body)
    assert answer.status == 200, answer.body[:200]
    assert len(upstream.requests) == 1
    spent = 30_000 - int(answer.headers["x-ratelimit-remaining-tokens"])
    assert spent == prompt_tokens(body) + 50 < 1_000

    message = {"model": "test-model", "max_tokens": 50, "messages": [{"role": "user", "content": [
        {"type": "text", "text": QUESTION},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": IMAGE_B64}}]}]}
    answer = await relay.handle(RelayRequest("POST", "/v1/messages", {"content-type": "application/json"},
                                             orjson.dumps(message)))
    assert answer.status == 200, answer.body[:200]
    assert len(upstream.requests) == 2


async def test_a_virtual_model_sees_an_image_as_a_few_hundred_tokens(upstream, relays):
    config = make_config(upstream, models={"small": {"provider": "up", "upstream": "gpt-4o-mini", "tier": 1,
                                                     "context_window": 4000, "capabilities": ["vision"], "price": {"input": 1, "output": 1}}},
                         routing={"virtual": {"auto": {"models": ["small"]}}})
    relay = relays(config)
    answer = await chat(relay, {**openai(openai_part(IMAGE_B64)), "model": "auto"})
    assert answer.status == 200, answer.body[:200]


async def test_the_relay_starts_loading_its_tokenizer_when_built(relays):
    from asgi_ai_relay import tokens

    relays(load_config({"limits": {"tokenizer": "tiktoken"}}))
    counter = tokens._counters["tiktoken"]
    assert isinstance(counter, _Tiktoken)
    loaded(counter)  # its one log line is written here, not during a later test
