#!/usr/bin/env python
"""The agent regime: many slow streams held open at once (and, opt-in, big prompts and hosts).

    .venv/bin/python benchmarks/agents.py                                  # slow streams, C = 100,500,1000,2000
    .venv/bin/python benchmarks/agents.py --streams 100,1000 --rounds 2
    .venv/bin/python benchmarks/agents.py --scenario slow-streams,big-prompts,hosts

slow-streams: ``slow_upstream.py`` answers after ``--ttft-ms`` and then sends ``--chunks`` chunks
``--pace-ms`` apart, each stamped with its departure time; ``stream_clients.py`` holds C streams
open, first straight to the upstream (``direct``), then through the relay (the FastAPI example
service with the relay's production defaults and a SQLite ledger), in the same run, and the
order flips every round.  Per C it reports, for both and their difference: chunk transit p50/p99,
time to first token over the upstream's own p50/p99, the event-loop probe p99, server CPU per
relayed chunk (and the fake upstream's and the client's), RSS per open stream, dropped streams,
and the load average.  ``--with-litellm`` adds LiteLLM's proxy as a third target on the same
upstream (``stream_peers.py``) and, per ``--gap-bounds``, the largest C each server keeps within.

Reuses run.py's process handling: each child in its own process group, stopped on exit, error
or Ctrl-C; a whole-run alarm; loopback only.  Results: benchmarks/results/agents.json.
"""

from __future__ import annotations

import argparse
import atexit
import datetime as _dt
import json
import os
import re
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as R  # noqa: E402  (the harness's process handling, servers and metadata)
import stream_peers  # noqa: E402

BENCH, ROOT, HOST = R.BENCH, R.ROOT, R.HOST


def start_slow_upstream(args, tmp: Path) -> tuple[subprocess.Popen, int]:
    log = tmp / "slow_upstream.log"
    cmd = [sys.executable, str(BENCH / "slow_upstream.py"), "--port", "0", "--ttft-ms", str(args.ttft_ms),
           "--chunks", str(args.chunks), "--pace-ms", str(args.pace_ms)]  # fmt: skip
    p = R.spawn(cmd, args.upstream_cpus, stdout=subprocess.PIPE, stderr=open(log, "wb"), cwd=ROOT)
    buf, t_end = b"", time.monotonic() + 15
    while time.monotonic() < t_end and b"\n" not in buf:
        if select.select([p.stdout], [], [], 0.2)[0]:
            chunk = os.read(p.stdout.fileno(), 100)
            if not chunk:
                break
            buf += chunk
    m = re.match(rb"READY (\d+)", buf)
    if not m:
        raise RuntimeError("slow upstream did not start:\n" + R.log_tail(log))
    return p, int(m.group(1))


def start_relay(args, up_port: int, up_proc, tmp: Path) -> R.Server:
    sc = R.relay_scenario("relay", "example_projects/fastapi_service, production defaults", extra_toml=args.relay_toml_extra,
                          app="agents_host:app", app_dir="benchmarks",  # the service plus GET /__meters
                          env={"BENCH_GC_THRESHOLD": args.gc_threshold} if args.gc_threshold else {})
    ns = SimpleNamespace(server_loop=args.server_loop, server_cpus=args.server_cpus)
    return R.start_server(sc, ns, up_port, up_proc, tmp)


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process (system: the kernel's share, loopback TCP included)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / R.CLK_TCK, int(fields[12]) / R.CLK_TCK


def runqueue_wait_s(pid: int) -> float:
    """Seconds the process's main thread spent runnable but not running (other processes had
    the CPU): /proc/PID/schedstat, second field."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except OSError:
        return 0.0


def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds of a process's main thread (the event loop) and of its other threads together
    (the ledger's writer, executors)."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            name = "main" if task.name == str(pid) else "others"
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / R.CLK_TCK
    return out


def one_window(args, target: str, port: int, path: str, probe: str, pid: int, up_pid: int, c: int, bearer: str = "") -> dict:
    """C streams against one target; server CPU and RSS sampled around and during the window."""
    load0 = os.getloadavg()
    rss0 = R.proc_rss_mb(pid)
    cpu0, up0, split0, wait0 = R.proc_cpu_s(pid), R.proc_cpu_s(up_pid), cpu_split(pid), runqueue_wait_s(pid)
    threads0 = thread_cpu_s(pid)
    busy0 = R.cpu_busy_snapshot()
    if target == "relay":
        R.http(port, "GET", "/__meters")  # starts the loop-lag ticker; resets both meters
    cmd = [sys.executable, str(BENCH / "stream_clients.py"), "--port", str(port), "--path", path,
           "--probe-path", probe, "--streams", str(c), "--ramp", str(args.ramp), "--duration", str(args.duration),
           "--ttft-ms", str(args.ttft_ms), "--chunks", str(args.chunks)] + (["--bearer", bearer] if bearer else [])  # fmt: skip
    p = R.spawn(cmd, args.client_cpus, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    spy = None
    spy_exe = Path(sys.executable).parent / "py-spy"
    spy_exe = spy_exe if spy_exe.exists() else Path(shutil.which("py-spy") or spy_exe)  # or one on PATH
    if args.profile and target != "direct" and not spy_exe.exists():
        print(f"  --profile: {spy_exe} not found (pip install '.[bench]'); not profiling")
    elif args.profile and target != "direct":  # py-spy samples the server for the window (collapsed stacks)
        spy_out = Path(args.profile) / f"{target}-c{c}.txt"
        spy_out.parent.mkdir(parents=True, exist_ok=True)
        spy = R.spawn([str(spy_exe), "record", "-p", str(pid), "-d", str(int(args.ramp + args.duration + 1)), "-r", "200",
                       "-f", "raw", "-o", str(spy_out), "--nonblocking"], None,
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    rss_peak, t_end = rss0, time.monotonic() + args.ramp + args.duration + 90
    try:
        while p.poll() is None:
            if time.monotonic() > t_end:
                raise RuntimeError(f"stream_clients timed out ({target}, C={c})")
            rss_peak = max(rss_peak, R.proc_rss_mb(pid))
            time.sleep(0.2)
        out, err = p.communicate()
    finally:
        for q in (p, spy):
            if q is not None:
                if q is spy:
                    try:
                        q.wait(10)
                    except subprocess.TimeoutExpired:
                        pass
                R._kill(q, 1)
                if q in R._PROCS:
                    R._PROCS.remove(q)
    if p.returncode != 0:
        raise RuntimeError(f"stream_clients exited {p.returncode}: {err.decode(errors='replace')[-800:]}")
    r = json.loads(out.decode().strip().splitlines()[-1])
    cpu, up = R.proc_cpu_s(pid) - cpu0, R.proc_cpu_s(up_pid) - up0
    r["cpu_busy_pct"] = R.cpu_busy_pct(busy0, R.cpu_busy_snapshot())
    if target == "relay":
        r["meters"] = json.loads(R.http(port, "GET", "/__meters")[1])
    r["server_cpu_pct"] = round(100 * cpu / r["elapsed_s"], 1)
    r["upstream_cpu_pct"] = round(100 * up / r["elapsed_s"], 1)
    r["server_cpu_us_per_chunk"] = round(cpu / r["chunks"] * 1e6, 2) if r["chunks"] else None
    r["upstream_cpu_us_per_chunk"] = round(up / r["chunks"] * 1e6, 2) if r["chunks"] else None  # the fake upstream's
    r["server_thread_cpu_pct"] = {name: round(100 * (t - threads0.get(name, 0.0)) / r["elapsed_s"], 1)
                                  for name, t in thread_cpu_s(pid).items() if t - threads0.get(name, 0.0) > 0}  # fmt: skip
    r["server_runqueue_wait_pct"] = round(100 * (runqueue_wait_s(pid) - wait0) / r["elapsed_s"], 1)
    user, system = (b - a for a, b in zip(split0, cpu_split(pid)))
    r["server_sys_share_pct"] = round(100 * system / (user + system), 1) if user + system else None
    r["rss_before_mb"], r["rss_peak_mb"] = round(rss0, 1), round(rss_peak, 1)
    r["rss_kb_per_open_stream"] = round((rss_peak - rss0) * 1024 / max(1, r["streams_open_max"]), 1)
    r["loadavg"] = [round(x, 2) for x in load0] + [round(os.getloadavg()[0], 2)]  # 1/5/15 min at start, 1 min at end
    return r


def diff(a, b):
    return None if a is None or b is None else round(b - a, 3)


def slow_streams(args, tmp: Path) -> dict:
    up_proc, up_port = start_slow_upstream(args, tmp)
    print(f"slow upstream on {HOST}:{up_port}: ttft {args.ttft_ms:g} ms, {args.chunks} chunks x {args.pace_ms:g} ms")
    srv = start_relay(args, up_port, up_proc, tmp)
    print(f"relay on {HOST}:{srv.port} (pid {srv.pid}), RSS {srv.rss_start_mb:.1f} MB")
    targets = {
        "direct": (up_port, "/v1/chat/completions", "/v1/models", up_proc.pid, ""),
        "relay": (srv.port, srv.path(), "/", srv.pid, ""),
    }
    if args.with_litellm:
        lite = stream_peers.start_litellm(args, up_port, up_proc, tmp)
        print(f"LiteLLM on {HOST}:{lite.port} (pid {lite.pid}), RSS {lite.rss_start_mb:.1f} MB")
        targets["litellm"] = (lite.port, "/v1/chat/completions", stream_peers.LITELLM_PROBE, lite.pid, lite.bearer)
    if args.warmup > 0:  # first requests through a fresh server (imports, pools, caches) are not measured
        warm = SimpleNamespace(**{**vars(args), "ramp": 0.2, "duration": args.warmup, "profile": ""})
        for name, (port, path, probe, pid, bearer) in targets.items():
            if name != "direct":
                one_window(warm, name, port, path, probe, pid, up_proc.pid, 10, bearer)
    raw: list[dict] = []
    for rnd in range(args.rounds):
        for c in args.streams:
            peers = [t for t in targets if t != "direct"
                     and not (args.with_litellm and stream_peers.stop_climbing(raw, t, rnd, args.gap_bounds))]
            if not peers:
                break
            order = ["direct"] + peers if rnd % 2 == 0 else peers[::-1] + ["direct"]
            pair = {}
            for name in order:
                port, path, probe, pid, bearer = targets[name]
                r = one_window(args, name, port, path, probe, pid, up_proc.pid, c, bearer)
                r.update(target=name, round=rnd, c=c)
                raw.append(r)
                pair[name] = r
                print(f"  round {rnd + 1} C={c:<5} {name:<6} open {r['streams_open_max']:>5}  streams {r['streams']:>5}"
                      f"  dropped {r['dropped']}  transit p50/p99 {r['transit_ms']['p50']:.2f}/{r['transit_ms']['p99']:.2f} ms"
                      f"  ttft+ p50/p99 {r['ttft_added_ms']['p50']:.1f}/{r['ttft_added_ms']['p99']:.1f} ms"
                      f"  probe p99 {r['probe_ms']['p99'] or 0:.1f} ms"
                      + (f"  lag p99 {r['meters']['loop_lag_ms']['p99']} ms gc2 {r['meters']['gc']['2']['count']}x max {r['meters']['gc']['2']['max_ms']} ms" if 'meters' in r else '')
                      + f"  cpu/chunk {r['server_cpu_us_per_chunk']} us"
                      f" (sys {r['server_sys_share_pct']}%)  server {r['server_cpu_pct']}% (waited {r['server_runqueue_wait_pct']}%)"
                      f"  upstream {r['upstream_cpu_us_per_chunk']} us  client {r['client_cpu_us_per_chunk']} us/chunk  RSS {r['rss_peak_mb']} MB"
                      f"  load {r['loadavg'][0]}", flush=True)  # fmt: skip
            d = pair["direct"]
            for peer in peers:
                x = pair[peer]
                raw.append({
                    "target": "added", "peer": peer, "round": rnd, "c": c,
                    "transit_added_p50_ms": diff(d["transit_ms"]["p50"], x["transit_ms"]["p50"]),
                    "transit_added_p99_ms": diff(d["transit_ms"]["p99"], x["transit_ms"]["p99"]),
                    "ttft_added_p50_ms": diff(d["ttft_added_ms"]["p50"], x["ttft_added_ms"]["p50"]),
                    "ttft_added_p99_ms": diff(d["ttft_added_ms"]["p99"], x["ttft_added_ms"]["p99"]),
                    "relay_cpu_us_per_chunk": x["server_cpu_us_per_chunk"],
                    "relay_rss_peak_mb": x["rss_peak_mb"], "relay_rss_kb_per_stream": x["rss_kb_per_open_stream"],
                    "dropped": x["dropped"], "loadavg": x["loadavg"], "chunks_per_s": x["chunks_per_s"],
                    "upstream_cpu_us_per_chunk": x["upstream_cpu_us_per_chunk"], "client_cpu_us_per_chunk": x["client_cpu_us_per_chunk"],
                    "direct_upstream_cpu_us_per_chunk": d["upstream_cpu_us_per_chunk"], "direct_client_cpu_us_per_chunk": d["client_cpu_us_per_chunk"],
                    "cpu_busy_pct": x["cpu_busy_pct"],
                })  # fmt: skip
    res = {"settings": {"ttft_ms": args.ttft_ms, "chunks": args.chunks, "pace_ms": args.pace_ms, "ramp_s": args.ramp,
                        "duration_s": args.duration, "streams": args.streams, "rounds": args.rounds,
                        "relay_toml_extra": args.relay_toml_extra, "gap_bounds_ms": args.gap_bounds}, "raw": raw}  # fmt: skip
    res["capacity"] = stream_peers.capacity(raw, args.gap_bounds)
    res["relay_over_litellm"] = stream_peers.ratios(res["capacity"])
    return res


def print_slow_table(res: dict) -> None:
    print("\nslow streams: relay minus direct, same run (ms)")
    print(f"{'C':>6} {'peer':>8} {'rnd':>3} {'transit+ p50':>12} {'p99':>8} {'ttft+ p50':>10} {'p99':>8} {'cpu/chunk us':>12}"
          f" {'RSS MB':>7} {'KB/stream':>9} {'dropped':>7} {'up us/chunk':>11} {'client':>6} {'load1':>6}")  # fmt: skip
    for r in res["raw"]:
        if r["target"] == "added":
            print(f"{r['c']:>6} {r['peer']:>8} {r['round'] + 1:>3} {r['transit_added_p50_ms']:>12} {r['transit_added_p99_ms']:>8}"
                  f" {r['ttft_added_p50_ms']:>10} {r['ttft_added_p99_ms']:>8} {r['relay_cpu_us_per_chunk']:>12}"
                  f" {r['relay_rss_peak_mb']:>7} {r['relay_rss_kb_per_stream']:>9} {r['dropped']:>7}"
                  f" {r['upstream_cpu_us_per_chunk']!s:>11} {r['client_cpu_us_per_chunk']!s:>6} {r['loadavg'][0]:>6}")  # fmt: skip
    stream_peers.print_capacity(res["capacity"], res["settings"]["streams"])


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="slow-streams", help="comma list: slow-streams, big-prompts, hosts, scale-out")
    ap.add_argument("--streams", default="100,500,1000,2000", help="concurrent streams per window")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--hosts", default="", help="hosts: comma list (default all): uvicorn-fastapi, gunicorn-flask, gunicorn-django, uvicorn-django")
    ap.add_argument("--host-duration", type=float, default=2.0, help="hosts: measured seconds per window")
    ap.add_argument("--prompt-duration", type=float, default=3.0, help="big prompts: measured seconds per window")
    ap.add_argument("--ttft-ms", type=float, default=300.0)
    ap.add_argument("--chunks", type=int, default=60)
    ap.add_argument("--pace-ms", type=float, default=20.0)
    ap.add_argument("--ramp", type=float, default=1.0, help="seconds over which the C connections open")
    ap.add_argument("--duration", type=float, default=4.0, help="seconds after the ramp in which streams start")
    ap.add_argument("--relay-toml", dest="relay_toml_extra", default="", help="TOML appended to the relay's config")
    ap.add_argument("--gc-threshold", default="", help="gc.set_threshold for the relay's host, e.g. 50000,20,10")
    ap.add_argument("--server-loop", choices=["asyncio", "uvloop"], default="asyncio")
    ap.add_argument("--server-cpus", default=None, help="taskset CPU list for the relay (default: unpinned)")
    ap.add_argument("--client-cpus", default=None)
    ap.add_argument("--upstream-cpus", default=None)
    ap.add_argument("--profile", default="", help="directory: py-spy samples the relay in every window (collapsed stacks)")
    ap.add_argument("--with-litellm", action="store_true", help="slow streams: LiteLLM's proxy as a peer (own venv, slow install)")
    ap.add_argument("--litellm-venv", default=str(Path.home() / ".cache" / "asgi-ai-relay-bench" / "litellm-venv"))
    ap.add_argument("--litellm-install-timeout", type=float, default=900.0)
    ap.add_argument("--warmup", type=float, default=2.0, help="slow streams: seconds of 10 streams through each server first, not measured")
    ap.add_argument("--gap-bounds", default="5,20,50", help="slow streams: added gap p99 bounds (ms) for the largest C per target")
    ap.add_argument("--output", default=str(BENCH / "results" / "agents.json"))
    ap.add_argument("--max-total-seconds", type=float, default=900.0)
    a = ap.parse_args(argv)
    a.streams = sorted(int(c) for c in a.streams.split(",") if c.strip())
    a.gap_bounds = sorted(float(b) for b in a.gap_bounds.split(",") if b.strip())
    a.scenarios = [s.strip() for s in a.scenario.split(",") if s.strip()]
    if not all(1 <= c <= 5000 for c in a.streams) or not 0 < a.duration <= 120:
        ap.error("streams in [1, 5000], duration in (0, 120]")
    return a


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, R._on_term)
    signal.signal(signal.SIGALRM, R._on_term)
    signal.alarm(int(args.max_total_seconds))
    atexit.register(R.cleanup)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # children inherit it: 2 sockets per relayed stream
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tmp = Path(tempfile.mkdtemp(prefix="relay-agents-"))
    doc: dict = {"meta": {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "git": R.git_rev(),
        "versions": R.versions(), "cpu_model": R.cpu_model(), "cores": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(), "argv": sys.argv[1:],
    }}  # fmt: skip
    try:
        if "slow-streams" in args.scenarios:
            doc["slow_streams"] = slow_streams(args, tmp)
            print_slow_table(doc["slow_streams"])
            R.cleanup()
        if "big-prompts" in args.scenarios:
            import big_prompts

            doc["big_prompts"] = big_prompts.run(args, tmp)
            R.cleanup()
        if "scale-out" in args.scenarios:
            import scaleout

            doc["scale_out"] = scaleout.run(args, tmp)
            R.cleanup()
        if "hosts" in args.scenarios:
            import hosts

            doc["hosts"] = hosts.run(args, tmp)
            R.cleanup()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        R.cleanup()
        doc["meta"]["loadavg_at_end"] = os.getloadavg()
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=2, default=str) + "\n")
        print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
