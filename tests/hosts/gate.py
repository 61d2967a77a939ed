"""An OpenAI-compatible upstream on 127.0.0.1 whose answers to prompts containing ``hold``
wait until the test opens the gate: a request that holds a relay slot for as long as the test
needs, with no sleep.

    with GateUpstream() as gate:
        ...; gate.wait_for_requests(1); ...; gate.open()
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.conftest import make_config
from tests.hosts.servers import wait_for


class GateUpstream:
    def __init__(self) -> None:
        self.gate = threading.Event()
        self.prompts: list[str] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                prompt = body["messages"][-1]["content"]
                with owner._lock:
                    owner.prompts.append(prompt)
                if "hold" in prompt:
                    owner.gate.wait(60)
                answer = json.dumps({
                    "id": "chatcmpl-gate", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": f"Echo: {prompt}"}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
                }).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def wait_for_requests(self, count: int) -> list[str]:
        return wait_for(lambda: len(self.prompts) >= count and list(self.prompts), what=f"{count} upstream calls")

    def open(self) -> None:
        self.gate.set()

    def __enter__(self) -> GateUpstream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()


def gate_config(upstream_url: str, **overrides: Any) -> dict[str, Any]:
    """A relay config whose ``test-model`` goes to the gate at ``upstream_url``."""
    config = make_config(None, require_auth=False, **overrides)
    config["providers"] = {"up": {"kind": "openai_compatible", "base_url": f"{upstream_url}/v1", "api_key": "env:TEST_UPSTREAM_KEY"}}
    config["models"] = {"test-model": {"provider": "up", "upstream": "gpt-4o-mini"}}
    return config
