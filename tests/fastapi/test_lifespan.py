"""The relay never breaks its host's lifespan: a relay that cannot start leaves the host
serving (and says so loudly), unless ``storage.ledger_required`` asks it to refuse."""

from __future__ import annotations

import dataclasses
import logging

import httpx
import pytest
from fastapi import FastAPI

from asgi_ai_relay import Relay, RelayMiddleware
from asgi_ai_relay.config import StorageConfig
from tests.conftest import make_config
from tests.live import LiveServer

UNOPENABLE = "sqlite:////proc/no-such-dir/ledger.db"  # /proc takes no new directories


def host_app(relay):
    started = []
    app = FastAPI(on_startup=[lambda: started.append(True)])

    @app.get("/host")
    async def host():
        return {"host": "ok"}

    app.add_middleware(RelayMiddleware, relay=relay)
    return app, started


def test_a_relay_that_cannot_start_leaves_the_host_serving(upstream, caplog):
    relay = Relay(make_config(upstream, storage={"ledger": UNOPENABLE}, require_auth=False))
    app, started = host_app(relay)
    with caplog.at_level(logging.ERROR, logger="asgi_ai_relay"), LiveServer(app, lifespan="on") as live:
        assert started == [True]  # the host's own start-up ran
        assert httpx.get(f"{live.url}/host").json() == {"host": "ok"}
        models = httpx.get(f"{live.url}/ai/v1/models")
        assert models.status_code == 200 and "test-model" in [m["id"] for m in models.json()["data"]]
    assert any("the relay failed to start" in r.getMessage() for r in caplog.records)


def test_relay_alone_completes_its_lifespan_when_it_cannot_start(upstream):
    relay = Relay(make_config(upstream, storage={"ledger": UNOPENABLE}, require_auth=False))
    with LiveServer(RelayMiddleware(relay=relay), lifespan="on") as live:
        assert httpx.get(f"{live.url}/ai/v1/models").status_code == 200


@pytest.mark.skipif("ledger_required" not in {f.name for f in dataclasses.fields(StorageConfig)},
                    reason="storage.ledger_required is not a setting yet")
def test_ledger_required_refuses_the_hosts_start_up(upstream):
    relay = Relay(make_config(upstream, storage={"ledger": UNOPENABLE, "ledger_required": True}))
    app, _ = host_app(relay)
    with pytest.raises(RuntimeError, match="did not start"), LiveServer(app, lifespan="on"):
        pass
