"""Flask under werkzeug's development server (``flask run``): the client's socket is watched,
broken and cut-off bodies are answered in the caller's format."""

from __future__ import annotations

import threading

import httpx
import orjson
import pytest
from flask import Flask

from flask_ai_relay import AIRelay
from tests.conftest import make_config
from tests.hosts.gate import GateUpstream, gate_config
from tests.hosts.servers import wait_for
from tests.live import WSGILiveServer
from tests.security.raw_http import open_request, read_answer

URL = "/ai/v1/chat/completions"


def chat(prompt):
    return orjson.dumps({"model": "test-model", "messages": [{"role": "user", "content": prompt}]})


@pytest.fixture
def served(upstream):
    def serve(**overrides):
        app = Flask("devserver")
        app.config["AI_RELAY"] = make_config(upstream, require_auth=False, **overrides)
        AIRelay(app)
        return WSGILiveServer(app), AIRelay.relay_for(app)

    return serve


def rows(relay):
    return {r.request_id: (r.status, r.error_type) for r in relay.ledger.rows()}


def test_a_client_that_leaves_while_queued_leaves_the_queue():
    with GateUpstream() as upstream:
        app = Flask("devserver")
        app.config["AI_RELAY"] = gate_config(upstream.url, queue={"max_in_flight": 1, "max_wait": 60})
        AIRelay(app)
        relay = AIRelay.relay_for(app)
        gate = relay.traffic.gate
        with WSGILiveServer(app) as live:
            answers = []
            holder = threading.Thread(target=lambda: answers.append(httpx.post(f"{live.url}{URL}", content=chat("hold"), timeout=30)))
            holder.start()
            upstream.wait_for_requests(1)
            leaver = open_request(live.url, URL, chat("queued then gone"), headers={"x-request-id": "gone"})
            wait_for(lambda: gate.waiting == 1, what="the second request queued")
            leaver.close()
            wait_for(lambda: "gone" in rows(relay), what="the row of the client that left")
            assert gate.in_flight == 1 and gate.waiting == 0  # it left while the slot was still held
            upstream.open()
            holder.join(30)
    assert answers[0].status_code == 200
    assert rows(relay)["gone"] == (499, "client_closed")
    assert upstream.prompts == ["hold"]


def test_broken_chunked_body_is_a_400_in_openais_format(served, upstream):
    server, relay = served()
    with server as live, open_request(live.url, URL, b"zz\r\nnot a chunk\r\n", chunked=True,
                                      headers={"x-request-id": "broken", "connection": "close"}) as sock:
        answer = read_answer(sock)
    assert answer.status == 400 and answer.headers["content-type"] == "application/json"
    error = orjson.loads(answer.body)["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_body")
    assert rows(relay)["broken"] == (400, "invalid_body")
    assert upstream.requests == []


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_cut_off_midway_is_a_499(served, upstream, chunked):
    server, relay = served()
    body = chat("cut off")
    with server as live:
        if chunked:
            sock = open_request(live.url, URL, b"%x\r\n%s\r\n" % (len(body), body), chunked=True, headers={"x-request-id": "cut"})
        else:
            sock = open_request(live.url, URL, body, length=len(body) + 10, headers={"x-request-id": "cut"})
        sock.close()
        wait_for(lambda: "cut" in rows(relay), what="the cut request's row")
    assert rows(relay)["cut"] == (499, "client_closed")
    assert upstream.requests == []
