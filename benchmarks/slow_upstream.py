"""A fake OpenAI upstream that streams slowly, the way a model does: the agent regime.

Every ``POST .../chat/completions`` with ``"stream": true`` is answered after ``--ttft-ms``
(time to first token), then ``--chunks`` content chunks ``--pace-ms`` apart, then a finish
chunk, a usage chunk (when ``stream_options.include_usage`` is set) and ``data: [DONE]``.
Each content chunk's text is ``@<ns>``: ``time.monotonic_ns()`` (CLOCK_MONOTONIC, the same
clock in every process on this machine) taken just before the chunk is written to the socket,
so a client can tell, per chunk, how long it took to reach it.  The schedule is absolute
(chunk i departs at start + ttft + i * pace), so a late timer does not shift the chunks after it.

A request with ``"stream": false`` gets a small whole ``chat.completion`` after ``--ttft-ms``.
``GET /v1/models`` answers at once (the load generator's event-loop probe on direct runs).

Binds to 127.0.0.1 only.  Prints ``READY <port>`` once listening.

    python benchmarks/slow_upstream.py --port 0 --ttft-ms 300 --chunks 60 --pace-ms 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time

import httptools

HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
)
PREFIX = b'data: {"id":"chatcmpl-slow","object":"chat.completion.chunk","created":1700000000,"model":"%s",'
CONTENT = b'"choices":[{"index":0,"delta":{%s"content":"@%d"},"logprobs":null,"finish_reason":null}]}\n\n'
FINISH = b'"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}\n\n'
USAGE = b'"choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}\n\n'
DONE = b"data: [DONE]\n\n"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _whole(model: bytes, n: int) -> bytes:
    body = json.dumps({
        "id": "chatcmpl-slow", "object": "chat.completion", "created": 1700000000, "model": model.decode(),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": n, "completion_tokens": 1, "total_tokens": n + 1},
    }, separators=(",", ":")).encode()  # fmt: skip
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


MODELS = _whole(b"models", 0)


class Settings:
    def __init__(self, ttft: float, chunks: int, pace: float) -> None:
        self.ttft, self.chunks, self.pace = ttft, chunks, pace
        self.streams = 0  # streams started (printed on exit)


class SlowProtocol(asyncio.Protocol):
    def __init__(self, s: Settings) -> None:
        self.s = s
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.closed = False

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.closed = True

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url, self.body = b"", []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        t = self.transport
        if self.parser.get_method() == b"GET":
            t.write(MODELS)
            return
        raw = b"".join(self.body)
        try:
            req = json.loads(raw)
        except ValueError:
            t.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            return
        model = str(req.get("model") or "slow").encode()
        prompt_tokens = max(1, len(raw) // 4)
        t.pause_reading()  # one exchange at a time per connection
        start = self.loop.time() + self.s.ttft
        if not req.get("stream"):
            self.loop.call_at(start, self._whole, model, prompt_tokens)
            return
        usage = bool((req.get("stream_options") or {}).get("include_usage"))
        self.s.streams += 1
        prefix = PREFIX % model
        self.loop.call_at(start, self._send, 0, start, prefix, usage, prompt_tokens)

    def _whole(self, model: bytes, n: int) -> None:
        if not self.closed:
            self.transport.write(_whole(model, n))
            self.transport.resume_reading()

    def _send(self, i: int, start: float, prefix: bytes, usage: bool, prompt_tokens: int) -> None:
        if self.closed:
            return
        n = self.s.chunks
        role = b'"role":"assistant",' if i == 0 else b""
        piece = _chunk(prefix + CONTENT % (role, time.monotonic_ns()))
        if i == 0:
            piece = HEAD + piece
        if i + 1 < n:
            self.transport.write(piece)
            self.loop.call_at(start + (i + 1) * self.s.pace, self._send, i + 1, start, prefix, usage, prompt_tokens)
            return
        tail = [piece, _chunk(prefix + FINISH)]
        if usage:
            tail.append(_chunk(prefix + USAGE % (prompt_tokens, n, prompt_tokens + n)))
        tail += [_chunk(DONE), b"0\r\n\r\n"]
        self.transport.write(b"".join(tail))
        self.transport.resume_reading()


async def serve(port: int, s: Settings) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SlowProtocol(s), "127.0.0.1", port, backlog=4096, reuse_address=True)
    sys.stdout.write(f"READY {server.sockets[0].getsockname()[1]}\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    sys.stderr.write(f"streams served: {s.streams}\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--ttft-ms", type=float, default=300.0)
    ap.add_argument("--chunks", type=int, default=60)
    ap.add_argument("--pace-ms", type=float, default=20.0)
    args = ap.parse_args()
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):  # pragma: no cover
        pass
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    asyncio.run(serve(args.port, Settings(args.ttft_ms / 1000, max(1, args.chunks), args.pace_ms / 1000)))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
