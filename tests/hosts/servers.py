"""Host processes on a listening socket the test binds (so no other process can take the port),
each run under ``timeout`` in its own session, so it ends even if the test process dies.

    with Host("gunicorn-flask", config={...}, tmp=tmp_path) as host:
        host.url, host.rows()                     # its address, its SQLite ledger's rows
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from tests.hosts.apps import CONFIG_ENV

ROOT = Path(__file__).resolve().parents[2]
LIFETIME = 180  # seconds a host may live at most

COMMANDS = {
    "gunicorn-flask": ["-m", "gunicorn", "tests.hosts.apps:flask_app()"],
    "gunicorn-django": ["-m", "gunicorn", "tests.hosts.apps:django_wsgi"],
    "uvicorn-django": ["-m", "uvicorn", "tests.hosts.apps:django_asgi", "--lifespan", "off"],
    "uvicorn-fastapi": ["-m", "uvicorn", "--factory", "tests.hosts.apps:fastapi_app"],
}
GUNICORN = ["-w", "1", "-k", "gthread", "--threads", "8", "--graceful-timeout", "5", "--bind"]  # + fd://N


def _gunicorn_options() -> list[str]:
    """No control socket where gunicorn has one (a fixed path every gunicorn of the user shares)."""
    from gunicorn.config import KNOWN_SETTINGS

    return ["--no-control-socket"] if any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS) else []
UVICORN = ["--no-access-log", "--timeout-graceful-shutdown", "5", "--fd"]  # + N


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something true; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout}s")
        time.sleep(0.02)
    return value


class Host:
    """One host process serving the relay (see :data:`COMMANDS`), with a SQLite ledger in ``tmp``."""

    def __init__(self, kind: str, *, config: Mapping[str, Any], tmp: Path) -> None:
        self.kind = kind
        self.ledger = tmp / "ledger.sqlite3"
        config = {**config, "storage": {**config.get("storage", {}), "ledger": f"sqlite:///{self.ledger}"}}
        self.config_path = tmp / "relay.json"
        self.config_path.write_text(json.dumps(config))
        self.log = tmp / f"{kind}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> Host:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        self.url = "http://127.0.0.1:%d" % listener.getsockname()[1]
        fd = listener.fileno()
        if self.kind.startswith("gunicorn"):
            args = [*COMMANDS[self.kind], *_gunicorn_options(), *GUNICORN, f"fd://{fd}"]
        else:
            args = [*COMMANDS[self.kind], *UVICORN, str(fd)]
        env = {
            **os.environ, CONFIG_ENV: str(self.config_path), "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "integrations")]),
        }
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                ["timeout", "-k", "5", str(LIFETIME), sys.executable, *args], cwd=ROOT, env=env, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True, pass_fds=(fd,),
            )
        listener.close()  # the host holds its own copy
        wait_for(self._answers, 60, f"{self.kind} serving")
        return self

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.kind} exited with {self.process.returncode}:\n{self.output()}")
        try:
            httpx.get(f"{self.url}/ai/v1/models", timeout=5)
        except httpx.HTTPError:
            return False
        return True

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.process.pid, sig)
                self.process.wait(grace)
                return
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def rows(self) -> dict[str, tuple[int, str | None]]:
        """``request_id -> (status, error)`` of every row the host's ledger holds."""
        if not self.ledger.exists():
            return {}
        with sqlite3.connect(self.ledger, timeout=5) as db:
            try:
                found = db.execute("SELECT request_id, status, error_type FROM relay_usage").fetchall()
            except sqlite3.OperationalError:  # no table yet
                return {}
        return {request_id: (status, error) for request_id, status, error in found}

    def __enter__(self) -> Host:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
