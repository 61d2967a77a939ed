"""Property-based fuzzing of the relay's own OpenAPI document: for any generated input, valid
or not, the relay answers (within a bound) and never with a 5xx.

schemathesis generates requests from ``{prefix}/openapi.json`` (positive and negative cases);
the relay runs under uvicorn with the offline mock provider. Bounded: a fixed number of
examples per operation, each request with a timeout.
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, Phase, settings  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402

from asgi_ai_relay import Relay, RelayMiddleware  # noqa: E402
from tests.conftest import RELAY_KEY  # noqa: E402
from tests.live import LiveServer  # noqa: E402

CONFIG = {
    "require_auth": True,
    "api_keys": [{"key": RELAY_KEY, "caller": "fuzz", "admin": True}],
    "storage": {"ledger": "memory://"},
    "max_body_bytes": 256 * 1024,
}
EXAMPLES = 40
SEEN: dict[str, set[int]] = {}


def _schema():
    relay = Relay(CONFIG)
    import orjson

    schema = schemathesis.openapi.from_dict(orjson.loads(relay.openapi))
    schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
    return schema


schema = _schema()


@pytest.fixture(scope="module")
def live():
    relay = Relay(CONFIG)
    with LiveServer(RelayMiddleware(relay=relay)) as server:
        server.relay = relay
        yield server


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_5xx_and_no_hang(case, live):
    response = case.call(base_url=f"{live.url}/ai", headers={"authorization": f"Bearer {RELAY_KEY}"}, timeout=10)
    assert response.status_code < 500, (case.method, case.path, case.body, response.text[:300])
    assert response.headers.get("x-request-id")
    SEEN.setdefault(f"{case.method} {case.path}", set()).add(response.status_code)


def test_the_fuzz_reached_answers_and_refusals():
    """Runs after the fuzz (file order): it was not all 400s, nor all 200s."""
    if not SEEN:
        pytest.skip("the fuzz run did not run in this session")
    for operation in ("POST /v1/chat/completions", "POST /v1/messages"):
        assert 200 in SEEN[operation] and any(400 <= s < 500 for s in SEEN[operation]), (operation, SEEN[operation])
