"""The official openai SDK -> uvicorn -> relay -> egress proxy (CONNECT) -> TLS upstream with a private CA."""

from __future__ import annotations

import openai
import pytest
from starlette.applications import Starlette

from asgi_ai_relay import Relay, RelayMiddleware
from tests.egress_proxy import EgressProxy
from tests.fake_upstream import echo_reply, plan_reply
from tests.live import LiveServer
from tests.test_egress import (  # noqa: F401 - fixtures
    CLIENTS,
    HOST,
    PROXY_PASSWORD,
    _clean_env,
    assert_upstream_saw_no_proxy_credentials,
    config,
    expected_auth,
    pki,
    tls_upstream,
)

MESSAGES = [{"role": "user", "content": "Hello from the SDK behind the egress proxy"}]


@pytest.fixture(params=CLIENTS)
def setup(request, tls_upstream, pki, monkeypatch):
    tls_upstream.reset()
    with EgressProxy(auth=("egress-user", PROXY_PASSWORD)) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)  # the usual way a deployment names its proxy
        relay = Relay(config(f"https://{HOST}:{tls_upstream.port}/v1", request.param, http={"ca_bundle": pki["ca"]}))
        with LiveServer(RelayMiddleware(Starlette(), relay=relay)) as server:
            client = openai.OpenAI(base_url=f"{server.url}/ai/v1", api_key="caller-credential-egress", max_retries=0)
            yield client, relay, proxy


def test_openai_sdk_whole_and_streamed_through_the_proxy(setup, tls_upstream):
    client, relay, proxy = setup
    completion = client.chat.completions.create(model="corp-model", messages=MESSAGES)
    assert completion.choices[0].message.content == echo_reply({"messages": MESSAGES}, "openai")
    assert completion.usage.prompt_tokens == plan_reply({"messages": MESSAGES}, "openai").prompt_tokens

    stream = client.chat.completions.create(
        model="corp-model", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == echo_reply({"messages": MESSAGES}, "openai")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0

    assert proxy.connects and {r.target for r in proxy.seen} == {f"{HOST}:{tls_upstream.port}"}
    assert all(r.headers.get("proxy-authorization") == expected_auth() for r in proxy.seen)
    assert_upstream_saw_no_proxy_credentials(tls_upstream, 2)
    assert all("caller-credential-egress" not in str(r.headers) for r in tls_upstream.requests)
    assert [row.status for row in relay.ledger.rows()] == [200, 200]


def test_openai_sdk_sees_a_refused_certificate_as_a_bad_gateway(tls_upstream, pki, monkeypatch):
    with EgressProxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        relay = Relay(config(f"https://{HOST}:{tls_upstream.port}/v1", "h1", http={"ca_bundle": pki["other_ca"]}))
        with LiveServer(RelayMiddleware(Starlette(), relay=relay)) as server:
            client = openai.OpenAI(base_url=f"{server.url}/ai/v1", api_key="caller-credential-egress", max_retries=0)
            with pytest.raises(openai.APIStatusError) as caught:
                client.chat.completions.create(model="corp-model", messages=MESSAGES)
    assert caught.value.status_code == 502
    assert "certificate" in caught.value.message.lower()
