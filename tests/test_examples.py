"""The example projects, each started with its one command, as a new user would."""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "example_projects"
CHAT = "/ai/v1/chat/completions"
HELLO = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "Hello"}]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Running:
    """A command in its own process group, up once its port accepts connections."""

    def __init__(self, args, cwd, **env):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Offline (no provider keys: the mock answers), and not this test run's Django settings.
        environment = {
            k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k != "DJANGO_SETTINGS_MODULE"
        }
        environment.update(PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'integrations'}", PORT=str(self.port), **env)
        self.proc = subprocess.Popen(
            [sys.executable, *args], cwd=cwd, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.output = b""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.output += line

    def __enter__(self):
        waited = threading.Event()
        for _ in range(600):  # up to 30 s on a busy machine
            if self.proc.poll() is not None:
                raise AssertionError(f"exited early:\n{self.output.decode()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                waited.wait(0.05)
        raise AssertionError(f"never listened:\n{self.output.decode()}")

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)  # Ctrl-C: the process exits cleanly
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._reader.join(timeout=5)

    def __exit__(self, *exc):
        self.stop()


def ledger_callers(path: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT caller, status FROM relay_usage ORDER BY id").fetchall()


def sse_text(response: httpx.Response) -> str:
    import json

    return "".join(
        json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
        for line in response.text.splitlines()
        if line.startswith("data: {") and json.loads(line[6:])["choices"]
    )


def test_fastapi_service(tmp_path):
    with Running([str(EXAMPLES / "fastapi_service" / "main.py")], tmp_path) as app:
        anonymous = httpx.post(app.url + CHAT, json=HELLO)
        assert anonymous.status_code == 200
        assert anonymous.json()["choices"][0]["message"]["content"].startswith("This is a mock reply from gpt-4.1")
        ada = httpx.post(app.url + CHAT, json={**HELLO, "stream": True}, headers={"authorization": "Bearer ada-token"})
        assert ada.status_code == 200 and sse_text(ada)
        summary = httpx.get(app.url + "/notes/summary", headers={"authorization": "Bearer grace-token"})
        assert summary.status_code == 200 and summary.json()["summary"]
        assert httpx.get(app.url + "/notes").json() == ["Buy milk", "Ship the relay"]
    assert f"{app.url}/ai/v1/chat/completions" in app.output.decode()
    assert ledger_callers(tmp_path / "relay-usage.db") == [("anonymous", 200), ("ada", 200), ("grace", 200)]


def test_flask_app(tmp_path):
    with Running([str(EXAMPLES / "flask_app" / "app.py")], tmp_path) as app:
        browser = httpx.Client(base_url=app.url)
        assert browser.get("/").status_code == 302  # the app's own login comes first
        assert browser.post(CHAT, json=HELLO).status_code == 401
        assert browser.post("/login", data={"username": "ada", "password": "ada-password"}).status_code == 302
        assert CHAT in browser.get("/").text  # the page that calls the relay
        streamed = browser.post(CHAT, json={**HELLO, "stream": True})
        assert streamed.status_code == 200 and sse_text(streamed).startswith("This is a mock reply")
    assert "log in as ada" in app.output.decode()
    assert ledger_callers(tmp_path / "flask-relay-usage.db") == [("anonymous", 401), ("ada", 200)]


@pytest.mark.parametrize("server", ["wsgi", "asgi"])
def test_django_site(tmp_path, server):
    args = [str(EXAMPLES / "django_site" / "manage.py"), "demo"] + (["--asgi"] if server == "asgi" else [])
    with Running(args, tmp_path, DJANGO_SITE_DATA=str(tmp_path), DEMO_RELAY_KEY="rk-demo") as site:
        browser = httpx.Client(base_url=site.url)
        assert browser.get("/").status_code == 302
        assert browser.post(CHAT, json=HELLO).status_code == 401
        form = browser.get("/login/").text
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)
        login = browser.post("/login/", data={"username": "ada", "password": "ada-password", "csrfmiddlewaretoken": token})
        assert login.status_code == 302
        assert CHAT in browser.get("/").text
        streamed = browser.post(CHAT, json={**HELLO, "stream": True})  # session cookie, no CSRF token
        assert streamed.status_code == 200 and sse_text(streamed).startswith("This is a mock reply")
        keyed = httpx.post(site.url + CHAT, json=HELLO, headers={"authorization": "Bearer rk-demo"})
        assert keyed.status_code == 200
    assert "log in as ada" in site.output.decode()
    assert ledger_callers(tmp_path / "relay-usage.db") == [("anonymous", 401), ("ada", 200), ("ada", 200)]
