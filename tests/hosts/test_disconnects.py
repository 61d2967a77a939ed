"""Clients that leave, and bodies that break, under real host processes: gunicorn gthread
(Flask, Django WSGI) and uvicorn (Django ASGI, FastAPI)."""

from __future__ import annotations

import re
import threading

import httpx
import orjson
import pytest

from tests.conftest import make_config
from tests.hosts.gate import GateUpstream, gate_config
from tests.hosts.servers import Host, wait_for
from tests.security.raw_http import open_request, read_answer

pytest.importorskip("gunicorn")

KINDS = ["gunicorn-flask", "gunicorn-django", "uvicorn-django", "uvicorn-fastapi"]
CHAT = "/ai/v1/chat/completions"


def chat(prompt: str) -> bytes:
    return orjson.dumps({"model": "test-model", "messages": [{"role": "user", "content": prompt}]})


def waiting(host: Host) -> int:
    text = httpx.get(f"{host.url}/ai/metrics", timeout=10).text
    found = re.search(r'relay_queue_depth\{state="waiting"\} (\S+)', text)
    return int(float(found.group(1))) if found else -1


def post_in_thread(host: Host, body: bytes, request_id: str) -> tuple[threading.Thread, list[httpx.Response]]:
    answers: list[httpx.Response] = []

    def run() -> None:
        answers.append(httpx.post(f"{host.url}{CHAT}", content=body, headers={"x-request-id": request_id}, timeout=60))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, answers


@pytest.mark.parametrize("kind", KINDS)
def test_a_client_that_leaves_while_queued_leaves_the_queue(kind, tmp_path):
    with GateUpstream() as gate:
        config = gate_config(gate.url, queue={"max_in_flight": 1, "max_wait": 60}, metrics={"enabled": True})
        with Host(kind, config=config, tmp=tmp_path) as host:
            holder, held = post_in_thread(host, chat("hold the slot"), "req-a")
            gate.wait_for_requests(1)
            leaver = open_request(host.url, CHAT, chat("queued then gone"), headers={"x-request-id": "req-b"})
            wait_for(lambda: waiting(host) == 1, what="the second request queued")
            leaver.close()
            # It leaves at once, while the first still holds the only slot.
            wait_for(lambda: host.rows().get("req-b"), what="a ledger row for the client that left")
            assert host.rows()["req-b"][0] == 499
            assert waiting(host) == 0
            follower, followed = post_in_thread(host, chat("next in line"), "req-c")
            wait_for(lambda: waiting(host) == 1, what="the third request queued")
            gate.open()
            holder.join(30)
            follower.join(30)
            assert [r.status_code for r in held + followed] == [200, 200]
            rows = wait_for(lambda: (found := host.rows()).keys() >= {"req-a", "req-c"} and found, what="the rows of the two answered")
    assert gate.prompts == ["hold the slot", "next in line"]
    assert (rows["req-a"][0], rows["req-b"][0], rows["req-c"][0]) == (200, 499, 200)
    if kind != "uvicorn-django":  # Django's ASGI handler cancels the request: a 499 with no error
        assert rows["req-b"][1] == "client_closed"


@pytest.mark.parametrize("kind", KINDS)
def test_a_body_cut_off_midway_is_a_499_with_nothing_sent_upstream(kind, tmp_path, upstream):
    # The part that arrived is valid JSON: only the declared length tells it is not all.
    body = chat("cut off")
    with Host(kind, config=make_config(upstream, require_auth=False), tmp=tmp_path) as host:
        cut = open_request(host.url, CHAT, body, length=len(body) + 100, headers={"x-request-id": "cut"})
        cut.close()
        after = httpx.post(f"{host.url}{CHAT}", content=chat("whole"), headers={"x-request-id": "whole"}, timeout=30)
        assert after.status_code == 200
        wait_for(lambda: "whole" in host.rows(), what="the whole request's row")
        if kind == "uvicorn-django":
            # Django's ASGI handler reads the whole body before any middleware runs, and drops
            # a request whose client left mid-body: the relay never sees it.
            wait_for(lambda: len(upstream.requests) == 1, what="one upstream call")
            assert "cut" not in host.rows()
        else:
            wait_for(lambda: "cut" in host.rows(), what="the cut request's row")
            assert host.rows()["cut"] == (499, "client_closed")
    assert [orjson.loads(r.body)["messages"][-1]["content"] for r in upstream.requests] == ["whole"]


@pytest.mark.parametrize("kind", ["gunicorn-flask", "uvicorn-fastapi"])
def test_a_chunked_body_cut_off_midway_is_a_499(kind, tmp_path, upstream):
    body = chat("cut off")
    framed = b"%x\r\n%s\r\n" % (len(body), body)  # no last chunk
    with Host(kind, config=make_config(upstream, require_auth=False), tmp=tmp_path) as host:
        open_request(host.url, CHAT, framed, chunked=True, headers={"x-request-id": "cut"}).close()
        wait_for(lambda: "cut" in host.rows(), what="the cut request's row")
        assert host.rows()["cut"] == (499, "client_closed")
    assert upstream.requests == []


def test_flask_broken_chunked_body_is_a_400_in_openais_format(tmp_path, upstream):
    with Host("gunicorn-flask", config=make_config(upstream, require_auth=False), tmp=tmp_path) as host:
        sock = open_request(host.url, CHAT, b"zz\r\nnot a chunk\r\n", chunked=True, headers={"x-request-id": "broken"})
        with sock:
            answer = read_answer(sock)
        assert answer.status == 400, answer.body[:300]
        assert answer.headers["content-type"] == "application/json"
        assert orjson.loads(answer.body)["error"]["type"] == "invalid_request_error"
        wait_for(lambda: "broken" in host.rows(), what="the broken request's row")
        assert host.rows()["broken"][0] == 400
    assert upstream.requests == []
