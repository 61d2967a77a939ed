"""A fast fake OpenAI-compatible upstream for benchmarks.

Raw asyncio protocol + httptools parser + uvloop (when installed), HTTP/1.1
keep-alive, pre-built response bytes.  It answers:

* ``POST /v1/chat/completions`` -- a small, valid ``chat.completion`` with usage;
  with ``"stream": true`` an SSE stream (role chunk, a few content deltas, a
  finish chunk, a usage chunk when ``stream_options.include_usage`` is set,
  then ``data: [DONE]``), sent with chunked transfer encoding.
* ``GET /v1/models`` -- a model list.
* anything else -- 404 with an OpenAI-style error body.

It binds to 127.0.0.1 only.  Run:  python benchmarks/fake_upstream.py --port 0
It prints ``READY <port>`` on stdout once it is listening.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys

import httptools

try:  # orjson is a project dependency; fall back to json so this file stands alone
    import orjson

    _loads = orjson.loads
except ImportError:  # pragma: no cover
    _loads = json.loads

CREATED = 1700000000
CONTENT_PIECES = ["Hello", "!", " How", " can", " I", " help", "?"]
USAGE = {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16}


def _dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _http(status: str, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return (
        b"HTTP/1.1 " + status.encode() + b"\r\n"
        b"content-type: " + content_type + b"\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n"
        b"\r\n" + body
    )


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Responses:
    """Pre-built response bytes, cached per model name (the model is echoed back)."""

    def __init__(self) -> None:
        self._whole: dict[str, bytes] = {}
        self._stream: dict[tuple[str, bool], list[bytes]] = {}
        self.models = _http(
            "200 OK",
            _dumps(
                {
                    "object": "list",
                    "data": [
                        {"id": m, "object": "model", "created": CREATED, "owned_by": "bench"}
                        for m in ("bench-upstream", "gpt-4o-mini")
                    ],
                }
            ),
        )
        self.not_found = _http(
            "404 Not Found",
            _dumps({"error": {"message": "not found", "type": "invalid_request_error", "code": None}}),
        )
        self.bad_request = _http(
            "400 Bad Request",
            _dumps({"error": {"message": "invalid JSON body", "type": "invalid_request_error", "code": None}}),
        )

    def whole(self, model: str) -> bytes:
        r = self._whole.get(model)
        if r is None:
            body = _dumps(
                {
                    "id": "chatcmpl-bench0001",
                    "object": "chat.completion",
                    "created": CREATED,
                    "model": model,
                    "system_fingerprint": "fp_bench",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "".join(CONTENT_PIECES), "refusal": None},
                            "logprobs": None,
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": USAGE,
                }
            )
            r = self._whole[model] = _http("200 OK", body)
        return r

    def stream(self, model: str, include_usage: bool) -> list[bytes]:
        """Return [headers+first chunk, chunk, ..., last chunk + terminator]."""
        key = (model, include_usage)
        r = self._stream.get(key)
        if r is None:
            base = {
                "id": "chatcmpl-bench0001",
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": model,
                "system_fingerprint": "fp_bench",
            }
            events = []

            def ev(choices, usage=None, with_usage_key=include_usage):
                obj = dict(base, choices=choices)
                if with_usage_key:
                    obj["usage"] = usage
                events.append(b"data: " + _dumps(obj) + b"\n\n")

            ev([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}])
            for piece in CONTENT_PIECES:
                ev([{"index": 0, "delta": {"content": piece}, "logprobs": None, "finish_reason": None}])
            ev([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}])
            if include_usage:
                ev([], USAGE)
            events.append(b"data: [DONE]\n\n")
            head = (
                b"HTTP/1.1 200 OK\r\n"
                b"content-type: text/event-stream; charset=utf-8\r\n"
                b"cache-control: no-cache\r\n"
                b"transfer-encoding: chunked\r\n"
                b"\r\n"
            )
            parts = [_chunk(e) for e in events]
            parts[0] = head + parts[0]
            parts[-1] = parts[-1] + b"0\r\n\r\n"
            r = self._stream[key] = parts
        return r


RESPONSES = Responses()


class UpstreamProtocol(asyncio.Protocol):
    __slots__ = ("transport", "parser", "url", "body", "keep_alive", "loop", "delay", "closed")

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.transport = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body = []
        self.closed = False

    # asyncio callbacks
    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.closed = True

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # pragma: no cover
            self.transport.close()
        except httptools.HttpParserError:
            self.transport.write(RESPONSES.bad_request)
            self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        keep_alive = self.parser.should_keep_alive()
        method = self.parser.get_method()
        path = self.url.split(b"?", 1)[0]
        t = self.transport
        if method == b"POST" and path.endswith(b"/chat/completions"):
            try:
                req = _loads(b"".join(self.body))
                model = req.get("model") or "bench-upstream"
                stream = bool(req.get("stream"))
            except Exception:
                t.write(RESPONSES.bad_request)
                if not keep_alive:
                    t.close()
                return
            if stream:
                opts = req.get("stream_options") or {}
                parts = RESPONSES.stream(str(model), bool(opts.get("include_usage")))
                if self.delay > 0:
                    # Spread the chunks in time; pause reading so requests stay ordered.
                    t.pause_reading()
                    asyncio.ensure_future(self._slow_stream(parts, keep_alive))
                    return
                t.write(b"".join(parts))
            else:
                t.write(RESPONSES.whole(str(model)))
        elif method == b"GET" and path.endswith(b"/models"):
            t.write(RESPONSES.models)
        else:
            t.write(RESPONSES.not_found)
        if not keep_alive:
            t.close()

    async def _slow_stream(self, parts, keep_alive) -> None:
        t = self.transport
        for i, part in enumerate(parts):
            if self.closed:
                return
            if i:
                await asyncio.sleep(self.delay)
            t.write(part)
        if not keep_alive:
            t.close()
        elif not self.closed:
            t.resume_reading()


async def serve(host: str, port: int, delay: float, tls: tuple[str, str] | None = None) -> None:
    loop = asyncio.get_running_loop()
    context = None
    if tls is not None:  # HTTPS with this certificate chain and key (PEM files)
        import ssl

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*tls)
    server = await loop.create_server(
        lambda: UpstreamProtocol(delay), host, port, backlog=2048, reuse_address=True, ssl=context
    )
    real_port = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"READY {real_port}\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1", "localhost"])
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port (printed as READY <port>)")
    ap.add_argument("--stream-delay-ms", type=float, default=0.0, help="pause between SSE chunks (default 0)")
    ap.add_argument("--tls-cert", help="serve HTTPS with this PEM certificate chain (with --tls-key)")
    ap.add_argument("--tls-key", help="the PEM private key of --tls-cert")
    args = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    tls = (args.tls_cert, args.tls_key) if args.tls_cert else None
    asyncio.run(serve(args.host, args.port, args.stream_delay_ms / 1000.0, tls))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
