"""The scale-out scenario of benchmarks/agents.py: one uvicorn worker against two.

The example service with the relay (the config ``run.py`` writes: SQLite ledger, default
features, limits too high to bite), ``uvicorn --workers 1`` and ``--workers 2`` in turn (order
flipped per round), wrk at 64 connections for ``--host-duration`` seconds after a warm-up,
against the instant fake upstream.  The two-worker server starts through ``uvicorn_tcp.py``
(uvicorn's own command line with TCP_NODELAY kept, see there); ``2-stock`` is plain
``uvicorn --workers 2`` for comparison.  On a 2-core machine the load generator and the fake upstream
share the cores with the workers, so 2x is out of reach by construction: the figure says how
much of the second core a second worker turns into throughput.  Memory-backed state only (each
worker its own limits, breakers and cache; see docs/scaling.md for the shared Redis backends).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as R  # noqa: E402


def start_workers(n: int, up_port: int, tmp: Path, nodelay: bool = True) -> tuple[subprocess.Popen, int]:
    port = R.free_port()
    cfg = tmp / f"workers{n}.toml"
    (tmp / f"workers{n}").mkdir(exist_ok=True)
    cfg.write_text(R.RELAY_TOML.format(upstream=f"http://{R.HOST}:{up_port}/v1", tmpdir=tmp / f"workers{n}")
                   + "\n" + R.RELAY_DEFAULT_FEATURES)  # fmt: skip
    env = {**os.environ, "AI_RELAY_CONFIG": str(cfg), "BENCH_UPSTREAM_KEY": "bench-dummy-key", "PYTHONPATH": str(R.ROOT)}
    launcher = [str(R.BENCH / "uvicorn_tcp.py")] if nodelay else ["-m", "uvicorn"]
    cmd = [sys.executable, *launcher, "main:app", "--app-dir", str(R.ROOT / "example_projects/fastapi_service"),
           "--host", R.HOST, "--port", str(port), "--workers", str(n), "--loop", "asyncio", "--http", "httptools",
           "--no-access-log", "--log-level", "warning"]  # fmt: skip
    log = tmp / f"workers{n}.log"
    p = R.spawn(cmd, None, cwd=R.ROOT, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    R.wait_port(port, p, 60)
    srv = R.Server(R.Scenario(f"workers{n}", "", "uvicorn", prefix="/ai"), port, p, p.pid, log)
    for _ in range(4 * n):  # every worker answers before the window (the kernel spreads connections)
        R.preflight(srv)
    return p, port


def run(args, tmp: Path) -> dict:
    up_proc, up_port = R.start_upstream(args.upstream_cpus, tmp)
    loader = R.Loader(SimpleNamespace(client_cpus=args.client_cpus, loadgen="auto"), tmp)
    c64 = R.Workload("chat c64", "closed", 64)
    out: dict = {"raw": [], "summary": []}
    for rnd in range(args.rounds):
        rps = {}
        for n in (1, 2, "2-stock") if rnd % 2 == 0 else ("2-stock", 2, 1):
            proc, port = start_workers(2 if n == "2-stock" else int(n), up_port, tmp, nodelay=n != "2-stock")
            try:
                loader.run(c64, port, "/ai/v1/chat/completions", 1.0)  # warm-up
                load = os.getloadavg()[0]
                r = loader.run(c64, port, "/ai/v1/chat/completions", args.host_duration)
            finally:
                R._kill(proc)
                if proc in R._PROCS:
                    R._PROCS.remove(proc)
            rps[n] = r["rps"]
            out["raw"].append(dict(r, round=rnd, workers=n, loadavg=load))
            print(f"  round {rnd + 1} workers {n}: {r['rps']:7.0f} req/s  p50 {r['latency_ms']['p50']:.2f} ms"
                  f"  p99 {r['latency_ms']['p99']:.2f} ms  load {load:.2f}" + (f"  ERRORS {r['errors'] + r['non2xx']}" if r["errors"] + r["non2xx"] else ""), flush=True)  # fmt: skip
        out["summary"].append({"round": rnd, "rps_1": round(rps[1]), "rps_2": round(rps[2]), "ratio": round(rps[2] / rps[1], 2),
                               "rps_2_stock_uvicorn": round(rps["2-stock"]), "ratio_stock": round(rps["2-stock"] / rps[1], 2)})  # fmt: skip
    print("\nscale-out at 64 connections: 2 workers / 1 worker (stock uvicorn --workers: without TCP_NODELAY)")
    for s in out["summary"]:
        print(f"  round {s['round'] + 1}: {s['rps_1']} -> {s['rps_2']} req/s = {s['ratio']}x  (stock: {s['rps_2_stock_uvicorn']} = {s['ratio_stock']}x)")
    return out
