"""The Responses stream encoder on hub chunks: event order, interleaved tool-call indices,
usage that arrives after the finish, a length cut."""

from __future__ import annotations

import orjson

from asgi_ai_relay.protocol.openai import chunk
from asgi_ai_relay.protocol.responses_stream import ResponsesEncoder
from asgi_ai_relay.protocol.sse import SSESplitter
from asgi_ai_relay.stages.translate import TRANSLATIONS
from asgi_ai_relay.types import Usage


def events(raw: bytes) -> list[dict]:
    out = []
    for event in SSESplitter().feed(raw):
        payload = orjson.loads(event.data)
        assert event.event == payload["type"]
        out.append(payload)
    return out


def call(index, call_id=None, name=None, arguments=""):
    piece = {"index": index, "function": {"arguments": arguments}}
    if call_id:
        piece |= {"id": call_id, "type": "function"}
        piece["function"]["name"] = name
    return {"tool_calls": [piece]}


def test_role_only_chunk_sends_nothing_and_interleaved_tool_calls_each_get_their_item():
    encoder = ResponsesEncoder()
    assert encoder.encode(chunk("c", 1, "m", {"role": "assistant"})) == b""
    raw = b"".join(encoder.encode(chunk("c", 1, "m", delta)) for delta in (
        call(0, "call_a", "first", '{"x"'), call(1, "call_b", "second", '{"y"'),
        call(0, arguments=": 1}"), call(1, arguments=": 2}"),
    ))
    raw += encoder.encode(chunk("c", 1, "m", {}, "tool_calls"))
    raw += encoder.finish(Usage(12, 7))  # the usage came after the finish chunk
    seen = events(raw)
    assert [e["sequence_number"] for e in seen] == list(range(len(seen)))
    assert [e["type"] for e in seen[:3]] == ["response.created", "response.in_progress", "response.output_item.added"]
    deltas = [(e["output_index"], e["delta"]) for e in seen if e["type"] == "response.function_call_arguments.delta"]
    assert deltas == [(0, '{"x"'), (1, '{"y"'), (0, ": 1}"), (1, ": 2}")]
    done = [e for e in seen if e["type"] == "response.function_call_arguments.done"]
    assert [(e["output_index"], e["name"], e["arguments"]) for e in done] == [(0, "first", '{"x": 1}'), (1, "second", '{"y": 2}')]
    final = seen[-1]
    assert final["type"] == "response.completed"
    output = final["response"]["output"]
    assert [(o["call_id"], o["arguments"]) for o in output] == [("call_a", '{"x": 1}'), ("call_b", '{"y": 2}')]
    added = {e["output_index"]: e["item"]["id"] for e in seen if e["type"] == "response.output_item.added"}
    assert [o["id"] for o in output] == [added[0], added[1]]
    assert final["response"]["usage"]["input_tokens"] == 12 and final["response"]["usage"]["output_tokens"] == 7
    assert {e["response"]["id"] for e in seen if "response" in e} == {encoder.id}


def test_length_cut_is_response_incomplete():
    encoder = ResponsesEncoder()
    raw = encoder.encode(chunk("c", 1, "m", {"content": "one two"})) + encoder.encode(chunk("c", 1, "m", {}, "length"))
    final = events(raw + encoder.finish(None))[-1]
    assert final["type"] == "response.incomplete"
    assert final["response"]["status"] == "incomplete"
    assert final["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["response"]["output"][0]["content"][0]["text"] == "one two"


def test_whole_answer_reasoning_tokens_come_from_the_completion():
    translation = TRANSLATIONS[("responses", "openai")]()
    completion = {
        "id": "c", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 9, "completion_tokens_details": {"reasoning_tokens": 4}},
    }
    body, usage = translation.response(orjson.dumps(completion))
    response = orjson.loads(body)
    assert response["usage"]["output_tokens_details"] == {"reasoning_tokens": 4}
    assert response["output"][0]["content"][0]["text"] == "hi" and (usage.prompt_tokens, usage.completion_tokens) == (5, 9)


def test_the_token_estimate_reads_responses_answers_and_events_once():
    from asgi_ai_relay.tokens import answer_tokens, output_tokens, text_tokens

    encoder = ResponsesEncoder()
    raw = encoder.encode(chunk("c", 1, "m", {"content": "alpha beta gamma"})) + encoder.finish(None)
    assert output_tokens([raw]) == text_tokens("alpha beta gamma")  # the deltas, not the final copy too
    whole = TRANSLATIONS[("responses", "openai")]().response(orjson.dumps({
        "id": "c", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "alpha beta gamma"}, "finish_reason": "stop"}],
    }))[0]
    assert answer_tokens(whole) == text_tokens("alpha beta gamma")
