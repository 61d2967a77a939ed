"""The Python code a request walks through: distinct bytecode sites, bytecodes run, calls.

A request's CPU time here follows how much *different* code it runs far more than how many
instructions it executes: 1,000 more bytecodes of a tight loop a request cost nothing measurable
(``compare.py --together``: 1.001), while the tree after the guarantees, with 10% more bytecodes
run and 24% more distinct sites, costs 15% more. Each site executed once a request brings its
bytecode, inline caches and the objects it touches back into the core's caches; a loop brings
them once. So this counts, for the example service's server (``run.py``'s config, features on),
the distinct ``(code object, bytecode offset)`` pairs executed over ``--requests`` requests after
``--warm`` of warm-up (a tracer switched on and off by signal), with the bytecodes run and the
Python calls per request, and where the sites are (``--top``: the files that differ most).
Like ``instructions.py`` it does not move with the machine; it is slow (the tracer sees every
bytecode), so counts are small.

Usage (from the repository root)::

    .venv/bin/python benchmarks/footprint.py --against ../other-checkout          # a miss, 64 connections
    .venv/bin/python benchmarks/footprint.py --against ../other-checkout --hit

Everything listens on 127.0.0.1; the server and the fake upstream are stopped when the run ends.
"""

from __future__ import annotations

import collections
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import run  # noqa: E402  (the scenario config, the fake upstream's start-up)
from instructions import load_arguments, loadgen, request_body, server_setup, uvicorn_args  # noqa: E402

# Runs the server in the tree under test with a bytecode tracer that SIGUSR1 switches on and off
# and SIGUSR2 writes out (to the file named by argv[1]).
SERVER = """
import collections, json, signal, sys, threading
out = sys.argv.pop(1)
sites, ops, calls, on = set(), [0], [0], [False]
def local(frame, event, arg):
    if event == "opcode":
        ops[0] += 1
        sites.add((frame.f_code, frame.f_lasti))  # the code object itself: dataclass inits share a name
    return local
def trace(frame, event, arg):
    if event == "call":
        calls[0] += 1
        frame.f_trace_lines = False
        frame.f_trace_opcodes = True
        return local
def toggle(*_):
    on[0] = not on[0]
    sys.settrace(trace if on[0] else None)
    threading.settrace(trace if on[0] else None)
def dump(*_):
    by_file = collections.Counter(code.co_filename for code, _ in sites)
    by_function = collections.Counter(
        f"{c.co_filename}:{c.co_firstlineno}:{c.co_name}" + (f"({','.join(c.co_varnames[1:4])})" if c.co_filename == "<string>" else "")
        for c, _ in sites
    )  # (a generated __init__ is named by its first fields)
    with open(out, "w") as f:
        json.dump({"sites": len(sites), "ops": ops[0], "calls": calls[0], "files": by_file,
                   "functions": by_function}, f)
signal.signal(signal.SIGUSR1, toggle)
signal.signal(signal.SIGUSR2, dump)
import uvicorn.main
sys.exit(uvicorn.main.main())
"""


def measure(tree: Path, upstream: str, args, tmp: Path) -> dict:
    sc, work, env = server_setup(tree, upstream, args, tmp, 0)
    port = run.free_port()
    out = work / "footprint.json"
    cmd = [sys.executable, "-c", SERVER, str(out), *uvicorn_args(sc, tree, port)]
    log = open(work / "server.log", "wb")
    p = subprocess.Popen(cmd, env=env, cwd=str(tree), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        run.wait_port(port, p, 60)
        path, body = request_body(sc, work, args)
        loadgen(port, path, body, args.conns, args.warm)
        p.send_signal(signal.SIGUSR1)
        time.sleep(0.2)
        r = loadgen(port, path, body, args.conns, args.requests)
        time.sleep(0.3)  # the last rows handed to the ledger's writer
        p.send_signal(signal.SIGUSR1)
        time.sleep(0.2)
        p.send_signal(signal.SIGUSR2)
        for _ in range(100):
            if out.exists() and out.stat().st_size:
                break
            time.sleep(0.05)
        if r["requests"] != args.requests or r.get("errors") or r.get("non2xx"):
            raise RuntimeError(f"{tree}: {r}")
        return json.loads(out.read_text()) | {"requests": r["requests"]}
    finally:
        run._kill(p)


def short(name: str) -> str:
    """A file's name without the checkout's or the interpreter's directories."""
    for marker in ("asgi_ai_relay/", "example_projects/"):
        if marker in name:
            return marker + name.split(marker, 1)[1]
    return re.split(r"site-packages/|/python3\.\d+/", name)[-1]


def show(name: str, got: dict) -> None:
    n = got["requests"]
    relay = sum(v for k, v in got["files"].items() if "asgi_ai_relay" in k)
    print(f"{name:>10}: {got['sites']:6d} distinct bytecode sites ({relay} in asgi_ai_relay), "
          f"{got['ops'] / n:8.0f} bytecodes and {got['calls'] / n:5.0f} Python calls a request", flush=True)


def main() -> None:
    ap = load_arguments(__doc__, conns=64, warm=300)
    ap.add_argument("--top", type=int, default=15, help="files whose sites differ most (with --against)")
    ap.add_argument("--functions", type=int, default=0, help="the functions with the most sites (first tree)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    trees = [ROOT] + [Path(t).resolve() for t in args.against]
    tmp = Path(tempfile.mkdtemp(prefix="relay-footprint-"))
    up, up_port = run.start_upstream(None, tmp)
    results = {}
    try:
        what = ("hit" if args.hit else "miss") + (", stream" if args.stream else "")
        print(f"{what}, {args.conns} connection(s), {args.requests} requests traced after {args.warm}")
        for tree in trees:
            results[str(tree)] = got = measure(tree, f"http://{run.HOST}:{up_port}/v1", args, tmp)
            show(tree.name, got)
    finally:
        run._kill(up)
    if len(trees) > 1:
        a, b = results[str(trees[0])], results[str(trees[1])]
        print(f"{trees[0].name} against {trees[1].name}: sites {100 * (a['sites'] / b['sites'] - 1):+.1f}%, "
              f"bytecodes {100 * (a['ops'] / a['requests'] / (b['ops'] / b['requests']) - 1):+.1f}%")
        fa = collections.Counter({short(k): v for k, v in a["files"].items()})
        fb = collections.Counter({short(k): v for k, v in b["files"].items()})
        for name in sorted(set(fa) | set(fb), key=lambda k: -abs(fa[k] - fb[k]))[: args.top]:
            print(f"  {fa[name]:6d} {fb[name]:6d} {fa[name] - fb[name]:+6d}  {name}")
    if args.functions:
        first = collections.Counter({short(k): v for k, v in results[str(trees[0])]["functions"].items()})
        for name, count in first.most_common(args.functions):
            print(f"  {count:6d}  {name}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
