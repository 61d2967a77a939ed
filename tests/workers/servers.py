"""Real processes for the multi-worker tests: a private redis-server and relay hosts.

Every process runs under ``timeout`` (so it ends by itself even when the test process dies), in
its own session (so stopping it reaches every worker it forked), on a free loopback port.

    with RedisServer(tmp_path) as redis:                      # redis.url
        with Host("flask", workers=2, config={...}, tmp=tmp_path) as host:
            host.get("/whoami")                                # {"pid": ...}
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]

#: Seconds a started process may live at most (the test process may die without stopping it).
LIFETIME = 300

CONFIG_ENV = "RELAY_WORKER_CONFIG"

#: The command line of each host kind, after ``--bind``/``--workers`` are filled in.
KINDS = ("uvicorn-fastapi", "gunicorn-flask", "gunicorn-django")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(check: Any, what: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start within {timeout}s:\n{_tail(log)}")
        time.sleep(0.05)


def _tail(log: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(process: subprocess.Popen[bytes], grace: float = 10) -> None:
    """SIGTERM to the whole session, then SIGKILL when it has not ended within ``grace``."""
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _session_members(leader: int) -> list[int]:
    """Pids whose session is ``leader``'s (everything a started process forked)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[3]) == leader and fields[0] != "Z":  # fields[3]: session id
            members.append(int(entry))
    return members


class RedisServer:
    """A private ``redis-server``: its own port and directory, no persistence."""

    def __init__(self, tmp: Path) -> None:
        self.dir = tmp / f"redis-{os.urandom(4).hex()}"
        self.dir.mkdir()
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = self.dir / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        command = [
            "timeout", "-k", "5", str(LIFETIME), "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.dir), "--save", "", "--appendonly", "no", "--logfile", str(self.log),
        ]
        self.process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for(self._answers, "redis-server", self.process, self.log, timeout=20)
        return self

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def cli(self, *args: str) -> str:
        return subprocess.run(
            ["redis-cli", "-p", str(self.port), *args], check=True, capture_output=True, text=True, timeout=10
        ).stdout

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _command(kind: str, port: int, workers: int, tmp: Path) -> list[str]:
    bind = f"127.0.0.1:{port}"
    if kind == "uvicorn-fastapi":
        return [
            sys.executable, "-m", "uvicorn", "tests.workers.hosts:fastapi_app", "--factory", "--host", "127.0.0.1",
            "--port", str(port), "--workers", str(workers), "--no-access-log", "--timeout-graceful-shutdown", "5",
        ]
    apps = {"gunicorn-flask": "tests.workers.hosts:flask_app()", "gunicorn-django": "tests.workers.hosts:django_app()"}
    return [
        sys.executable, "-m", "gunicorn", apps[kind], "--bind", bind, "-w", str(workers), "-k", "gthread",
        "--threads", "8", "--graceful-timeout", "5", "--worker-tmp-dir", str(tmp),
        "--config", "python:tests.workers.gunicorn_conf",
    ]


class Host:
    """A relay host run as real worker processes (see :data:`KINDS`), configured by a JSON file.

    :param env: extra environment (e.g. ``PROMETHEUS_MULTIPROC_DIR``).
    """

    def __init__(self, kind: str, *, workers: int, config: Mapping[str, Any], tmp: Path, env: Mapping[str, str] | None = None) -> None:
        self.kind, self.workers = kind, workers
        self.dir = tmp / f"{kind}-{workers}-{os.urandom(4).hex()}"
        self.dir.mkdir()
        self.config_path = self.dir / "relay.json"
        self.config_path.write_text(json.dumps(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.dir / "host.log"
        self.env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def start(self) -> Host:
        env = {
            **os.environ, **self.env, CONFIG_ENV: str(self.config_path), "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "integrations")]),
            "DJANGO_SETTINGS_MODULE": "tests.workers.django_settings", "RELAY_WORKER_DIR": str(self.dir),
        }
        command = ["timeout", "-k", "5", str(LIFETIME), *_command(self.kind, self.port, self.workers, self.dir)]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
        _wait_for(self._ready, f"{self.kind} host", self.process, self.log)
        return self

    def _ready(self) -> bool:
        """Every worker answers: ``workers`` distinct pids among the session's processes serve."""
        try:
            if self.client.get("/whoami", timeout=2).status_code != 200:
                return False
        except httpx.HTTPError:
            return False
        return len(self.worker_pids()) >= self.workers

    def worker_pids(self) -> set[int]:
        """The pids of the workers now running (the host's processes that import the app)."""
        assert self.process is not None
        ready = set()
        for pid in _session_members(self.process.pid):
            if (self.dir / f"worker-{pid}.ready").exists():
                ready.add(pid)
        return ready

    def reconnect(self) -> None:
        """A new client: pooled connections to a worker that died are of no use."""
        self.client.close()
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.post(path, **kwargs)

    def output(self) -> str:
        return _tail(self.log, 200)

    def stop(self) -> None:
        self.client.close()
        if self.process is not None:
            _stop(self.process)

    def __enter__(self) -> Host:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
