"""Hold C slow streams open at once and measure what a relay adds to each chunk.

Against ``benchmarks/slow_upstream.py``, directly or through a relay.  C workers, each on its
own keep-alive connection (opened over ``--ramp`` seconds, as agents arrive), send a streamed
chat request, read it to the end, and send the next one until ``--duration`` is over.

Per content chunk it records the **transit**: arrival here minus the departure time the
upstream stamped into the chunk (``@<ns>``, CLOCK_MONOTONIC, the same clock in every process
on this machine).  Per stream it records the **time to first token over the upstream's own**:
first content chunk's arrival minus the request's send time minus ``--ttft-ms``.  A separate
connection sends a tiny ``GET --probe-path`` every 50 ms: its round trip is the server's
event-loop lag as a caller feels it.  A stream that ends without its chunks, ``[DONE]`` and
status 200 is counted as dropped.  Prints one JSON object on stdout.  Loopback targets only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time

import httptools

LOOPBACK = {"127.0.0.1", "localhost"}
MARK = b'"content":"@'


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(q / 100.0 * len(s)))]


class Stats:
    def __init__(self) -> None:
        self.transit_us: list[int] = []  # per chunk
        self.ttft_ms: list[float] = []  # per stream, over the upstream's own ttft
        self.ttft_first_ms: list[float] = []  # the same, for the first stream on a new connection
        self.streams = 0
        self.dropped = 0
        self.errors: dict[str, int] = {}
        self.probe_ms: list[float] = []
        self.open_now = 0
        self.open_max = 0

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


class StreamConn(asyncio.Protocol):
    """One keep-alive connection; one streamed exchange at a time."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[None] | None = None
        self.tail = b""
        self.chunks = 0
        self.first_ns = 0
        self.saw_done = False
        self.now = 0
        self.keep_alive = True

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def connection_lost(self, exc) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError("closed"))

    def data_received(self, data: bytes) -> None:
        self.now = time.monotonic_ns()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self.done is not None and not self.done.done():
                self.done.set_exception(exc)
            self.transport.close()

    def on_body(self, body: bytes) -> None:
        buf = self.tail + body
        start = len(self.tail)
        i = buf.find(MARK)
        transit = self.stats.transit_us
        now = self.now
        while i >= 0:
            j = buf.find(b'"', i + len(MARK))
            if j < 0:
                break
            if j >= start:  # not all of it in the previous piece (counted there)
                sent = int(buf[i + len(MARK) : j])
                if not self.chunks:
                    self.first_ns = now
                self.chunks += 1
                transit.append((now - sent) // 1000)
            i = buf.find(MARK, j)
        if b"[DONE]" in buf:
            self.saw_done = True
        self.tail = buf[-48:]

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()
        if self.done is not None and not self.done.done():
            self.done.set_result(None)

    async def exchange(self, request: bytes, timeout: float) -> tuple[int, int, bool]:
        self.done = asyncio.get_running_loop().create_future()
        self.tail, self.chunks, self.first_ns, self.saw_done = b"", 0, 0, False
        self.transport.write(request)
        await asyncio.wait_for(self.done, timeout)
        return self.parser.get_status_code(), self.chunks, self.saw_done


def build_request(host: str, port: int, path: str, n: int, bearer: str, run: str) -> bytes:
    body = json.dumps({
        "model": "bench-model", "messages": [{"role": "user", "content": f"hello {run} {n}"}],
        "stream": True, "stream_options": {"include_usage": True},
    }).encode()  # fmt: skip
    auth = f"authorization: Bearer {bearer}\r\n" if bearer else ""
    return (
        f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n{auth}"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body


async def worker(k: int, args, stats: Stats, t_end: float, counter: list[int]) -> None:
    loop = asyncio.get_running_loop()
    await asyncio.sleep(args.ramp * k / max(1, args.streams))
    conn: StreamConn | None = None
    first = True
    while time.monotonic() < t_end:
        try:
            if conn is None or conn.transport.is_closing() or not conn.keep_alive:
                _, conn = await asyncio.wait_for(
                    loop.create_connection(lambda: StreamConn(stats), args.host, args.port), 30
                )
                first = True
            counter[0] += 1
            req = build_request(args.host, args.port, args.path, counter[0], args.bearer, args.run_id)
            stats.open_now += 1
            stats.open_max = max(stats.open_max, stats.open_now)
            t0 = time.monotonic_ns()
            try:
                status, chunks, saw_done = await conn.exchange(req, args.stream_timeout)
            finally:
                stats.open_now -= 1
            stats.streams += 1
            if status != 200 or chunks < args.chunks or not saw_done:
                stats.dropped += 1
                stats.error(f"status {status}" if status != 200 else "short stream")
            if conn.first_ns:
                added = (conn.first_ns - t0) / 1e6 - args.ttft_ms
                stats.ttft_ms.append(added)
                if first:
                    stats.ttft_first_ms.append(added)
            first = False
        except (OSError, asyncio.TimeoutError, httptools.HttpParserError) as exc:
            stats.streams += 1
            stats.dropped += 1
            stats.error(type(exc).__name__)
            if conn is not None:
                conn.transport.close()
            conn = None
            await asyncio.sleep(0.05)


class ProbeConn(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.done: asyncio.Future[None] | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(None)


async def probe(args, stats: Stats, t_end: float) -> None:
    if not args.probe_path:
        return
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(ProbeConn, args.host, args.port)
    req = f"GET {args.probe_path} HTTP/1.1\r\nhost: {args.host}\r\n\r\n".encode()
    while time.monotonic() < t_end:
        await asyncio.sleep(0.05)
        conn.done = loop.create_future()
        t0 = time.perf_counter()
        conn.transport.write(req)
        try:
            await asyncio.wait_for(conn.done, 10)
        except asyncio.TimeoutError:
            stats.error("probe timeout")
            return
        stats.probe_ms.append((time.perf_counter() - t0) * 1000)
    conn.transport.close()


async def run(args) -> dict:
    stats = Stats()
    t0 = time.monotonic()
    t_end = t0 + args.ramp + args.duration
    counter = [0]
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    tasks = [asyncio.create_task(worker(k, args, stats, t_end, counter)) for k in range(args.streams)]
    tasks.append(asyncio.create_task(probe(args, stats, t_end)))
    await asyncio.gather(*tasks)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    elapsed = time.monotonic() - t0
    transit_ms = [v / 1000 for v in stats.transit_us]
    cpu = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime
    return {
        "streams_target": args.streams,
        "streams_open_max": stats.open_max,
        "streams": stats.streams,
        "dropped": stats.dropped,
        "errors": stats.errors,
        "chunks": len(stats.transit_us),
        "elapsed_s": round(elapsed, 2),
        "chunks_per_s": round(len(stats.transit_us) / elapsed, 1),
        "transit_ms": {q: pct(transit_ms, n) for q, n in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))},
        "ttft_added_ms": {q: pct(stats.ttft_ms, n) for q, n in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))},
        "ttft_added_first_conn_ms": {q: pct(stats.ttft_first_ms, n) for q, n in (("p50", 50), ("p99", 99))},
        "probe_ms": {q: pct(stats.probe_ms, n) for q, n in (("p50", 50), ("p99", 99), ("max", 100))},
        "client_cpu_pct": round(100 * cpu / elapsed, 1),
        "client_cpu_us_per_chunk": round(cpu / len(stats.transit_us) * 1e6, 2) if stats.transit_us else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/v1/chat/completions")
    ap.add_argument("--probe-path", default="")
    ap.add_argument("--bearer", default="")
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--ramp", type=float, default=1.0)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds after the ramp to keep starting streams")
    ap.add_argument("--ttft-ms", type=float, default=300.0, help="the upstream's own time to first token")
    ap.add_argument("--chunks", type=int, default=60, help="content chunks a whole stream carries")
    ap.add_argument("--stream-timeout", type=float, default=60.0)
    ap.add_argument("--run-id", default=str(os.getpid()))
    args = ap.parse_args()
    if args.host not in LOOPBACK:
        raise SystemExit("stream_clients.py only sends to loopback addresses")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.streams + 64:
        raise SystemExit(f"RLIMIT_NOFILE hard limit {hard} is below {args.streams + 64}")
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
