"""A lean asyncio HTTP/1.1 load generator (raw sockets, keep-alive, httptools parser).

Used by run.py for what wrk cannot do, and as a fallback when wrk is missing:

* ``--mode closed``: N connections, each sends its next request as soon as the
  previous answer is complete; stops after ``--duration`` seconds or
  ``--requests`` requests, whichever comes first.
* ``--mode rate``: open loop at a fixed ``--rate`` req/s for ``--duration``
  seconds, over at most ``--max-connections`` connections.  Latency is measured
  from each request's *scheduled* start, so a stalled server is not hidden by
  the generator waiting for it (no coordinated omission).

Each request records total latency and time to first body byte (TTFB, useful
for SSE streams).  Prints one JSON object on stdout.  Only loopback targets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

import httptools

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
REQUEST_TIMEOUT = 30.0


class Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport = None
        self.parser = httptools.HttpResponseParser(self)
        self.fut: asyncio.Future | None = None
        self.status = 0
        self.t_body = 0
        self.body_bytes = 0
        self.keep_alive = True
        self.lost = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.lost = True
        if self.fut is not None and not self.fut.done():
            self.fut.set_exception(ConnectionError("connection closed"))

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except Exception as e:  # parser error
            if self.fut is not None and not self.fut.done():
                self.fut.set_exception(e)
            self.transport.close()

    def on_message_begin(self) -> None:
        self.t_body = 0
        self.body_bytes = 0

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        if not self.t_body:
            self.t_body = time.perf_counter_ns()
        self.body_bytes += len(body)

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()
        if self.fut is not None and not self.fut.done():
            self.fut.set_result(None)

    async def request(self, raw: bytes) -> None:
        self.fut = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        await asyncio.wait_for(self.fut, REQUEST_TIMEOUT)


class Stats:
    def __init__(self) -> None:
        self.lat: list[int] = []
        self.ttfb: list[int] = []
        self.status: dict[int, int] = {}
        self.errors = 0
        self.body_bytes = 0

    def ok(self, conn: Conn, t_start: int, t_end: int) -> None:
        self.lat.append(t_end - t_start)
        if conn.t_body:
            self.ttfb.append(conn.t_body - t_start)
        self.status[conn.status] = self.status.get(conn.status, 0) + 1
        self.body_bytes += conn.body_bytes


def pct(values: list[int], p: float) -> float | None:
    """Nearest-rank percentile, in milliseconds."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k] / 1e6


class Client:
    """``raw`` is sent as is; a ``make_raw(n)`` callable, when given, builds request ``n``."""

    def __init__(self, host: str, port: int, raw: bytes, make_raw=None) -> None:
        self.host, self.port, self.raw = host, port, raw
        self.make_raw = make_raw
        self.sent = 0
        self.loop = asyncio.get_running_loop()

    def next_raw(self) -> bytes:
        if self.make_raw is None:
            return self.raw
        self.sent += 1
        return self.make_raw(self.sent)

    async def connect(self) -> Conn:
        _, conn = await asyncio.wait_for(self.loop.create_connection(Conn, self.host, self.port), 10)
        return conn

    async def one(self, conn: Conn | None, stats: Stats, t_start: int | None = None) -> Conn | None:
        """Send one request; returns the connection to reuse (None when it broke)."""
        try:
            if conn is None or conn.lost or not conn.keep_alive:
                if conn is not None:
                    conn.transport.close()
                conn = await self.connect()
            t0 = time.perf_counter_ns()
            if t_start is not None:  # fixed-rate: count from the scheduled time if we are late
                t0 = min(t0, t_start)
            await conn.request(self.next_raw())
            stats.ok(conn, t0, time.perf_counter_ns())
            return conn
        except (OSError, ConnectionError, asyncio.TimeoutError, httptools.HttpParserError):
            stats.errors += 1
            if conn is not None and conn.transport is not None:
                conn.transport.close()
            return None


async def run_closed(client: Client, connections: int, duration: float, max_requests: int) -> tuple[Stats, float]:
    stats = Stats()
    deadline = time.perf_counter() + duration
    budget = [max_requests if max_requests > 0 else 1 << 62]

    async def worker() -> None:
        conn = None
        while budget[0] > 0 and time.perf_counter() < deadline:
            budget[0] -= 1
            conn = await client.one(conn, stats)
            if conn is None:
                await asyncio.sleep(0.01)  # do not spin on a dead server
        if conn is not None:
            conn.transport.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return stats, time.perf_counter() - t0


async def run_rate(client: Client, rate: float, duration: float, max_conns: int) -> tuple[Stats, float]:
    stats = Stats()
    idle: list[Conn] = []
    slots = asyncio.Semaphore(max_conns)
    tasks: set[asyncio.Task] = set()

    async def one(t_sched: int) -> None:
        async with slots:
            conn = idle.pop() if idle else None
            conn = await client.one(conn, stats, t_start=t_sched)
            if conn is not None:
                idle.append(conn)

    n = int(rate * duration)
    t0 = time.perf_counter_ns()
    interval = 1e9 / rate
    for i in range(n):
        target = t0 + int(i * interval)
        delay = (target - time.perf_counter_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.ensure_future(one(target))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT + 5)
    elapsed = (time.perf_counter_ns() - t0) / 1e9
    for c in idle:
        c.transport.close()
    return stats, elapsed


#: Replaced by a per-request counter wherever it appears in the body.
UNIQUE = b"__N__"


def build_request(host: str, port: int, method: str, path: str, body: bytes, bearer: str = "") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: bench-loadgen\r\nAccept: */*\r\n"
    if bearer:
        head += f"Authorization: Bearer {bearer}\r\n"
    if body or method == "POST":
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


async def amain(args) -> dict:
    body = b""
    if args.body_file:
        with open(args.body_file, "rb") as f:
            body = f.read()
    elif args.body:
        body = args.body.encode()
    raw = build_request(args.host, args.port, args.method, args.path, body, args.bearer)
    make_raw = None
    if UNIQUE in body:  # a distinct body per request, also across runs (a cache-miss workload)
        run = os.urandom(6).hex().encode()

        def make_raw(n: int) -> bytes:
            unique = body.replace(UNIQUE, run + b"-" + str(n).encode())
            return build_request(args.host, args.port, args.method, args.path, unique, args.bearer)
    client = Client(args.host, args.port, raw, make_raw)
    if args.warmup > 0:
        await run_closed(client, args.connections if args.mode == "closed" else 4, args.warmup, 0)
    if args.mode == "closed":
        stats, elapsed = await run_closed(client, args.connections, args.duration, args.requests)
    else:
        stats, elapsed = await run_rate(client, args.rate, args.duration, args.max_connections)
    n = len(stats.lat)
    non2xx = sum(v for k, v in stats.status.items() if not 200 <= k < 300)
    return {
        "tool": "loadgen",
        "mode": args.mode,
        "requests": n,
        "errors": stats.errors,
        "non2xx": non2xx,
        "status": {str(k): v for k, v in stats.status.items()},
        "duration_s": elapsed,
        "rps": n / elapsed if elapsed > 0 else 0.0,
        "target_rate": args.rate if args.mode == "rate" else None,
        "body_bytes": stats.body_bytes,
        "latency_ms": {
            "p50": pct(stats.lat, 50),
            "p90": pct(stats.lat, 90),
            "p99": pct(stats.lat, 99),
            "max": pct(stats.lat, 100),
            "mean": (sum(stats.lat) / n / 1e6) if n else None,
        },
        "ttfb_ms": {"p50": pct(stats.ttfb, 50), "p90": pct(stats.ttfb, 90), "p99": pct(stats.ttfb, 99)},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/v1/chat/completions")
    ap.add_argument("--method", default="POST")
    ap.add_argument("--body", default="")
    ap.add_argument("--body-file", default="")
    ap.add_argument("--bearer", default="", help="send Authorization: Bearer <token>")
    ap.add_argument("--mode", choices=["closed", "rate"], default="closed")
    ap.add_argument("--connections", type=int, default=1)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds (hard cap on the run)")
    ap.add_argument("--requests", type=int, default=0, help="closed mode: stop after this many (0: no count cap)")
    ap.add_argument("--rate", type=float, default=500.0, help="rate mode: requests per second")
    ap.add_argument("--max-connections", type=int, default=64, help="rate mode: connection cap")
    ap.add_argument("--warmup", type=float, default=0.0, help="seconds of unmeasured load first")
    args = ap.parse_args()
    if args.host not in LOOPBACK:
        sys.exit("loadgen only targets loopback addresses")
    if args.duration <= 0 or args.duration > 3600:
        sys.exit("--duration must be in (0, 3600]")
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    result = asyncio.run(amain(args))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
