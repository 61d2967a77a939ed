"""Egress: the relay reaches a TLS upstream with a private CA through an HTTP proxy.

A real proxy (:mod:`tests.egress_proxy`) and real TLS fake upstreams (:class:`FakeUpstream` under
uvicorn with a ``trustme`` CA) on 127.0.0.1. The upstream's name, ``llm.egress.test``, resolves
nowhere: only the proxy (which sends every tunnel to 127.0.0.1) can reach it. Every test runs
with each of the relay's upstream clients.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl

import orjson
import pytest
import trustme

from asgi_ai_relay import Relay, RelayRequest
from tests.conftest import UPSTREAM_KEY
from tests.egress_proxy import EgressProxy
from tests.fake_upstream import FakeUpstream, echo_reply
from tests.relay_calls import chat, pieces, relays  # noqa: F401 - relays is a fixture

PROXY_PASSWORD = "proxy-pass-7f3a9c1e"
HOST = "llm.egress.test"
CLIENTS = ["h1", "aiohttp", "httpx"]
MESSAGES = [{"role": "user", "content": "Hello through the egress proxy"}]
ENV_NAMES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy", "ALL_PROXY", "all_proxy")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """Files of a private CA, a server certificate it signed, a client certificate, another CA."""
    folder = tmp_path_factory.mktemp("pki")
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert(HOST, "127.0.0.1", "localhost")
    client = ca.issue_cert("relay-client@egress.test")
    files = {
        "ca": folder / "ca.pem", "other_ca": folder / "other-ca.pem",
        "server": folder / "server.pem", "server_key": folder / "server-key.pem",
        "client": folder / "client.pem", "client_key": folder / "client-key.pem",
    }
    ca.cert_pem.write_to_path(str(files["ca"]))
    other.cert_pem.write_to_path(str(files["other_ca"]))
    server.cert_chain_pems[0].write_to_path(str(files["server"]))
    server.private_key_pem.write_to_path(str(files["server_key"]))
    client.cert_chain_pems[0].write_to_path(str(files["client"]))
    client.private_key_pem.write_to_path(str(files["client_key"]))
    return {name: str(path) for name, path in files.items()}


@pytest.fixture(scope="module")
def tls_upstream(pki):
    tls = {"ssl_certfile": pki["server"], "ssl_keyfile": pki["server_key"]}
    with FakeUpstream(api_key=UPSTREAM_KEY, tls=tls) as up:
        yield up


@pytest.fixture(scope="module")
def mtls_upstream(pki):
    """An upstream that completes no handshake without a client certificate signed by the CA."""
    tls = {"ssl_certfile": pki["server"], "ssl_keyfile": pki["server_key"], "ssl_ca_certs": pki["ca"],
           "ssl_cert_reqs": ssl.CERT_REQUIRED}
    with FakeUpstream(api_key=UPSTREAM_KEY, tls=tls) as up:
        yield up


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, secret_scan):
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    secret_scan.add("PROXY_PASSWORD", PROXY_PASSWORD)


@pytest.fixture
def proxy(secret_scan):
    with EgressProxy(auth=("egress-user", PROXY_PASSWORD)) as running:
        yield running


def config(base_url: str, client: str, *, http: dict | None = None, **provider) -> dict:
    return {
        "storage": {"ledger": "memory://"},
        "retry": {"max_attempts": 1},
        "timeouts": {"connect": 5},
        "http": {"client": client, **(http or {})},
        "providers": {"corp": {"kind": "openai_compatible", "base_url": base_url, "api_key": "env:TEST_UPSTREAM_KEY",
                               **provider}},
        "models": {"corp-model": {"provider": "corp", "upstream": "gpt-4o-mini"}},
    }


def expected_auth() -> str:
    return "Basic " + base64.b64encode(f"egress-user:{PROXY_PASSWORD}".encode()).decode()


async def whole_and_streamed(relay: Relay) -> None:
    """One whole and one streamed answer, both complete and correct."""
    response = await chat(relay, {"model": "corp-model", "messages": MESSAGES})
    assert response.status == 200, response.body
    assert orjson.loads(response.body)["choices"][0]["message"]["content"] == echo_reply({"messages": MESSAGES}, "openai")
    streamed = await chat(relay, {"model": "corp-model", "messages": MESSAGES, "stream": True})
    assert streamed.status == 200
    body = b"".join(await pieces(streamed))
    assert b"data: [DONE]" in body
    text = "".join(
        (orjson.loads(line[6:])["choices"] or [{"delta": {}}])[0]["delta"].get("content") or ""
        for line in body.split(b"\n") if line.startswith(b"data: {")
    )
    assert text == echo_reply({"messages": MESSAGES}, "openai")


def assert_upstream_saw_no_proxy_credentials(up: FakeUpstream, count: int) -> None:
    requests = up.requests
    assert len(requests) == count
    for request in requests:
        assert "proxy-authorization" not in request.headers
        assert request.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
        assert PROXY_PASSWORD not in str(request.headers)


@pytest.mark.parametrize("client", CLIENTS)
async def test_https_upstream_only_through_the_connect_proxy(client, relays, proxy, tls_upstream, pki):
    tls_upstream.reset()
    relay = relays(config(f"https://{HOST}:{tls_upstream.port}/v1", client, proxy=proxy.url, ca_bundle=pki["ca"]))
    await whole_and_streamed(relay)
    assert proxy.connects, "the relay did not go through the proxy"
    assert {r.target for r in proxy.seen} == {f"{HOST}:{tls_upstream.port}"}
    assert all(r.method == "CONNECT" and r.headers.get("proxy-authorization") == expected_auth() for r in proxy.seen)
    assert_upstream_saw_no_proxy_credentials(tls_upstream, 2)
    assert [row.status for row in relay.ledger.rows()] == [200, 200]


@pytest.mark.parametrize("client", CLIENTS)
async def test_https_proxy_from_the_environment(client, relays, proxy, tls_upstream, pki, monkeypatch):
    tls_upstream.reset()
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "localhost,.internal.example")
    relay = relays(config(f"https://{HOST}:{tls_upstream.port}/v1", client, http={"ca_bundle": pki["ca"]}))
    await whole_and_streamed(relay)
    assert [r.target for r in proxy.connects] and {r.target for r in proxy.seen} == {f"{HOST}:{tls_upstream.port}"}
    assert_upstream_saw_no_proxy_credentials(tls_upstream, 2)


@pytest.mark.parametrize("client", CLIENTS)
async def test_no_proxy_names_the_upstream(client, relays, proxy, tls_upstream, pki, monkeypatch):
    tls_upstream.reset()
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "example.org,localhost")
    relay = relays(config(f"https://localhost:{tls_upstream.port}/v1", client, http={"ca_bundle": pki["ca"]}))
    await whole_and_streamed(relay)
    assert proxy.seen == []
    assert len(tls_upstream.requests) == 2


@pytest.mark.parametrize("client", CLIENTS)
async def test_trust_env_false_ignores_the_environment(client, relays, proxy, tls_upstream, pki, monkeypatch):
    tls_upstream.reset()
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("https_proxy", proxy.url)
    relay = relays(config(f"https://127.0.0.1:{tls_upstream.port}/v1", client,
                          http={"ca_bundle": pki["ca"], "trust_env": False}))
    await whole_and_streamed(relay)
    assert proxy.seen == []
    assert len(tls_upstream.requests) == 2


@pytest.mark.parametrize("client", CLIENTS)
async def test_a_provider_goes_direct_with_an_empty_proxy(client, relays, proxy, tls_upstream, pki):
    tls_upstream.reset()
    relay = relays(config(f"https://127.0.0.1:{tls_upstream.port}/v1", client,
                          http={"proxy": proxy.url, "ca_bundle": pki["ca"]}, proxy=""))
    await whole_and_streamed(relay)
    assert proxy.seen == []


@pytest.mark.parametrize("client", CLIENTS)
async def test_plain_http_upstream_is_forwarded_by_the_proxy(client, relays, proxy, upstream):
    relay = relays(config(f"{upstream.url}/v1", client, proxy=proxy.url))
    await whole_and_streamed(relay)
    assert [(r.method, r.target) for r in proxy.seen] == [("POST", f"{upstream.url}/v1/chat/completions")] * 2
    assert all(r.headers.get("proxy-authorization") == expected_auth() for r in proxy.seen)
    assert_upstream_saw_no_proxy_credentials(upstream, 2)


def _error(response) -> tuple[int, str]:
    payload = orjson.loads(response.body)
    message = payload["error"]["message"]
    return response.status, message


@pytest.mark.parametrize("client", CLIENTS)
async def test_a_certificate_of_another_ca_is_refused(client, relays, proxy, tls_upstream, pki):
    tls_upstream.reset()
    relay = relays(config(f"https://{HOST}:{tls_upstream.port}/v1", client, proxy=proxy.url, ca_bundle=pki["other_ca"]))
    response = await chat(relay, {"model": "corp-model", "messages": MESSAGES})
    status, message = _error(response)
    assert status == 502
    assert "corp" in message and "certificate" in message.lower()
    assert response.headers["content-type"].startswith("application/json")
    assert orjson.loads(response.body)["error"]["type"]  # the OpenAI error shape
    assert tls_upstream.requests == []  # nothing was sent over the unverified connection
    assert [row.status for row in relay.ledger.rows()] == [502]


@pytest.mark.parametrize("client", CLIENTS)
async def test_the_refusal_comes_in_the_callers_format(client, relays, proxy, tls_upstream, pki):
    relay = relays(config(f"https://{HOST}:{tls_upstream.port}/v1", client, proxy=proxy.url, ca_bundle=pki["other_ca"]))
    body = {"model": "corp-model", "max_tokens": 50, "messages": MESSAGES}
    response = await relay.handle(RelayRequest("POST", "/v1/messages", {"content-type": "application/json"}, orjson.dumps(body)))
    payload = orjson.loads(response.body)
    assert response.status == 502
    assert payload["type"] == "error" and payload["error"]["type"]  # the Anthropic error shape
    assert "certificate" in payload["error"]["message"].lower()


async def test_system_roots_do_not_trust_a_private_ca(relays, tls_upstream):
    relay = relays(config(f"https://127.0.0.1:{tls_upstream.port}/v1", "h1"))
    status, message = _error(await chat(relay, {"model": "corp-model", "messages": MESSAGES}))
    assert status == 502 and "certificate" in message.lower()


@pytest.mark.parametrize("client", CLIENTS)
async def test_verify_false_connects_and_warns(client, relays, tls_upstream, caplog):
    tls_upstream.reset()
    with caplog.at_level(logging.WARNING, logger="asgi_ai_relay"):
        relay = relays(config(f"https://127.0.0.1:{tls_upstream.port}/v1", client, verify=False))
        await whole_and_streamed(relay)
    assert any("NOT verified" in r.getMessage() and "corp" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("client", CLIENTS)
async def test_client_certificate_for_mutual_tls(client, relays, proxy, mtls_upstream, pki):
    mtls_upstream.reset()
    url = f"https://{HOST}:{mtls_upstream.port}/v1"
    without = relays(config(url, client, proxy=proxy.url, ca_bundle=pki["ca"]))
    response = await chat(without, {"model": "corp-model", "messages": MESSAGES})
    assert response.status == 502  # the upstream ends the handshake: no certificate was presented
    assert mtls_upstream.requests == []
    relay = relays(config(url, client, proxy=proxy.url, ca_bundle=pki["ca"],
                          client_cert=pki["client"], client_key=pki["client_key"]))
    await whole_and_streamed(relay)
    assert_upstream_saw_no_proxy_credentials(mtls_upstream, 2)


@pytest.mark.parametrize("client", CLIENTS)
async def test_a_proxy_that_refuses_the_tunnel(client, relays, proxy, tls_upstream, pki):
    proxy.refuse = 403
    relay = relays(config(f"https://{HOST}:{tls_upstream.port}/v1", client, proxy=proxy.url, ca_bundle=pki["ca"]))
    status, message = _error(await chat(relay, {"model": "corp-model", "messages": MESSAGES}))
    assert status == 502 and "403" in message and "proxy" in message
    assert PROXY_PASSWORD not in message and "egress-user" not in message


@pytest.mark.parametrize("client", CLIENTS)
async def test_a_wrong_proxy_password_is_an_upstream_error(client, relays, proxy, tls_upstream, pki):
    wrong = proxy.url.replace(PROXY_PASSWORD, "not-the-password")
    relay = relays(config(f"https://{HOST}:{tls_upstream.port}/v1", client, proxy=wrong, ca_bundle=pki["ca"]))
    status, message = _error(await chat(relay, {"model": "corp-model", "messages": MESSAGES}))
    assert status == 502 and "407" in message
    assert "not-the-password" not in message


@pytest.mark.parametrize("client", CLIENTS)
async def test_a_stalled_tls_handshake_is_bounded_by_the_connect_timeout(client, relays):
    """A server that accepts TCP and never answers the ClientHello: the call ends as a timeout."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader, writer):
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        cfg = config(f"https://127.0.0.1:{port}/v1", client)
        cfg["timeouts"] = {"connect": 0.3, "first_byte": 5, "read": 5}
        relay = relays(cfg)
        status, message = _error(await chat(relay, {"model": "corp-model", "messages": MESSAGES}))
        assert status == 504, message
        assert held  # the TCP connection was made: it is the handshake that was cut off
    finally:
        for writer in held:
            writer.close()
        server.close()


async def test_failed_tunnels_give_their_connection_back(relays, proxy, tls_upstream, pki):
    """Refused certificates through the proxy, three times: the pool counts no connection open."""
    from tests.relay_calls import until

    relay = relays(config(f"https://{HOST}:{tls_upstream.port}/v1", "h1", proxy=proxy.url, ca_bundle=pki["other_ca"],
                          http={"max_connections": 1}))
    for _ in range(3):  # with one connection allowed, a leaked count would make the next call wait
        status, _message = _error(await chat(relay, {"model": "corp-model", "messages": MESSAGES}))
        assert status == 502
    await asyncio.sleep(0)  # the failed tunnels' connection_lost callbacks run
    await until(lambda: relay.client.open == 0)
    assert relay.client.open == 0 and len(proxy.connects) == 3
