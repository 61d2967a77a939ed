"""Prompts and completions are not stored: not in the ledger (the SQLite file's bytes), not in
any log record, whatever the endpoint, streamed or not."""

from __future__ import annotations

import logging
import sqlite3
import uuid

import anthropic
import openai

from asgi_ai_relay import Relay, RelayMiddleware
from tests.conftest import make_config
from tests.fake_upstream import Fault
from tests.live import LiveServer

CLIENT_LOGGERS = ("openai", "anthropic", "httpx", "httpcore")


def test_prompts_and_completions_reach_neither_ledger_nor_logs(upstream, tmp_path, caplog):
    prompt, answer = f"PROMPT-{uuid.uuid4().hex}", f"ANSWER-{uuid.uuid4().hex}"
    config = make_config(upstream, storage={"ledger": f"sqlite:///{tmp_path / 'ledger.db'}"}, retry={"max_attempts": 1})
    config["providers"]["claude"] = {"kind": "anthropic", "base_url": f"{upstream.url}/v1", "api_key": "env:TEST_UPSTREAM_KEY"}
    config["models"]["claude"] = {"provider": "claude", "upstream": "claude-sonnet-4-5"}
    relay = Relay(config)
    caplog.set_level(logging.DEBUG)
    messages = [{"role": "system", "content": f"system {prompt}"}, {"role": "user", "content": prompt}]
    with LiveServer(RelayMiddleware(relay=relay)) as live:
        sdk = openai.OpenAI(base_url=f"{live.url}/ai/v1", api_key="unused", max_retries=0)
        upstream.script(Fault.reply(answer), Fault.reply(answer), Fault.reply(answer), Fault.reply(answer))
        whole = sdk.chat.completions.create(model="test-model", messages=messages, temperature=0)
        streamed = "".join(c.choices[0].delta.content or "" for c in sdk.chat.completions.create(model="test-model", messages=messages, stream=True) if c.choices)
        claude = anthropic.Anthropic(base_url=f"{live.url}/ai", api_key="unused", max_retries=0)
        message = claude.messages.create(model="claude", max_tokens=50, system=prompt, messages=[{"role": "user", "content": prompt}])
        failed = sdk.chat.completions.with_raw_response  # a refused request quotes nothing either
        try:
            failed.create(model="test-model", messages=[{"role": "user", "content": [{"type": f"x{prompt}"}]}])
        except openai.BadRequestError:
            pass
    assert whole.choices[0].message.content == answer and streamed == answer and message.content[0].text == answer
    assert sum(1 for r in upstream.requests if prompt in r.body.decode()) == 3  # it did pass through
    relay.ledger.close()
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        statuses = sorted(status for (status,) in db.execute("SELECT status FROM relay_usage"))
    assert statuses == [200, 200, 200, 400]  # the rows are there; the content is not
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    # The SDKs (the test's own clients) log their requests at debug level; the server side must not.
    server_side = [r for r in caplog.records if not r.name.startswith(CLIENT_LOGGERS)]
    assert any(r.name == "asgi_ai_relay" for r in server_side)
    for marker in (prompt, answer):
        assert marker.encode() not in stored
        assert marker.lower().encode() not in stored.lower()
        assert not [r for r in server_side if marker in r.getMessage()]
