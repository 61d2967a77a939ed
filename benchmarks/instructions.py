"""Instructions per request of the relay's server, counted by callgrind: a figure machine load does not move.

On a shared machine the server's CPU time per request moves by 20-50% between two starts of one
tree (the neighbours' use of the core's caches, not steal time), so a change of a few percent is
invisible in ``run.py``'s CPU column.  This counts instead: the example service with the relay
(``run.py``'s generated config, features on, SQLite ledger) runs under ``valgrind
--tool=callgrind``; after ``--warm`` requests its counting is switched on for ``--requests`` more
and off again, and the instructions of each thread are divided by the requests.  With
``--cache-sim`` callgrind also simulates the caches and the estimate of cycles is
``Ir + 10 x (L1 misses) + 100 x (last-level misses)``; with ``--branch-sim`` it simulates branch
prediction as well and adds ``15 x (mispredicted branches)``.

Usage (from the repository root)::

    .venv/bin/python benchmarks/instructions.py                          # a miss at 1 connection (~1 min)
    .venv/bin/python benchmarks/instructions.py --conns 64 --stream      # streams at 64 connections
    .venv/bin/python benchmarks/instructions.py --against ../other-checkout   # this tree and another, same load

Under callgrind the server runs ~50 times slower, so the ledger's writer waits ``--linger`` seconds
(not 50 ms) for a batch: its batches are then of the size real traffic makes. The load generator
and the fake upstream run natively; everything listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import run  # noqa: E402  (the scenario config, the fake upstream's start-up)

# Runs the server in the tree under test; the ledger's linger is stretched for callgrind's pace.
SERVER = """
import sys
from asgi_ai_relay.storage.sqlite import SQLiteLedger
SQLiteLedger.__init__.__kwdefaults__["linger"] = float(sys.argv.pop(1))
import uvicorn.main
sys.exit(uvicorn.main.main())
"""


def totals(prefix: Path) -> dict[str, dict[str, int]]:
    """The event counts of each thread's dump, by thread: {"1": {"Ir": ..}, ...}."""
    out = {}
    for f in sorted(prefix.parent.glob(prefix.name + "*")):
        text = f.read_text(errors="replace")
        events = re.search(r"^events:\s+(.+)$", text, re.M)
        found = re.search(r"^totals:\s+(.+)$", text, re.M) or re.search(r"^summary:\s+(.+)$", text, re.M)
        thread = re.search(r"^thread:\s+(\d+)", text, re.M)
        if not (events and found):
            continue
        counts = dict(zip(events.group(1).split(), map(int, found.group(1).split())))
        key = thread.group(1) if thread else f.name
        prev = out.setdefault(key, {})
        for k, v in counts.items():
            prev[k] = prev.get(k, 0) + v
    return out


def cycles(c: dict[str, int]) -> int:
    l1 = c.get("I1mr", 0) + c.get("D1mr", 0) + c.get("D1mw", 0)
    ll = c.get("ILmr", 0) + c.get("DLmr", 0) + c.get("DLmw", 0)
    mispredicted = c.get("Bcm", 0) + c.get("Bim", 0)
    return c.get("Ir", 0) + 10 * l1 + 100 * ll + 15 * mispredicted


def loadgen(port: int, path: str, body: Path, conns: int, n: int) -> dict:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "loadgen.py"), "--port", str(port), "--path", path,
           "--body-file", str(body), "--mode", "closed", "--connections", str(conns), "--requests", str(n),
           "--duration", "900"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=960, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def server_setup(tree: Path, upstream: str, args, tmp: Path, hashseed: int | None) -> tuple[run.Scenario, Path, dict]:
    """The scenario (a miss, or a hit with ``--hit``), its folder with the relay's config, and
    the environment of a server of ``tree`` (shared with ``footprint.py``)."""
    sc = next(s for s in run.SCENARIOS if s.name == ("relay-cache" if args.hit else "relay"))
    work = tmp / tree.name
    work.mkdir()
    cfg = work / "relay.toml"
    cfg.write_text(run.RELAY_TOML.format(upstream=upstream, tmpdir=work) + "\n" + sc.extra_toml)
    env = dict(os.environ, PYTHONPATH=str(tree), AI_RELAY_CONFIG=str(cfg), BENCH_UPSTREAM_KEY="bench-dummy-key")
    if hashseed is not None:
        env["PYTHONHASHSEED"] = str(hashseed)
    return sc, work, env


def uvicorn_args(sc: run.Scenario, tree: Path, port: int) -> list[str]:
    """What follows the app in the server's command line: the example service on asyncio."""
    return [sc.app, "--app-dir", str(tree / sc.app_dir), "--host", run.HOST, "--port", str(port),
            "--loop", "asyncio", "--http", "httptools", "--no-access-log", "--log-level", "warning"]  # fmt: skip


def request_body(sc: run.Scenario, work: Path, args) -> tuple[str, Path]:
    """The path and the body file every request of the load sends (a distinct body each for a
    miss, the same one for a hit; a stream with its usage with ``--stream``)."""
    base = {"model": "bench-model", "messages": [{"role": "user", "content": "hello" if args.hit else "hello __N__"}],
            "temperature": 0}  # fmt: skip
    if args.stream:
        base.update(stream=True, stream_options={"include_usage": True})
    body = work / "body.json"
    body.write_text(json.dumps(base))
    return sc.prefix + "/v1/chat/completions", body


def load_arguments(doc: str | None, *, conns: int, warm: int) -> argparse.ArgumentParser:
    """The options of the load a count runs under (shared with ``footprint.py``)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--against", action="append", default=[], help="another checkout to count under the same load")
    ap.add_argument("--conns", type=int, default=conns)
    ap.add_argument("--warm", type=int, default=warm, help=f"requests before counting starts (default {warm})")
    ap.add_argument("--requests", type=int, default=300, help="requests counted (default 300)")
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--hit", action="store_true", help="the same body every time: cache hits")
    return ap


def measure(tree: Path, upstream: str, args, tmp: Path) -> dict:
    sc, work, env = server_setup(tree, upstream, args, tmp, args.hashseed)
    port = run.free_port()
    out = work / "cg.out"
    vg = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes",
          f"--callgrind-out-file={out}"]  # fmt: skip
    if args.cache_sim:
        vg.append("--cache-sim=yes")
        if args.ll:  # a last-level cache shared with busy neighbours holds less than its size
            vg.append(f"--LL={args.ll},16,64")
    if args.branch_sim:
        vg.append("--branch-sim=yes")
    cmd = vg + [sys.executable, "-c", SERVER, str(args.linger), *uvicorn_args(sc, tree, port)]
    log = open(work / "server.log", "wb")
    p = subprocess.Popen(cmd, env=env, cwd=str(tree), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        run.wait_port(port, p, 300)
        path, body = request_body(sc, work, args)
        loadgen(port, path, body, args.conns, args.warm)
        time.sleep(args.linger * 2)  # the warm-up's rows written
        subprocess.run(["callgrind_control", "-i", "on", str(p.pid)], check=True, capture_output=True, timeout=120)
        r = loadgen(port, path, body, args.conns, args.requests)
        time.sleep(args.linger * 2)  # the measured requests' rows written, inside the count
        subprocess.run(["callgrind_control", "-i", "off", str(p.pid)], check=True, capture_output=True, timeout=120)
        done = r["requests"]
        if done != args.requests or r.get("errors") or r.get("non2xx"):
            raise RuntimeError(f"{tree}: {r}")
    finally:
        p.send_signal(signal.SIGTERM)  # callgrind writes each thread's counts as the process ends
        try:
            p.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
    per = {}
    for thread, c in totals(out).items():
        if c.get("Ir", 0):
            per[thread] = {k: v / done for k, v in c.items()} | {"cycles": cycles(c) / done}
    return per


def show(name: str, per: dict) -> dict:
    all_threads = {}
    for c in per.values():
        for k, v in c.items():
            all_threads[k] = all_threads.get(k, 0) + v
    loop = per.get("1", {})
    line = f"{name:>10}: loop thread {loop.get('Ir', 0) / 1e3:8.1f}k instr/req, all threads {all_threads.get('Ir', 0) / 1e3:8.1f}k"
    if "Bim" in all_threads:
        line += f", mispredicted branches {(all_threads['Bcm'] + all_threads['Bim']) / 1e3:.1f}k (indirect {all_threads['Bim'] / 1e3:.1f}k)"
    if "D1mr" in all_threads or "Bim" in all_threads:
        line += f", est. cycles {all_threads['cycles'] / 1e3:8.1f}k "
    print(line + "  [" + ", ".join(f"thread {t}: {c['Ir'] / 1e3:.1f}k" for t, c in sorted(per.items())) + "]", flush=True)
    return {"loop": loop, "all": all_threads}


def main() -> None:
    ap = load_arguments(__doc__, conns=1, warm=900)
    ap.add_argument("--cache-sim", action="store_true", help="simulate the caches too (slower)")
    ap.add_argument("--branch-sim", action="store_true", help="simulate branch prediction too")
    ap.add_argument("--ll", type=int, default=0, help="with --cache-sim: the last-level cache's size in bytes")
    ap.add_argument("--linger", type=float, default=1.25, help="the ledger writer's linger under callgrind (s)")
    ap.add_argument("--hashseed", type=int, default=0, help="PYTHONHASHSEED of the server (default 0: repeatable)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        raise SystemExit("valgrind (callgrind) is not installed: apt-get install valgrind")
    trees = [ROOT] + [Path(t).resolve() for t in args.against]
    tmp = Path(tempfile.mkdtemp(prefix="relay-instr-"))
    up, up_port = run.start_upstream(None, tmp)
    results = {}
    try:
        what = ("hit" if args.hit else "miss") + (", stream" if args.stream else "")
        print(f"{what}, {args.conns} connection(s), {args.requests} requests counted after {args.warm}")
        for tree in trees:
            results[str(tree)] = show(tree.name, measure(tree, f"http://{run.HOST}:{up_port}/v1", args, tmp))
    finally:
        run._kill(up)
    if len(trees) > 1:
        ref = results[str(trees[1])]
        for key in ("loop", "all"):
            a, b = results[str(trees[0])][key].get("Ir", 0), ref[key].get("Ir", 0)
            if b:
                print(f"{trees[0].name} against {trees[1].name}, {key}: {100 * (a / b - 1):+.1f}% instructions")
        if "cycles" in ref["all"]:
            a, b = results[str(trees[0])]["all"]["cycles"], ref["all"]["cycles"]
            print(f"{trees[0].name} against {trees[1].name}: {100 * (a / b - 1):+.1f}% estimated cycles")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
