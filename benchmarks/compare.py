"""Server CPU time per request of this checkout against another, each round on fresh servers.

On a shared machine the CPU time one request costs moves with the neighbours (by 20-50% over a
minute here) and with each start of a server (its memory layout), so one run of each tree, or one
server of each kept for every round, says little below that. Here each round starts the relay's
server (``run.py``'s example service, features on) of both checkouts in turn, in alternating
order, warms it, measures its process's CPU time (all threads, user and system) over ``--reps``
windows of wrk load, and stops it. The result is the median over rounds of the ratio of the two
servers measured back to back, and each tree's median.

With ``--together`` each round starts both servers on the same core and loads them at the same
time (one wrk each): whatever the machine does then falls on both alike, and a round's ratio
holds to about 2% (two checkouts of one tree: 0.98-1.02), where back to back it ranges over tens
of percent.

Usage (from the repository root)::

    .venv/bin/python benchmarks/compare.py ../other-checkout                  # 64 connections, 10 rounds (~4 min)
    .venv/bin/python benchmarks/compare.py ../other-checkout --conns 1 --rounds 20
    .venv/bin/python benchmarks/compare.py ../other-checkout --together --rounds 6  # both at once (~2 min)

For counts that do not move with the machine, see ``instructions.py``. Everything listens on
127.0.0.1; the servers and the fake upstream are stopped when the run ends.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class _Settings:
    """The parts of ``run.py``'s arguments its start-up and load functions read."""

    server_cpus = "1"
    client_cpus = upstream_cpus = "0"
    server_loop = "asyncio"
    loadgen = "wrk"


def harness(tree: Path):
    """``tree``'s own ``run.py``: its scenarios and config, started from its own root."""
    spec = importlib.util.spec_from_file_location(f"run_{len(sys.modules)}", ROOT / "benchmarks" / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    module.ROOT, module.BENCH = tree, ROOT / "benchmarks"  # the load and the upstream: this tree's
    return module


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def scenario_of(run, args):
    """The example service's scenario of ``run.py``: every request a hit, or every one a miss."""
    return next(s for s in run.SCENARIOS if s.name == ("relay-cache" if args.hit else "relay"))


def one(run, settings, tree: Path, port: int, upstream, args, folder: Path) -> list[float]:
    scenario = scenario_of(run, args)
    server = run.start_server(scenario, settings, port, upstream, folder)
    loader = run.Loader(settings, folder)
    load = run.Workload("compare", "closed", connections=args.conns, stream=args.stream)
    tick = os.sysconf("SC_CLK_TCK")
    try:
        loader.run(load, server.port, server.path(), args.warmup, server.bearer, scenario.fixed_body)
        per_request = []
        for _ in range(args.reps):
            before = cpu_ticks(server.pid)
            out = loader.run(load, server.port, server.path(), args.duration, server.bearer, scenario.fixed_body)
            if out.get("errors") or out.get("non2xx"):
                raise RuntimeError(f"{tree}: {out}")
            per_request.append((cpu_ticks(server.pid) - before) / tick / out["requests"] * 1e6)
        return per_request
    finally:
        run.stop_server(server)


def together(run, settings, trees: list[Path], port: int, upstream, args, tmp: Path, r: int) -> dict[Path, float]:
    """Both servers up at once, on the same core, loaded at the same time: CPU us per request of each."""
    servers = {}
    try:
        for i, tree in enumerate(trees if r % 2 == 0 else trees[::-1]):
            run.ROOT = tree
            folder = tmp / f"{r}-{tree.name}-{i}"
            folder.mkdir()
            scenario = scenario_of(run, args)
            servers[tree] = (run.start_server(scenario, settings, port, upstream, folder), scenario)
        (tmp / f"{r}-load").mkdir()
        loader = run.Loader(settings, tmp / f"{r}-load")
        load = run.Workload("compare", "closed", connections=args.conns, stream=args.stream)
        tick = os.sysconf("SC_CLK_TCK")

        def window(seconds: float) -> dict[Path, dict]:
            outs: dict[Path, dict] = {}

            def go(tree: Path) -> None:
                server, scenario = servers[tree]
                outs[tree] = loader.run(load, server.port, server.path(), seconds, server.bearer, scenario.fixed_body)

            threads = [threading.Thread(target=go, args=(t,)) for t in trees]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return outs

        window(args.warmup)
        figures: dict[Path, list[float]] = {t: [] for t in trees}
        for _ in range(args.reps):
            before = {t: cpu_ticks(servers[t][0].pid) for t in trees}
            outs = window(args.duration)
            for t in trees:
                out = outs.get(t) or {}
                if not out.get("requests") or out.get("errors") or out.get("non2xx"):
                    raise RuntimeError(f"{t}: {out}")
                figures[t].append((cpu_ticks(servers[t][0].pid) - before[t]) / tick / out["requests"] * 1e6)
        return {t: statistics.median(v) for t, v in figures.items()}
    finally:
        for server, _ in servers.values():
            run.stop_server(server)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("other", help="the checkout to compare this one with")
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--reps", type=int, default=2, help="measured windows per server start")
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per window")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--hit", action="store_true", help="the same body every time: cache hits")
    ap.add_argument("--ledger", help="the ledger's URI instead of the SQLite file (memory:// leaves the writer out)")
    ap.add_argument("--together", action="store_true", help="both servers at once on one core, loaded at the same time")
    ap.add_argument("--json", help="write every figure here")
    args = ap.parse_args()
    trees = [ROOT, Path(args.other).resolve()]
    if trees[0] == trees[1]:
        raise SystemExit("compare two checkouts (a clone of this one, to measure the method itself)")
    run = harness(ROOT)
    if args.ledger:
        run.RELAY_TOML = run.RELAY_TOML.replace('ledger = "sqlite:///{tmpdir}/bench-ledger.db"', f'ledger = "{args.ledger}"')
        assert args.ledger in run.RELAY_TOML
    settings = _Settings()
    if not run.ensure_wrk(True) or (os.cpu_count() or 1) < 2:
        raise SystemExit("needs wrk and two cores")
    tmp = Path(tempfile.mkdtemp(prefix="relay-compare-"))
    upstream, upstream_port = run.start_upstream(settings.upstream_cpus, tmp)
    figures: dict[str, list[float]] = {str(t): [] for t in trees}
    what = ("hit" if args.hit else "miss") + (", stream" if args.stream else "") + (", together" if args.together else "")
    print(f"server CPU us per request, {what}, {args.conns} connection(s); {trees[0].name} / {trees[1].name}")
    try:
        for r in range(args.rounds):
            if args.together:
                got = together(run, settings, trees, upstream_port, upstream, args, tmp, r)
            else:
                got = {}
                for tree in trees if r % 2 == 0 else trees[::-1]:
                    folder = tmp / f"{r}-{tree.name}-{trees.index(tree)}"
                    folder.mkdir()
                    run.ROOT = tree
                    got[tree] = statistics.median(one(run, settings, tree, upstream_port, upstream, args, folder))
            for tree in trees:
                figures[str(tree)].append(got[tree])
            print(f"round {r + 1:2d}: {got[trees[0]]:7.1f} / {got[trees[1]]:7.1f}  ratio {got[trees[0]] / got[trees[1]]:.3f}", flush=True)
    finally:
        run._kill(upstream)
    ratios = [a / b for a, b in zip(figures[str(trees[0])], figures[str(trees[1])])]
    print(f"median: {statistics.median(figures[str(trees[0])]):.1f} / {statistics.median(figures[str(trees[1])]):.1f} us;"
          f" median ratio {statistics.median(ratios):.3f} (rounds: {min(ratios):.3f} .. {max(ratios):.3f})")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "figures": figures, "ratios": ratios}, indent=1))


if __name__ == "__main__":
    main()
