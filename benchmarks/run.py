#!/usr/bin/env python
"""Benchmark harness for asgi-ai-relay.  One command:

    .venv/bin/python benchmarks/run.py            # full run (~10 min)
    .venv/bin/python benchmarks/run.py --quick    # smoke run (< 1 min for direct,passthrough)

It starts a fast fake OpenAI upstream, one uvicorn worker per scenario, drives
load with wrk (or benchmarks/loadgen.py), prints a table and writes
benchmarks/results/latest.json and latest.csv.  All traffic goes to 127.0.0.1;
every process it starts is stopped on exit, error or Ctrl-C.  See README.md.
"""

from __future__ import annotations

import argparse
import atexit
import csv
import datetime as _dt
import importlib.metadata as md
import importlib.util
import json
import os
import platform
import re
import secrets
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
HOST = "127.0.0.1"  # the only address this harness ever sends traffic to
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# "__N__" becomes a run id and a per-request counter in the load generators, so every request is
# distinct, within a run and across the runs against one server, and the relay's cache (on by
# default for temperature 0) misses; the cache-hit scenario sends the same body every time.
CHAT_BODY = {"model": "bench-model", "messages": [{"role": "user", "content": "hello __N__"}], "temperature": 0}
STREAM_BODY = dict(CHAT_BODY, stream=True, stream_options={"include_usage": True})
FIXED_CHAT_BODY = dict(CHAT_BODY, messages=[{"role": "user", "content": "hello"}])
FIXED_STREAM_BODY = dict(STREAM_BODY, messages=FIXED_CHAT_BODY["messages"])


# --------------------------------------------------------------------------- scenarios
@dataclass
class Scenario:
    """One server under test.  Adding a scenario = adding one entry to SCENARIOS."""

    name: str
    title: str
    kind: str  # "direct" (the fake upstream itself) | "uvicorn" | "litellm"
    app: str = ""  # uvicorn "module:attr"
    app_dir: str = ""  # relative to the repo root
    prefix: str = ""  # URL prefix in front of /v1/chat/completions
    relay_toml: bool = False  # write a relay TOML and point AI_RELAY_CONFIG at it
    extra_toml: str = ""  # appended to the relay TOML (cache / limits sections go here)
    env: dict = field(default_factory=dict)  # "{upstream}" is replaced by the upstream base URL
    requires: tuple = ()  # repo-relative files that must exist, else "skipped"
    requires_modules: tuple = ()  # importable modules needed by the server, else "skipped"
    opt_in: bool = False  # only run when asked for (litellm: slow install)
    bearer: str = ""  # Authorization: Bearer token the clients send (generated per run when "auto")
    fixed_body: bool = False  # the same body for every request (the cache-hit scenario)


# Features on, with limits too generous to bite: the benchmark measures their cost, not their effect.
RELAY_DEFAULT_FEATURES = """\
[limits.global]
rpm = 100000000
tpm = 10000000000
burst = 1000000
[limits.caller]
rpm = 100000000
[queue]
max_in_flight = 10000
max_queue = 10000
"""

def relay_scenario(name: str, about: str, **changes) -> Scenario:
    """The example service with the relay mounted, on the generated config (see RELAY_TOML)."""
    fields = dict(
        app="main:app", app_dir="example_projects/fastapi_service", prefix="/ai", relay_toml=True,
        extra_toml=RELAY_DEFAULT_FEATURES, requires=("example_projects/fastapi_service/main.py",),
    )
    return Scenario(name, about, "uvicorn", **{**fields, **changes})


SCENARIOS = [
    Scenario("direct", "load generator -> fake upstream", "direct"),
    Scenario(
        "passthrough",
        "bare Starlette + httpx pass-through",
        "uvicorn",
        app="passthrough:app",
        app_dir="benchmarks",
        env={"PASSTHROUGH_UPSTREAM": "{upstream}"},
    ),
    Scenario(
        "passthrough-aiohttp",
        "the same pass-through with one aiohttp.ClientSession",
        "uvicorn",
        app="passthrough:app",
        app_dir="benchmarks",
        env={"PASSTHROUGH_UPSTREAM": "{upstream}", "PASSTHROUGH_CLIENT": "aiohttp"},
        requires_modules=("aiohttp",),
    ),
    relay_scenario("relay", "example_projects/fastapi_service, relay at /ai (ledger, limits, cache miss)"),
    relay_scenario("relay-cache", "the same relay, every request a cache hit", fixed_body=True),
    relay_scenario(
        "relay-nocache",
        "the same relay with the response cache off (opt-in: tells the cache's fill from the rest in the RSS run)",
        extra_toml=RELAY_DEFAULT_FEATURES + '[cache]\nmode = "off"\n',
        opt_in=True,
    ),
    Scenario("litellm", "LiteLLM proxy (own venv), same upstream", "litellm", opt_in=True, bearer="auto"),
]

RELAY_TOML = """\
prefix = "/ai"

[providers.bench]
kind = "openai_compatible"
base_url = "{upstream}"
api_key = "env:BENCH_UPSTREAM_KEY"

[models."bench-model"]
provider = "bench"
upstream = "bench-upstream"
price = {{ input = 2.5, output = 8.0 }}

[storage]
ledger = "sqlite:///{tmpdir}/bench-ledger.db"
"""


# --------------------------------------------------------------------------- workloads
@dataclass
class Workload:
    name: str
    kind: str  # "closed" (throughput/latency) | "rate" (fixed rate) | "ttfb" (stream, 1 conn)
    connections: int = 1
    stream: bool = False
    rate: float = 0.0


def make_workloads(args) -> list[Workload]:
    wl = [Workload(f"chat c{c}", "closed", connections=c) for c in args.concurrency]
    if args.stream_concurrency > 0:
        wl.append(Workload(f"stream c{args.stream_concurrency}", "closed", args.stream_concurrency, stream=True))
    if args.rate > 0:
        wl.append(Workload(f"chat @{args.rate:g}/s", "rate", connections=64, rate=args.rate))
    wl.append(Workload("stream ttfb c1", "ttfb", connections=1, stream=True))
    return wl


# --------------------------------------------------------------------------- processes
_PROCS: list[subprocess.Popen] = []


def _kill(p: subprocess.Popen, grace: float = 5.0) -> None:
    if p.poll() is not None:
        return
    try:
        os.killpg(p.pid, signal.SIGTERM)  # each child runs in its own session/group
    except (ProcessLookupError, PermissionError):
        return
    try:
        p.wait(grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(5)


def cleanup() -> None:
    while _PROCS:
        _kill(_PROCS.pop())


def spawn(cmd, cpus: str | None, **kw) -> subprocess.Popen:
    if cpus:
        cmd = ["taskset", "-c", cpus] + list(cmd)
    p = subprocess.Popen(cmd, start_new_session=True, **kw)
    _PROCS.append(p)
    return p


def run_bounded(cmd, cpus: str | None, timeout: float, env=None) -> str:
    """Run a short-lived tool (wrk/loadgen) with a hard timeout; return stdout."""
    p = spawn(cmd, cpus, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(p, 1)
        raise RuntimeError(f"timed out after {timeout:.0f}s: {' '.join(map(str, cmd))}")
    finally:
        if p in _PROCS:
            _PROCS.remove(p)
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited {p.returncode}: {err.decode(errors='replace')[-500:]}")
    return out.decode()


def _on_term(signum, frame):
    raise KeyboardInterrupt


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def proc_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


def cpu_busy_snapshot() -> dict[str, tuple[int, int]]:
    snap = {}
    with open("/proc/stat") as f:
        for line in f:
            if re.match(r"cpu\d+ ", line):
                name, *vals = line.split()
                vals = list(map(int, vals))
                idle = vals[3] + vals[4]
                snap[name] = (sum(vals[:8]), idle)
    return snap


def cpu_busy_pct(a, b) -> dict[str, float]:
    out = {}
    for k in b:
        tot, idle = b[k][0] - a[k][0], b[k][1] - a[k][1]
        out[k] = round(100.0 * (tot - idle) / tot, 1) if tot > 0 else 0.0
    return out


# --------------------------------------------------------------------------- servers
class Server:
    def __init__(self, sc, port, proc, pid, log, bearer: str = ""):
        self.sc, self.port, self.proc, self.pid, self.log, self.bearer = sc, port, proc, pid, log, bearer
        self.rss_start_mb = proc_rss_mb(pid)

    def path(self) -> str:
        return self.sc.prefix + "/v1/chat/completions"


def log_tail(log: Path | None, n: int = 15) -> str:
    if not log or not log.exists():
        return ""
    lines = log.read_text(errors="replace").splitlines()
    return "\n".join("      | " + l for l in lines[-n:])


def wait_port(port: int, proc: subprocess.Popen, timeout: float) -> None:
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} during startup")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server did not listen on {HOST}:{port} within {timeout:.0f}s")


def http(port: int, method: str, path: str, body: dict | None = None, timeout: float = 10.0, bearer: str = "") -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://{HOST}:{port}{path}", data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if bearer:
        req.add_header("Authorization", f"Bearer {bearer}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def preflight(srv: Server) -> None:
    """One whole and one streamed request must come back right, or the scenario is skipped."""
    st, b = http(srv.port, "POST", srv.path(), CHAT_BODY, bearer=srv.bearer)
    if st != 200:
        raise RuntimeError(f"POST {srv.path()} -> {st}: {b[:300]!r}")
    try:
        obj = json.loads(b)
        obj["choices"][0]["message"]["content"]
    except Exception:
        raise RuntimeError(f"POST {srv.path()} returned no chat.completion: {b[:300]!r}")
    st, b = http(srv.port, "POST", srv.path(), STREAM_BODY, bearer=srv.bearer)
    if st != 200 or b"data: [DONE]" not in b or b'"content"' not in b:
        raise RuntimeError(f"stream POST {srv.path()} -> {st}: {b[:300]!r}")


def start_upstream(cpus: str | None, tmp: Path) -> tuple[subprocess.Popen, int]:
    log = tmp / "fake_upstream.log"
    p = spawn(
        [sys.executable, str(BENCH / "fake_upstream.py"), "--port", "0"],
        cpus,
        stdout=subprocess.PIPE,
        stderr=open(log, "wb"),
        cwd=ROOT,
    )
    t_end = time.monotonic() + 15
    buf = b""
    while time.monotonic() < t_end and b"\n" not in buf:
        r, _, _ = select.select([p.stdout], [], [], 0.2)
        if r:
            chunk = os.read(p.stdout.fileno(), 100)
            if not chunk:
                break
            buf += chunk
    m = re.match(rb"READY (\d+)", buf)
    if not m:
        raise RuntimeError("fake upstream did not start:\n" + log_tail(log))
    return p, int(m.group(1))


def litellm_venv(args) -> Path:
    venv = Path(args.litellm_venv)
    exe = venv / "bin" / "litellm"
    if exe.exists():
        return exe
    print(f"  installing litellm[proxy] into {venv} (timeout {args.litellm_install_timeout}s) ...", flush=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    run_bounded([sys.executable, "-m", "venv", str(venv)], None, 120)
    run_bounded(
        [str(venv / "bin" / "pip"), "install", "-q", "litellm[proxy]"], None, args.litellm_install_timeout
    )
    if not exe.exists():
        raise RuntimeError("litellm executable missing after install")
    return exe


def start_server(sc: Scenario, args, upstream_port: int, upstream_proc, tmp: Path) -> Server:
    upstream = f"http://{HOST}:{upstream_port}/v1"
    if sc.kind == "direct":
        return Server(sc, upstream_port, None, upstream_proc.pid, None)
    for req in sc.requires:
        if not (ROOT / req).exists():
            raise FileNotFoundError(f"{req} does not exist yet")
    for mod in sc.requires_modules:
        if importlib.util.find_spec(mod) is None:
            raise ModuleNotFoundError(f"python module {mod!r} is not installed")
    port = free_port()
    log = tmp / f"{sc.name}.log"
    bearer = ("sk-bench-" + secrets.token_hex(16)) if sc.bearer == "auto" else sc.bearer
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env["PYTHONPATH"] = str(ROOT)
    for k, v in sc.env.items():
        env[k] = v.replace("{upstream}", upstream)
    startup_timeout = 30.0
    if sc.kind == "uvicorn":
        if sc.relay_toml:
            cfg = tmp / f"{sc.name}.toml"
            cfg.write_text(RELAY_TOML.format(upstream=upstream, tmpdir=tmp / sc.name) + "\n" + sc.extra_toml)
            (tmp / sc.name).mkdir(exist_ok=True)
            env["AI_RELAY_CONFIG"] = str(cfg)
            env["BENCH_UPSTREAM_KEY"] = "bench-dummy-key"
        cmd = [
            sys.executable, "-m", "uvicorn", sc.app, "--app-dir", str(ROOT / sc.app_dir),
            "--host", HOST, "--port", str(port),
            "--loop", args.server_loop, "--http", "httptools", "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
    elif sc.kind == "litellm":
        exe = litellm_venv(args)
        cfg = tmp / "litellm.yaml"
        cfg.write_text(
            "model_list:\n"
            "  - model_name: bench-model\n"
            "    litellm_params:\n"
            "      model: openai/bench-upstream\n"
            f"      api_base: {upstream}\n"
            "      api_key: bench-dummy-key\n"
            "litellm_settings:\n"
            "  telemetry: false\n"
        )
        # Keep LiteLLM off the network: local cost map, no telemetry.
        env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_TELEMETRY="False", LITELLM_LOG="ERROR")
        env["LITELLM_MASTER_KEY"] = bearer  # it refuses to start without one; clients send it
        env.pop("PYTHONPATH", None)
        cmd = [str(exe), "--config", str(cfg), "--host", HOST, "--port", str(port), "--num_workers", "1"]
        startup_timeout = 120.0
    else:
        raise ValueError(sc.kind)
    p = spawn(cmd, args.server_cpus, stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        wait_port(port, p, startup_timeout)
    except RuntimeError as e:
        raise RuntimeError(f"{e}\n{log_tail(log)}")
    time.sleep(0.3)
    srv = Server(sc, port, p, p.pid, log, bearer)
    try:
        preflight(srv)
    except Exception as e:
        raise RuntimeError(f"preflight failed: {e}\n{log_tail(log)}")
    return srv


def stop_server(srv: Server) -> None:
    if srv.proc is not None:
        _kill(srv.proc)
        if srv.proc in _PROCS:
            _PROCS.remove(srv.proc)


# --------------------------------------------------------------------------- load
class Loader:
    def __init__(self, args, tmp: Path):
        self.args = args
        self.cpus = args.client_cpus
        self.body_files = {}
        bodies = (("chat", CHAT_BODY), ("stream", STREAM_BODY), ("chat-fixed", FIXED_CHAT_BODY), ("stream-fixed", FIXED_STREAM_BODY))
        for name, body in bodies:
            f = tmp / f"{name}.json"
            f.write_text(json.dumps(body))
            self.body_files[name] = f
        self.use_wrk = args.loadgen in ("auto", "wrk") and ensure_wrk(args.loadgen == "wrk")

    def _loadgen(self, port, path, body, extra, timeout, bearer="") -> dict:
        cmd = [sys.executable, str(BENCH / "loadgen.py"), "--port", str(port), "--path", path, "--body-file", str(body)]
        if bearer:
            cmd += ["--bearer", bearer]
        out = run_bounded(cmd + extra, self.cpus, timeout)
        return json.loads(out.strip().splitlines()[-1])

    def _wrk(self, port, path, body, conns, duration, bearer="") -> dict:
        cmd = [
            "wrk", "-t1", f"-c{conns}", f"-d{max(1, round(duration))}s", "--timeout", "30s",
            "-s", str(BENCH / "wrk_post.lua"), f"http://{HOST}:{port}{path}",
        ]  # fmt: skip
        run_id = secrets.token_hex(6)  # each wrk run's bodies differ from every earlier run's
        env = dict(os.environ, BENCH_BODY_FILE=str(body), BENCH_BEARER=bearer, BENCH_RUN_ID=run_id)
        out = run_bounded(cmd, self.cpus, duration + 60, env=env)
        for line in out.splitlines():
            if line.startswith("BENCHJSON "):
                r = json.loads(line[len("BENCHJSON ") :])
                r["rps"] = r["requests"] / r["duration_s"] if r["duration_s"] else 0.0
                return r
        raise RuntimeError("wrk printed no summary:\n" + out[-500:])

    def run(self, wl: Workload, port: int, path: str, duration: float, bearer: str = "", fixed: bool = False) -> dict:
        body = self.body_files[("stream" if wl.stream else "chat") + ("-fixed" if fixed else "")]
        if wl.kind == "closed" and self.use_wrk:
            return self._wrk(port, path, body, wl.connections, duration, bearer)
        if wl.kind == "rate":
            extra = ["--mode", "rate", "--rate", str(wl.rate), "--duration", str(duration)]
            extra += ["--max-connections", str(wl.connections)]
        else:
            extra = ["--mode", "closed", "--connections", str(wl.connections), "--duration", str(duration)]
        return self._loadgen(port, path, body, extra, duration + 60, bearer)

    def count(self, port: int, path: str, n: int, conns: int, max_s: float, bearer: str = "", fixed: bool = False) -> dict:
        extra = ["--mode", "closed", "--connections", str(conns), "--requests", str(n), "--duration", str(max_s)]
        return self._loadgen(port, path, self.body_files["chat-fixed" if fixed else "chat"], extra, max_s + 60, bearer)


def ensure_wrk(required: bool) -> bool:
    if shutil.which("wrk"):
        return True
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk not found: installing it with apt-get ...", flush=True)
        try:
            for cmd in (["apt-get", "install", "-y", "-q", "wrk"],):
                r = subprocess.run(cmd, capture_output=True, timeout=300)
                if r.returncode != 0:  # package lists may be missing: update once, retry
                    subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=300)
                    subprocess.run(cmd, capture_output=True, timeout=300)
        except (subprocess.TimeoutExpired, OSError) as e:
            print(f"  apt-get failed: {e}")
    if shutil.which("wrk"):
        return True
    if required:
        raise SystemExit("--loadgen wrk given but wrk is not available")
    print("wrk unavailable: using benchmarks/loadgen.py for every workload")
    return False


# --------------------------------------------------------------------------- measurement
def measure(loader: Loader, srv: Server, wl: Workload, args, upstream_pid: int) -> dict:
    path = srv.path()
    if args.warmup > 0:
        loader.run(wl, srv.port, path, args.warmup, srv.bearer, srv.sc.fixed_body)
    cpu0 = proc_cpu_s(srv.pid)
    up0 = proc_cpu_s(upstream_pid)
    busy0 = cpu_busy_snapshot()
    r = loader.run(wl, srv.port, path, args.duration, srv.bearer, srv.sc.fixed_body)
    busy = cpu_busy_pct(busy0, cpu_busy_snapshot())
    cpu = proc_cpu_s(srv.pid) - cpu0
    up = proc_cpu_s(upstream_pid) - up0
    n = r["requests"]
    r["server_cpu_us_per_req"] = (cpu / n * 1e6) if n else None
    r["server_cpu_pct"] = 100.0 * cpu / r["duration_s"] if r["duration_s"] else None
    r["upstream_cpu_pct"] = 100.0 * up / r["duration_s"] if r["duration_s"] else None
    r["cpu_busy_pct"] = busy
    # Busy time on the server's core not spent by the server: other processes (noise).
    if srv.sc.kind != "direct" and args.server_cpus and args.server_cpus.isdigit() and r["server_cpu_pct"] is not None:
        r["other_on_server_cpu_pct"] = max(0.0, busy.get(f"cpu{args.server_cpus}", 0.0) - r["server_cpu_pct"])
    return r


def rss_phase(loader: Loader, srv: Server, n_total: int) -> dict:
    path = srv.path()
    out = {"rss_start_mb": round(srv.rss_start_mb, 1)}
    first = min(1000, n_total)
    r1 = loader.count(srv.port, path, first, 16, 120, srv.bearer, srv.sc.fixed_body)
    out["rss_after_1k_mb"] = round(proc_rss_mb(srv.pid), 1)
    done = r1["requests"]
    errors = r1["errors"] + r1["non2xx"]
    # Two halves, so a bounded structure filling (the response cache) can be told from a leak:
    # a leak keeps growing in the second half, a bound does not.
    half = (n_total - first) // 2
    for key, count in (("rss_after_half_mb", half), ("rss_after_n_mb", n_total - first - half)):
        if count > 0:
            max_s = min(3600.0, max(60.0, count / 300.0))  # bounded in time as well as count
            r = loader.count(srv.port, path, count, 16, max_s, srv.bearer, srv.sc.fixed_body)
            done += r["requests"]
            errors += r["errors"] + r["non2xx"]
        out[key] = round(proc_rss_mb(srv.pid), 1)
    out["requests"] = done
    out["errors"] = errors
    return out


def med(values):
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def summarize(rounds: list[dict]) -> dict:
    errs = sum((r.get("errors") or 0) + (r.get("non2xx") or 0) for r in rounds)
    lat = lambda k: med([r["latency_ms"][k] for r in rounds])  # noqa: E731
    s = {
        "rounds": len(rounds),
        "rps": med([r["rps"] for r in rounds]),
        "p50_ms": lat("p50"),
        "p90_ms": lat("p90"),
        "p99_ms": lat("p99"),
        "errors": errs,
        "server_cpu_us_per_req": med([r.get("server_cpu_us_per_req") for r in rounds]),
        "server_cpu_pct": med([r.get("server_cpu_pct") for r in rounds]),
        "upstream_cpu_pct": med([r.get("upstream_cpu_pct") for r in rounds]),
        "other_on_server_cpu_pct": med([r.get("other_on_server_cpu_pct") for r in rounds]),
    }
    if rounds and "ttfb_ms" in rounds[0]:
        s["ttfb_p50_ms"] = med([r["ttfb_ms"]["p50"] for r in rounds])
        s["ttfb_p99_ms"] = med([r["ttfb_ms"]["p99"] for r in rounds])
    return s


# --------------------------------------------------------------------------- report
def fmt(v, spec=".2f", dash="-"):
    if v is None:
        return dash
    return format(v, spec)


def signed(v, spec="+.2f"):
    return "-" if v is None else format(v, spec)


def print_table(headers, rows) -> None:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(str(h).rjust(w) if i else str(h).ljust(w) for i, (h, w) in enumerate(zip(headers, widths)))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths))))


def build_rows(results: dict, workloads: list[Workload], scenario_names: list[str]) -> list[dict]:
    rows = []
    for wl in workloads:
        base = results.get(("direct", wl.name))
        floor = results.get(("passthrough", wl.name))
        for name in scenario_names:
            s = results.get((name, wl.name))
            if s is None:
                continue
            row = {"workload": wl.name, "scenario": name, **s}
            if base and s is not base:
                key = "ttfb" if wl.kind == "ttfb" else None
                a50 = (s["ttfb_p50_ms"] - base["ttfb_p50_ms"]) if key and s.get("ttfb_p50_ms") is not None else None
                a99 = (s["ttfb_p99_ms"] - base["ttfb_p99_ms"]) if key and s.get("ttfb_p99_ms") is not None else None
                row["added_ttfb_p50_ms"], row["added_ttfb_p99_ms"] = a50, a99
                row["added_p50_ms"] = s["p50_ms"] - base["p50_ms"] if s["p50_ms"] is not None else None
                row["added_p99_ms"] = s["p99_ms"] - base["p99_ms"] if s["p99_ms"] is not None else None
            if floor and floor["rps"] and wl.kind == "closed":
                row["pct_of_passthrough"] = 100.0 * s["rps"] / floor["rps"]
            rows.append(row)
    return rows


def report(rows, workloads, rss, skipped, meta) -> None:
    print()
    print("=" * 100)
    print(f"asgi-ai-relay benchmark  {meta['date']}  {meta['cpu_model']} x{meta['cores']}  "
          f"rounds={meta['settings']['rounds']} duration={meta['settings']['duration_s']}s "
          f"load={meta['settings']['load_generator']} loop={meta['settings'].get('server_loop', 'uvloop')}")  # fmt: skip
    print("Figures are medians over rounds.  added = scenario minus direct.  %pt = throughput vs bare pass-through.")
    print("cpu/req = server process CPU time (utime+stime) per request.  up% = fake upstream CPU use.")
    print("noise% = busy time on the server's CPU not spent by the server (other processes): should be ~0.")
    if meta.get("busy_before"):
        print(f"WARNING: the machine was not idle before the run ({meta['busy_before']}): figures are noisy.")
    print("=" * 100)
    closed = [r for r in rows if any(w.name == r["workload"] and w.kind == "closed" for w in workloads)]
    if closed:
        print("\nThroughput and latency (closed loop, N connections)")
        print_table(
            ["workload", "scenario", "req/s", "p50 ms", "p90 ms", "p99 ms", "+p50 ms", "+p99 ms", "%pt", "cpu/req us", "up%", "noise%", "err"],
            [
                [r["workload"], r["scenario"], fmt(r["rps"], ".0f"), fmt(r["p50_ms"], ".3f"), fmt(r["p90_ms"], ".3f"),
                 fmt(r["p99_ms"], ".3f"), signed(r.get("added_p50_ms"), "+.3f"), signed(r.get("added_p99_ms"), "+.3f"),
                 fmt(r.get("pct_of_passthrough"), ".0f"), fmt(r["server_cpu_us_per_req"], ".0f"),
                 fmt(r["upstream_cpu_pct"], ".0f"), fmt(r.get("other_on_server_cpu_pct"), ".0f"), r["errors"]]
                for r in closed
            ],
        )  # fmt: skip
    rate = [r for r in rows if any(w.name == r["workload"] and w.kind == "rate" for w in workloads)]
    if rate:
        print("\nFixed rate (open loop, benchmarks/loadgen.py; latency counted from the scheduled send time)")
        print_table(
            ["workload", "scenario", "achieved/s", "p50 ms", "p90 ms", "p99 ms", "+p50 ms", "+p99 ms", "cpu/req us", "srv cpu%", "noise%", "err"],
            [
                [r["workload"], r["scenario"], fmt(r["rps"], ".0f"), fmt(r["p50_ms"], ".3f"), fmt(r["p90_ms"], ".3f"),
                 fmt(r["p99_ms"], ".3f"), signed(r.get("added_p50_ms"), "+.3f"), signed(r.get("added_p99_ms"), "+.3f"),
                 fmt(r["server_cpu_us_per_req"], ".0f"), fmt(r["server_cpu_pct"], ".0f"),
                 fmt(r.get("other_on_server_cpu_pct"), ".0f"), r["errors"]]
                for r in rate
            ],
        )  # fmt: skip
    ttfb = [r for r in rows if any(w.name == r["workload"] and w.kind == "ttfb" for w in workloads)]
    if ttfb:
        print("\nStreaming, 1 connection: time to first body byte (TTFB) and to the end of the stream")
        print_table(
            ["workload", "scenario", "ttfb p50", "ttfb p99", "+ttfb p50", "+ttfb p99", "total p50", "total p99", "streams/s", "err"],
            [
                [r["workload"], r["scenario"], fmt(r.get("ttfb_p50_ms"), ".3f"), fmt(r.get("ttfb_p99_ms"), ".3f"),
                 signed(r.get("added_ttfb_p50_ms"), "+.3f"), signed(r.get("added_ttfb_p99_ms"), "+.3f"),
                 fmt(r["p50_ms"], ".3f"), fmt(r["p99_ms"], ".3f"), fmt(r["rps"], ".0f"), r["errors"]]
                for r in ttfb
            ],
        )  # fmt: skip
    if rss:
        print("\nServer RSS (MB): at start, after the first 1,000 requests, after half of the rest and after N (chat, 16 connections)")
        print_table(
            ["scenario", "start", "after 1k", "after N/2", "after N", "N", "growth 1k->N", "growth N/2->N", "err"],
            [
                [name, fmt(v["rss_start_mb"], ".1f"), fmt(v["rss_after_1k_mb"], ".1f"), fmt(v.get("rss_after_half_mb"), ".1f"),
                 fmt(v["rss_after_n_mb"], ".1f"), v["requests"], signed(v["rss_after_n_mb"] - v["rss_after_1k_mb"], "+.1f"),
                 signed(v["rss_after_n_mb"] - v.get("rss_after_half_mb", v["rss_after_n_mb"]), "+.1f"), v["errors"]]
                for name, v in rss.items()
            ],
        )  # fmt: skip
    ceiling = meta.get("fake_upstream_ceiling_rps")
    if ceiling:
        st = meta["settings"]
        print(f"\nFake upstream ceiling: {ceiling:.0f} req/s (direct, highest concurrency; load generator on CPU"
              f" {st['client_cpus'] or 'any'}, fake upstream on CPU {st['upstream_cpus'] or 'any'})")  # fmt: skip
    for name, why in skipped.items():
        print(f"skipped: {name}: {why}")


def versions() -> dict:
    v = {"python": platform.python_version()}
    for pkg in ("uvicorn", "httpx", "starlette", "fastapi", "uvloop", "httptools", "orjson", "aiohttp", "asgi-ai-relay"):
        try:
            v[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            v[pkg] = None
    if shutil.which("wrk"):
        r = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
        v["wrk"] = (r.stdout or r.stderr).split("\n")[0].strip()
    return v


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_rev() -> str | None:
    try:
        r = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)
        return r.stdout.strip() or None
    except Exception:
        return None


def write_results(out_dir: Path, meta, rows, rss, raw, skipped) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {"meta": meta, "summary": rows, "rss": rss, "skipped": skipped, "raw": raw}
    tmp = out_dir / "latest.json.tmp"
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    tmp.replace(out_dir / "latest.json")
    cols = [
        "workload", "scenario", "rounds", "rps", "p50_ms", "p90_ms", "p99_ms", "added_p50_ms", "added_p99_ms",
        "pct_of_passthrough", "ttfb_p50_ms", "ttfb_p99_ms", "added_ttfb_p50_ms", "added_ttfb_p99_ms",
        "server_cpu_us_per_req", "server_cpu_pct", "upstream_cpu_pct", "other_on_server_cpu_pct", "errors",
    ]  # fmt: skip
    with open(out_dir / "latest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols + ["rss_start_mb", "rss_after_1k_mb", "rss_after_half_mb", "rss_after_n_mb", "rss_requests"])
        for r in rows:
            x = rss.get(r["scenario"], {})
            w.writerow(
                [("" if r.get(c) is None else (round(r[c], 4) if isinstance(r[c], float) else r[c])) for c in cols]
                + [x.get("rss_start_mb", ""), x.get("rss_after_1k_mb", ""), x.get("rss_after_half_mb", ""), x.get("rss_after_n_mb", ""), x.get("requests", "")]
            )


# --------------------------------------------------------------------------- main
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short smoke run: 1 round, 2 s windows, small RSS run")
    ap.add_argument("--scenarios", default=None, help="comma list (default: all that are not opt-in): "
                    + ",".join(s.name for s in SCENARIOS))  # fmt: skip
    ap.add_argument("--with-litellm", action="store_true", help="also run the LiteLLM proxy peer (slow install)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds per figure, median reported (default 3; quick 1)")
    ap.add_argument("--duration", type=float, default=None, help="measured seconds per window (default 5; quick 2)")
    ap.add_argument("--warmup", type=float, default=None, help="warm-up seconds before each window (default 1; quick 0.5)")
    ap.add_argument("--concurrency", default="1,16,64", help="closed-loop connection counts (default 1,16,64)")
    ap.add_argument("--stream-concurrency", type=int, default=16, help="connections for the streaming throughput run (0: off)")
    ap.add_argument("--rate", type=float, default=500.0, help="fixed-rate run, req/s (0: off)")
    ap.add_argument("--rss-requests", type=int, default=None, help="requests in the RSS run (default 100000; quick 5000; 0: off)")
    ap.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto", help="closed-loop load generator")
    ap.add_argument("--server-loop", choices=["asyncio", "uvloop"], default="asyncio",
                    help="event loop of every uvicorn server under test (default asyncio: see README)")
    ap.add_argument("--server-cpus", default="1", help="taskset CPU list for the server under test (default 1)")
    ap.add_argument("--client-cpus", default="0", help="taskset CPU list for load generator + fake upstream (default 0)")
    ap.add_argument("--upstream-cpus", default=None, help="taskset CPU list for the fake upstream (default: --client-cpus)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    ap.add_argument("--litellm-venv", default=str(Path.home() / ".cache" / "asgi-ai-relay-bench" / "litellm-venv"))
    ap.add_argument("--litellm-install-timeout", type=float, default=900.0)
    ap.add_argument("--output-dir", default=str(BENCH / "results"))
    ap.add_argument("--max-total-seconds", type=float, default=3600.0, help="abort the whole run after this long")
    a = ap.parse_args(argv)
    a.rounds = a.rounds or (1 if a.quick else 3)
    a.duration = a.duration or (2.0 if a.quick else 5.0)
    a.warmup = a.warmup if a.warmup is not None else (0.5 if a.quick else 1.0)
    a.rss_requests = a.rss_requests if a.rss_requests is not None else (5000 if a.quick else 100_000)
    a.concurrency = [int(c) for c in a.concurrency.split(",") if c.strip()]
    if a.no_pin or not shutil.which("taskset") or (os.cpu_count() or 1) < 2:
        a.server_cpus = a.client_cpus = a.upstream_cpus = None
    elif a.upstream_cpus is None:
        a.upstream_cpus = a.client_cpus
    if not (0 < a.duration <= 600 and 1 <= a.rounds <= 20 and all(1 <= c <= 1024 for c in a.concurrency)):
        ap.error("duration must be in (0, 600], rounds in [1, 20], concurrency in [1, 1024]")
    if a.scenarios:
        names = [s.strip() for s in a.scenarios.split(",") if s.strip()]
        unknown = set(names) - {s.name for s in SCENARIOS}
        if unknown:
            ap.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    else:
        names = [s.name for s in SCENARIOS if not s.opt_in]
    if a.with_litellm and "litellm" not in names:
        names.append("litellm")
    a.scenario_list = [s for s in SCENARIOS if s.name in names]
    return a


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGALRM, _on_term)
    signal.alarm(int(args.max_total_seconds))  # whole-run hard bound
    atexit.register(cleanup)
    t_start = time.monotonic()
    snap = cpu_busy_snapshot()
    time.sleep(1.0)
    idle_check = cpu_busy_pct(snap, cpu_busy_snapshot())
    busy_before = ", ".join(f"{k} {v:.0f}% busy" for k, v in idle_check.items() if v > 15)
    if busy_before:
        print(f"WARNING: machine not idle before the run ({busy_before}); figures will be noisy")
    tmp = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    workloads = make_workloads(args)
    skipped: dict[str, str] = {}
    servers: dict[str, Server] = {}
    raw: dict[str, list] = {}
    rss: dict[str, dict] = {}
    try:
        loader = Loader(args, tmp)
        up_proc, up_port = start_upstream(args.upstream_cpus, tmp)
        print(f"fake upstream on {HOST}:{up_port} (pid {up_proc.pid}, cpus {args.upstream_cpus or 'any'}); "
              f"servers on cpus {args.server_cpus or 'any'}; load generator: "
              f"{'wrk' if loader.use_wrk else 'loadgen.py'} (+ loadgen.py for fixed-rate/TTFB)")  # fmt: skip
        for sc in args.scenario_list:
            print(f"starting {sc.name}: {sc.title} ...", flush=True)
            try:
                servers[sc.name] = start_server(sc, args, up_port, up_proc, tmp)
                print(f"  ready on port {servers[sc.name].port}, RSS {servers[sc.name].rss_start_mb:.1f} MB")
            except Exception as e:  # a missing/broken scenario is reported, not fatal
                skipped[sc.name] = str(e).strip()
                print(f"  skipped: {sc.name}: {skipped[sc.name]}")
        names = [s.name for s in args.scenario_list if s.name in servers]
        if not names:
            print("nothing to measure")
            return 1

        # RSS first, on fresh processes: start -> first 1,000 requests -> N requests.
        if args.rss_requests > 0:
            for name in names:
                if servers[name].sc.kind == "direct":
                    continue
                print(f"RSS run: {name}, {args.rss_requests} requests ...", flush=True)
                try:
                    rss[name] = rss_phase(loader, servers[name], args.rss_requests)
                except Exception as e:
                    print(f"  RSS run failed: {e}")

        # Rounds: each workload runs on every scenario in turn (A B C, then C B A, ...) so drift hits all alike.
        results_raw: dict[tuple, list] = {}
        total = args.rounds * len(workloads) * len(names)
        i = 0
        for rnd in range(args.rounds):
            order = names if rnd % 2 == 0 else list(reversed(names))
            for wl in workloads:
                for name in order:
                    i += 1
                    srv = servers[name]
                    if srv.proc is not None and srv.proc.poll() is not None:
                        skipped.setdefault(name, f"server died (exit {srv.proc.returncode})\n{log_tail(srv.log)}")
                        continue
                    try:
                        r = measure(loader, srv, wl, args, up_proc.pid)
                    except Exception as e:
                        print(f"  [{i}/{total}] {name} {wl.name}: FAILED {e}")
                        continue
                    r["round"] = rnd
                    results_raw.setdefault((name, wl.name), []).append(r)
                    bad = (r.get("errors") or 0) + (r.get("non2xx") or 0)
                    print(f"  [{i}/{total}] round {rnd + 1} {wl.name:>16} {name:<12} {r['rps']:9.0f} req/s  "
                          f"p50 {r['latency_ms']['p50']:.3f} ms  p99 {r['latency_ms']['p99']:.3f} ms"
                          + (f"  ERRORS {bad}" if bad else ""), flush=True)  # fmt: skip

        results = {k: summarize(v) for k, v in results_raw.items()}
        rows = build_rows(results, workloads, names)
        ceiling = None
        if "direct" in names:
            top = max(args.concurrency)
            c = results.get(("direct", f"chat c{top}"))
            ceiling = c["rps"] if c else None
        meta = {
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "git": git_rev(),
            "versions": versions(),
            "cpu_model": cpu_model(),
            "cores": os.cpu_count(),
            "kernel": platform.release(),
            "fake_upstream_ceiling_rps": ceiling,
            "cpu_busy_before_run_pct": idle_check,
            "busy_before": busy_before or None,
            "elapsed_s": round(time.monotonic() - t_start, 1),
            "settings": {
                "quick": args.quick,
                "rounds": args.rounds,
                "duration_s": args.duration,
                "warmup_s": args.warmup,
                "concurrency": args.concurrency,
                "stream_concurrency": args.stream_concurrency,
                "rate": args.rate,
                "rss_requests": args.rss_requests,
                "server_cpus": args.server_cpus,
                "client_cpus": args.client_cpus,
                "upstream_cpus": args.upstream_cpus,
                "load_generator": "wrk" if loader.use_wrk else "loadgen.py",
                "server_loop": args.server_loop,
                "scenarios": names,
                "relay_toml_template": RELAY_TOML,
            },
        }
        for (name, wl), v in results_raw.items():
            raw.setdefault(name, []).append({"workload": wl, "rounds": v})
        report(rows, workloads, rss, skipped, meta)
        write_results(Path(args.output_dir), meta, rows, rss, raw, skipped)
        print(f"\nwrote {Path(args.output_dir) / 'latest.json'} and latest.csv  ({meta['elapsed_s']:.0f} s)")
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything", file=sys.stderr)
        return 130
    finally:
        signal.alarm(0)
        cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
