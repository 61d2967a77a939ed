"""The egress keys of ``[http]`` and ``[providers.NAME]``: validation, merging, the proxy choice."""

from __future__ import annotations

import ssl

import pytest
import trustme

from asgi_ai_relay import ConfigurationError
from asgi_ai_relay.config import load_config
from asgi_ai_relay.egress import EgressPolicy, Proxy, tls_context
from asgi_ai_relay.transport import make_client

BASE = "https://llm.example.test/v1"


def load(http=None, **provider):
    return load_config({"http": http or {}, "providers": {"corp": {"base_url": BASE, **provider}}})


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return str(path)


@pytest.mark.parametrize("where", ["http", "provider"])
@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("ca_bundle", "/nonexistent/ca.pem", "no such file or directory"),
        ("client_cert", "/nonexistent/client.pem", "no such file"),
        ("proxy", "https://proxy.example.test:3128", "scheme 'https' is not supported"),
        ("proxy", "socks5://proxy.example.test:1080", "scheme 'socks5'"),
        ("proxy", "http://proxy.example.test:notaport", "not a proxy URL"),
        ("verify", "no", "verify"),
    ],
)
def test_bad_egress_keys_are_named(where, key, value, says):
    with pytest.raises(ConfigurationError) as caught:
        load(http={key: value}) if where == "http" else load(**{key: value})
    prefix = "http." if where == "http" else "providers.corp."
    assert str(caught.value).startswith(prefix + key), caught.value
    assert says in str(caught.value)


def test_client_key_needs_a_certificate(ca_file):
    with pytest.raises(ConfigurationError, match=r"providers\.corp\.client_key: needs client_cert"):
        load(client_key=ca_file)


def test_a_proxy_password_never_shows(monkeypatch):
    config = load(http={"proxy": "http://user:hunter2-secret@proxy.example.test:3128"})
    assert "hunter2-secret" not in repr(config)
    proxy = EgressPolicy(config.http, config.providers).route("corp", True, "llm.example.test", 443).proxy
    assert proxy is not None and "hunter2-secret" not in repr(proxy) and proxy.display == "proxy.example.test:3128"
    assert proxy.url == "http://proxy.example.test:3128"


def test_provider_keys_override_http_one_by_one(ca_file):
    config = load(http={"proxy": "http://proxy.example.test:3128", "ca_bundle": ca_file, "verify": True}, verify=False)
    merged = config.providers["corp"].egress.over(config.http.egress)
    assert merged.proxy is not None and merged.proxy.get() == "http://proxy.example.test:3128"
    assert merged.ca_bundle == ca_file and merged.verify is False


def test_the_proxy_choice(monkeypatch):
    env = {"HTTPS_PROXY": "http://env-proxy.example.test:8080", "http_proxy": "http://plain.example.test:8081",
           "NO_PROXY": "internal.example.test,.svc.cluster.local,10.1.2.3"}
    config = load_config({"providers": {"a": {"base_url": BASE}, "direct": {"base_url": BASE, "proxy": ""},
                                        "own": {"base_url": BASE, "proxy": "http://own.example.test:3128"}}})
    policy = EgressPolicy(config.http, config.providers, environ=env)
    assert policy.route("a", True, "llm.example.test", 443).proxy == Proxy("env-proxy.example.test", 8080)
    assert policy.route("a", False, "llm.example.test", 80).proxy == Proxy("plain.example.test", 8081)
    assert policy.route("a", True, "internal.example.test", 443).proxy is None
    assert policy.route("a", True, "vllm.ns.svc.cluster.local", 443).proxy is None
    assert policy.route("a", True, "10.1.2.3", 443).proxy is None
    assert policy.route("direct", True, "llm.example.test", 443).proxy is None
    assert policy.route("own", True, "internal.example.test", 443).proxy == Proxy("own.example.test", 3128)
    bare = EgressPolicy(config.http, config.providers, environ={"https_proxy": "proxy.example.test:3128"})
    assert bare.route("a", True, "llm.example.test", 443).proxy == Proxy("proxy.example.test", 3128)
    off = load_config({"http": {"trust_env": False}, "providers": {"a": {"base_url": BASE}}})
    assert EgressPolicy(off.http, off.providers, environ=env).route("a", True, "llm.example.test", 443).proxy is None


def test_a_bad_proxy_in_the_environment_is_refused_when_the_client_is_built(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "socks5://proxy.example.test:1080")
    config = load()
    with pytest.raises(ConfigurationError, match="HTTPS_PROXY"):
        make_client(config.http, config.timeouts, providers=config.providers)


def test_tls_contexts(ca_file, tmp_path):
    config = load(http={"ca_bundle": ca_file})
    context = tls_context(config.http.egress)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] == 1  # the bundle instead of the system's roots
    folder = tmp_path / "cas"
    folder.mkdir()
    for i in range(2):
        trustme.CA().cert_pem.write_to_path(str(folder / f"ca{i}.crt"))
    (folder / "README").write_text("not a certificate")
    assert tls_context(load(http={"ca_bundle": str(folder)}).http.egress).cert_store_stats()["x509_ca"] == 2
    system = tls_context(load().http.egress)
    assert system.cert_store_stats()["x509_ca"] > 0  # the system's roots, or certifi's
    off = tls_context(load(verify=False).providers["corp"].egress)
    assert off.verify_mode == ssl.CERT_NONE and not off.check_hostname


def test_certifi_when_the_system_has_no_roots(monkeypatch, tmp_path):
    import certifi

    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "none.pem"))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    context = tls_context(load().http.egress)
    assert context.cert_store_stats()["x509_ca"] > 0
    reference = ssl.create_default_context(cafile=certifi.where())
    assert context.cert_store_stats()["x509_ca"] == reference.cert_store_stats()["x509_ca"]


def test_an_unreadable_bundle_is_a_configuration_error(tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    config = load(ca_bundle=str(bad))
    with pytest.raises(ConfigurationError, match="TLS settings cannot be loaded"):
        make_client(config.http, config.timeouts, providers=config.providers)


def test_a_proxy_from_a_named_environment_variable(monkeypatch):
    monkeypatch.setenv("EGRESS_PROXY_URL", "http://relay:s3cret-proxy@proxy.example.test:3128")
    config = load(proxy="env:EGRESS_PROXY_URL")
    proxy = EgressPolicy(config.http, config.providers, environ={}).route("corp", True, "llm.example.test", 443).proxy
    assert proxy == Proxy("proxy.example.test", 3128, "relay", "s3cret-proxy")
    assert proxy.authorization == "Basic cmVsYXk6czNjcmV0LXByb3h5"
    monkeypatch.delenv("EGRESS_PROXY_URL")
    with pytest.raises(ConfigurationError, match=r"providers\.corp\.proxy: environment variable EGRESS_PROXY_URL is not set"):
        load(proxy="env:EGRESS_PROXY_URL")
