"""The host scenario of benchmarks/agents.py: the same relay inside every host it supports.

The hosts are the served tests' own (``tests/hosts``): Flask with ``AIRelay`` and Django with
``django_ai_relay`` under gunicorn (``-w 1 -k gthread --threads 8``), Django under uvicorn (ASGI)
and FastAPI with ``RelayMiddleware`` under uvicorn, one worker each, all with the same relay
config (the instant fake upstream, a SQLite ledger, production defaults).  For each, in the same
run: added p50 at 1 connection (minus direct), throughput at 16 connections as a share of the
FastAPI host's, and the host's CPU per request in that window (every process of its group, from
/proc: gunicorn's master and worker, all their threads).  Each host runs in its own process group,
stopped when its windows end (or the run does).

Opt-in (``--hosts``), the hosts' own cost without the relay: ``bare-flask``, ``bare-django``
(gunicorn as above) and ``bare-fastapi`` (uvicorn), hello routes of ``benchmarks/bare_hosts.py``
that read the body and answer a fixed chat.completion.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as R  # noqa: E402

sys.path.insert(0, str(R.ROOT))
sys.path.insert(0, str(R.ROOT / "integrations"))

KINDS = ("uvicorn-fastapi", "gunicorn-flask", "gunicorn-django", "uvicorn-django")
BARE = {  # opt-in: the host without the relay
    "bare-flask": ["-m", "gunicorn", "bare_hosts:flask_app()"],
    "bare-django": ["-m", "gunicorn", "bare_hosts:django_wsgi"],
    "bare-fastapi": ["-m", "uvicorn", "--factory", "bare_hosts:fastapi_app"],
}
PATH = "/ai/v1/chat/completions"


def _config(upstream: str, key: str) -> dict:
    return {
        "prefix": "/ai",
        "api_keys": [{"key": key, "caller": "bench"}],  # Flask and Django hosts refuse anonymous callers
        "providers": {"bench": {"kind": "openai_compatible", "base_url": upstream, "api_key": "bench-dummy-key"}},
        "models": {"bench-model": {"provider": "bench", "upstream": "bench-upstream", "price": {"input": 2.5, "output": 8.0}}},
    }


def start_host(kind: str, config: dict, tmp: Path) -> tuple[object, int]:
    """One host on its own TCP port (uvicorn's ``--fd`` takes the socket for a Unix one, without
    TCP_NODELAY: 40 ms delayed-ACK stalls), in its own process group, stopped by ``R.cleanup``."""
    from tests.hosts.servers import COMMANDS, GUNICORN, _gunicorn_options

    port = R.free_port()
    cfg = tmp / f"{kind}.json"
    cfg.write_text(json.dumps(config))
    command = BARE.get(kind) or COMMANDS[kind]
    if command[1] == "gunicorn":
        cmd = [*command, *_gunicorn_options(), *GUNICORN[:-1], "--bind", f"{R.HOST}:{port}"]
    else:
        cmd = [*command, "--no-access-log", "--log-level", "warning", "--host", R.HOST, "--port", str(port)]
    path = os.pathsep.join(map(str, [R.ROOT, R.ROOT / "integrations", *([R.BENCH] if kind in BARE else [])]))
    env = {**os.environ, "RELAY_HOST_CONFIG": str(cfg), "PYTHONPATH": path}
    log = tmp / f"{kind}.log"
    p = R.spawn([sys.executable, *cmd], None, cwd=R.ROOT, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    try:
        R.wait_port(port, p, 60)
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}\n{R.log_tail(log)}") from None
    return p, port


def group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system) of every live process in the group ``pgid``."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += (int(fields[11]) + int(fields[12])) / R.CLK_TCK
    return total


def run(args, tmp: Path) -> dict:
    up_proc, up_port = R.start_upstream(args.upstream_cpus, tmp)
    loader = R.Loader(SimpleNamespace(client_cpus=args.client_cpus, loadgen="auto"), tmp)
    key = "sk-bench-" + secrets.token_hex(16)
    config = _config(f"http://{R.HOST}:{up_port}/v1", key)
    c1, c16 = R.Workload("chat c1", "closed", 1), R.Workload("chat c16", "closed", 16)
    out: dict = {"raw": [], "summary": []}
    for rnd in range(args.rounds):
        direct = loader.run(c1, up_port, "/v1/chat/completions", args.host_duration)
        res: dict = {}
        kinds = [k for k in (*KINDS, *BARE) if k in args.hosts.split(",")] if args.hosts else list(KINDS)
        for kind in kinds if rnd % 2 == 0 else kinds[::-1]:
            proc = None
            try:
                proc, port = start_host(kind, config, tmp)
                srv = R.Server(R.Scenario(kind, kind, "uvicorn", prefix="/ai"), port, proc, proc.pid, None, key)
                if kind not in BARE:
                    R.preflight(srv)
                loader.run(c1, port, PATH, 0.5, key)  # warm-up

                one = loader.run(c1, port, PATH, args.host_duration, key)
                cpu = group_cpu_s(proc.pid)
                many = loader.run(c16, port, PATH, args.host_duration, key)
                many["host_cpu_ms_per_req"] = 1000 * (group_cpu_s(proc.pid) - cpu) / max(many["requests"], 1)
            except Exception as exc:  # a host that cannot start is reported, the others still run
                print(f"  {kind}: FAILED {exc}")
                continue
            finally:
                if proc is not None:
                    R._kill(proc)
                    if proc in R._PROCS:
                        R._PROCS.remove(proc)
            res[kind] = {"c1": one, "c16": many}
            bad = one["errors"] + one["non2xx"] + many["errors"] + many["non2xx"]
            out["raw"].append({"round": rnd, "host": kind, "c1": one, "c16": many, "direct_c1": direct})
            print(f"  round {rnd + 1} {kind:<16} c1 p50 {one['latency_ms']['p50']:.3f} ms"
                  f" (+{one['latency_ms']['p50'] - direct['latency_ms']['p50']:.3f})  c16 {many['rps']:7.0f} req/s"
                  f"  {many['host_cpu_ms_per_req']:.3f} ms CPU/req"
                  + (f"  ERRORS {bad}" if bad else ""), flush=True)  # fmt: skip

        fast = res.get("uvicorn-fastapi")
        for kind, r in res.items():
            if r is None:
                continue
            out["summary"].append({
                "round": rnd, "host": kind,
                "added_p50_c1_ms": round(r["c1"]["latency_ms"]["p50"] - direct["latency_ms"]["p50"], 3),
                "rps_c16": round(r["c16"]["rps"]),
                "pct_of_fastapi_c16": round(100 * r["c16"]["rps"] / fast["c16"]["rps"]) if fast else None,
                "cpu_ms_per_req_c16": round(r["c16"]["host_cpu_ms_per_req"], 3),
            })  # fmt: skip
    print("\nhosts: added p50 at 1 connection, throughput at 16 (share of FastAPI's), host CPU per request at 16")
    for s in out["summary"]:
        print(f"  round {s['round'] + 1} {s['host']:<16} +{s['added_p50_c1_ms']} ms  {s['rps_c16']} req/s"
              f" ({s['pct_of_fastapi_c16']}%)  {s['cpu_ms_per_req_c16']} ms")

    return out
