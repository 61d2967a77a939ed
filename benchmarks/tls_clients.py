"""CPU per upstream call of the relay's upstream clients, over TLS (and plain HTTP for reference).

The relay's own HTTP/1.1 client (``h1``) stays the default only while it saves at least a third
of the per-call CPU of ``aiohttp`` over TLS (docs/egress.md). This measures exactly that: the
relay's own client classes (``asgi_ai_relay.transport.make_client``, so the same body reader and
bounds), each POSTing a chat completion to ``benchmarks/fake_upstream.py`` in a separate process
(HTTPS with a throwaway ``trustme`` CA the clients trust through ``http.ca_bundle``), keep-alive.

Two methods, both in one run:

* **CPU time** (default): ``time.process_time()`` of this process around each batch of calls;
  rounds interleave the clients (h1, aiohttp, httpx, then rotated), so a busy neighbour on a
  shared machine slows every client alike; the median of the rounds is reported.
* **Instructions** (``--callgrind``): each client runs alone under ``valgrind --tool=callgrind``
  twice, with ``--calls`` and ``3 x --calls`` calls; (Ir(3n) - Ir(n)) / 2n is the instruction
  count of one call, start-up and imports cancelled out. Machine load does not change it.

Usage (from the repository root)::

    .venv/bin/python benchmarks/tls_clients.py                   # ~30 s: 5 rounds x 2000 calls
    .venv/bin/python benchmarks/tls_clients.py --callgrind       # + instruction counts (~3 min)

Everything listens on 127.0.0.1; the upstream process is stopped when the run ends.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CLIENTS = ("h1", "aiohttp", "httpx")
BODY = b'{"model":"bench-upstream","messages":[{"role":"user","content":"Say hello in one short sentence."}]}'
STREAM_BODY = BODY[:-1] + b',"stream":true,"stream_options":{"include_usage":true}}'
HEADERS = {"content-type": "application/json", "authorization": "Bearer sk-bench"}


def start_upstream(tls: tuple[str, str] | None) -> tuple[subprocess.Popen[str], int]:
    command = [sys.executable, str(ROOT / "benchmarks" / "fake_upstream.py"), "--port", "0"]
    if tls is not None:
        command += ["--tls-cert", tls[0], "--tls-key", tls[1]]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("READY "):
        process.kill()
        raise SystemExit(f"the fake upstream did not start: {line!r}")
    return process, int(line.split()[1])


def make(client: str, ca: str | None):
    from asgi_ai_relay.config import load_config
    from asgi_ai_relay.transport import make_client

    http = {"client": client, "trust_env": False}
    if ca is not None:
        http["ca_bundle"] = ca
    config = load_config({"http": http, "providers": {"bench": {"base_url": "https://127.0.0.1/v1"}}})
    return make_client(config.http, config.timeouts, providers=config.providers)


async def calls(client, url: str, n: int, stream: bool) -> None:
    for _ in range(n):
        reply = await client.post("bench", url, HEADERS, STREAM_BODY if stream else BODY, stream=stream)
        if stream:
            assert reply.chunks is not None
            async for _piece in reply.chunks:
                pass
            await reply.aclose()
        assert reply.status == 200


async def measure(url: str, ca: str | None, n: int, rounds: int, warmup: int, stream: bool) -> dict[str, list[float]]:
    """CPU microseconds per call, one entry per round, for each client (interleaved rounds)."""
    clients = {name: make(name, ca) for name in CLIENTS}
    results: dict[str, list[float]] = {name: [] for name in CLIENTS}
    try:
        for client in clients.values():
            await calls(client, url, warmup, stream)
        for r in range(rounds):
            order = CLIENTS[r % len(CLIENTS):] + CLIENTS[:r % len(CLIENTS)]
            for name in order:
                start = time.process_time()
                await calls(clients[name], url, n, stream)
                results[name].append((time.process_time() - start) / n * 1e6)
    finally:
        for client in clients.values():
            await client.aclose()
    return results


def callgrind(client: str, url: str, ca: str | None, n: int, stream: bool, folder: str) -> float:
    """Instructions per call of ``client``: the difference of two runs under callgrind."""
    counts = []
    for calls_n in (n, 3 * n):
        out = os.path.join(folder, f"callgrind.{client}.{calls_n}.out")
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, __file__,
                   "--only", client, "--url", url, "--calls", str(calls_n), "--warmup", "50"]
        if ca is not None:
            command += ["--ca", ca]
        if stream:
            command.append("--stream")
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=900)
        text = Path(out).read_text()
        found = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M)
        assert found, f"no instruction total in {out}"
        counts.append(int(found.group(1)))
    return (counts[1] - counts[0]) / (2 * n)


async def only(client_name: str, url: str, ca: str | None, n: int, warmup: int, stream: bool) -> None:
    client = make(client_name, ca)
    try:
        await calls(client, url, warmup, stream)
        await calls(client, url, n, stream)
    finally:
        await client.aclose()


def certificates(folder: str) -> tuple[str, str, str]:
    import trustme

    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    paths = [os.path.join(folder, name) for name in ("ca.pem", "server.pem", "server-key.pem")]
    ca.cert_pem.write_to_path(paths[0])
    server.private_key_and_cert_chain_pem.write_to_path(paths[1])
    server.private_key_pem.write_to_path(paths[2])
    return paths[0], paths[1], paths[2]


def report(label: str, results: dict[str, list[float]]) -> None:
    medians = {name: statistics.median(values) for name, values in results.items()}
    print(f"\n{label}: CPU us per call, median of {len(results['h1'])} interleaved rounds (min..max)")
    for name in CLIENTS:
        print(f"  {name:8s} {medians[name]:8.1f}   ({min(results[name]):.1f}..{max(results[name]):.1f})")
    saving = 1 - medians["h1"] / medians["aiohttp"]
    print(f"  h1 saves {saving:.0%} of aiohttp's CPU per call (rule: at least 33%)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=2000, help="calls per client per round (default 2000)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--callgrind", action="store_true", help="also count instructions under valgrind (slow)")
    ap.add_argument("--callgrind-calls", type=int, default=300)
    ap.add_argument("--plain", action="store_true", help="also measure plain HTTP, for reference")
    # internal: one client alone (the callgrind runs)
    ap.add_argument("--only", choices=CLIENTS)
    ap.add_argument("--url")
    ap.add_argument("--ca")
    ap.add_argument("--stream", action="store_true")
    args = ap.parse_args()
    if args.only:
        asyncio.run(only(args.only, args.url, args.ca, args.calls, args.warmup, args.stream))
        return
    with tempfile.TemporaryDirectory() as folder:
        ca, cert, key = certificates(folder)
        upstreams = [start_upstream((cert, key))]
        if args.plain:
            upstreams.append(start_upstream(None))
        try:
            https = f"https://127.0.0.1:{upstreams[0][1]}/v1/chat/completions"
            targets = [("TLS", https, ca)]
            if args.plain:
                targets.append(("plain HTTP", f"http://127.0.0.1:{upstreams[1][1]}/v1/chat/completions", None))
            print(f"python {sys.version.split()[0]}, asyncio loop, {os.cpu_count()} cores, one call at a time, keep-alive")
            for label, url, bundle in targets:
                for stream in (False, True):
                    kind = "streamed (SSE)" if stream else "whole"
                    results = asyncio.run(measure(url, bundle, args.calls, args.rounds, args.warmup, stream))
                    report(f"{label}, {kind}", results)
            if args.callgrind:
                print(f"\nTLS, instructions per call (callgrind, difference of {args.callgrind_calls} and "
                      f"{3 * args.callgrind_calls} calls)")
                for stream in (False, True):
                    counts = {name: callgrind(name, https, ca, args.callgrind_calls, stream, folder) for name in CLIENTS}
                    kind = "streamed" if stream else "whole"
                    cells = "  ".join(f"{name} {counts[name] / 1e3:7.0f}k" for name in CLIENTS)
                    print(f"  {kind:8s} {cells}   h1 saves {1 - counts['h1'] / counts['aiohttp']:.0%} of aiohttp's")
        finally:
            for process, _ in upstreams:
                process.terminate()
                process.wait(10)


if __name__ == "__main__":
    main()
