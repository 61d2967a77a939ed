"""The host scenario of benchmarks/agents.py: the same relay inside every host it supports.

The hosts are the served tests' own (``tests/hosts``): Flask with ``AIRelay`` and Django with
``django_ai_relay`` under gunicorn (``-w 1 -k gthread --threads 8``), Django under uvicorn (ASGI)
and FastAPI with ``RelayMiddleware`` under uvicorn, one worker each, all with the same relay
config (the instant fake upstream, a SQLite ledger, production defaults).  For each, in the same
run: added p50 at 1 connection (minus direct) and throughput at 16 connections, as a share of the
FastAPI host's.  Each host runs in its own process group, stopped when its windows end (or the run does).
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
    if kind.startswith("gunicorn"):
        cmd = [*COMMANDS[kind], *_gunicorn_options(), *GUNICORN[:-1], "--bind", f"{R.HOST}:{port}"]
    else:
        cmd = [*COMMANDS[kind], "--no-access-log", "--log-level", "warning", "--host", R.HOST, "--port", str(port)]
    env = {**os.environ, "RELAY_HOST_CONFIG": str(cfg), "PYTHONPATH": f"{R.ROOT}{os.pathsep}{R.ROOT / 'integrations'}"}
    log = tmp / f"{kind}.log"
    p = R.spawn([sys.executable, *cmd], None, cwd=R.ROOT, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    try:
        R.wait_port(port, p, 60)
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}\n{R.log_tail(log)}") from None
    return p, port


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
        kinds = [k for k in KINDS if k in args.hosts] if args.hosts else list(KINDS)
        for kind in kinds if rnd % 2 == 0 else kinds[::-1]:
            proc = None
            try:
                proc, port = start_host(kind, config, tmp)
                srv = R.Server(R.Scenario(kind, kind, "uvicorn", prefix="/ai"), port, proc, proc.pid, None, key)
                R.preflight(srv)
                loader.run(c1, port, PATH, 0.5, key)  # warm-up

                one = loader.run(c1, port, PATH, args.host_duration, key)
                many = loader.run(c16, port, PATH, args.host_duration, key)
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
            })  # fmt: skip
    print("\nhosts: added p50 at 1 connection, throughput at 16 (share of FastAPI's)")
    for s in out["summary"]:
        print(f"  round {s['round'] + 1} {s['host']:<16} +{s['added_p50_c1_ms']} ms  {s['rps_c16']} req/s ({s['pct_of_fastapi_c16']}%)")

    return out
