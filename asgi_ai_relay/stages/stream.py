"""Streaming: a provider's stream, re-chunked into the caller's format as it arrives.

:class:`RelayStream` is what every adapter iterates. It records the request exactly once,
whichever way the stream ends: the provider's terminal event (recorded before the caller sees
it, so the ledger is never behind a client), a provider failure (the caller gets an error event
in its own format, never a silent hang), or the caller going away (``aclose``, which also
closes the upstream connection so the provider stops generating).

A stream is complete only when the provider's terminal event came through (``[DONE]``,
``message_stop``, a Gemini finish): one that simply stops is a provider failure (502 in the
ledger, an error event for the caller), never recorded as 200 and never cached.

Nothing reaches the caller until the first piece that carries content (text, a tool call or
usage): a stream that fails before it, after only a role delta or ``message_start``, is still a
failed *attempt* the route can retry elsewhere.

It keeps the pieces it gives the caller in ``call.output`` (up to ``cache.max_entry_bytes``,
then it stops keeping them) so a finished stream can be cached and replayed piece by piece.
What was sent is also sampled (``call.sent``) so a stream the caller abandons, or the provider
drops, is charged an estimate of what it used instead of nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from ..errors import CLIENT_CLOSED, RelayError, UpstreamError, UpstreamProtocolError
from ..call import Sent
from .commit import carries_content
from .passthrough import BROKEN, broken
from .usage import bill_attempt

if TYPE_CHECKING:
    from ..call import Call
    from ..providers.base import UpstreamResponse
    from ..relay import Relay
    from .translate import StreamTranslator

__all__ = ["CLIENT_CLOSED", "SETTLE_WAIT", "RelayStream"]

logger = logging.getLogger("asgi_ai_relay")

#: Seconds a stream's last piece waits for ``call.settle`` (a stored Responses conversation).
SETTLE_WAIT = 2.0



class RelayStream:
    __slots__ = (
        "_call", "_chunks", "_closed", "_head", "_kept", "_limit", "_recorded", "_relay", "_tail", "_sent",
        "_translator", "_upstream", "on_end",
    )

    def __init__(self, relay: Relay, call: Call, upstream: UpstreamResponse, translator: StreamTranslator) -> None:
        assert upstream.chunks is not None
        self._relay = relay
        self._call = call
        self._upstream = upstream
        self._chunks: AsyncIterator[bytes] = upstream.chunks
        self._translator = translator
        self._recorded = False
        self._closed = False
        #: The pieces read before the stream committed, given to the caller first, one by one.
        self._head: list[bytes] = []
        self._tail = b""
        #: Awaited once when the upstream is released, with the error that ended the stream.
        self.on_end: Callable[[RelayError | None], Awaitable[None]] | None = None
        #: What the caller was sent, kept (up to the cache's entry limit) for the cache.
        call.output = []
        call.sent = self._sent = Sent()
        self._kept = 0
        self._limit = relay.config.cache.max_entry_bytes

    def __aiter__(self) -> RelayStream:
        return self

    async def start(self) -> None:
        """Read up to the first piece that carries content before anything is sent to the caller.

        :raises RelayError: when the provider fails first; the upstream is released and the
            request left unrecorded, so the route can still try elsewhere.
        """
        wire = self._call.format.name
        try:
            head = self._head
            while True:
                piece = await self._read()
                if piece:
                    head.append(piece)
                if not piece or self._recorded or carries_content(wire, piece):
                    break
        except BaseException:
            self.on_end = None  # the route accounts for this attempt itself
            bill_attempt(self._relay, self._call, self._translator.usage)
            await self._release()
            raise

    async def __anext__(self) -> bytes:
        if self._head:
            return self._head.pop(0)
        if not self._closed:
            # The next non-empty piece for the caller, or b"" once the upstream is closed (read
            # here, not through a coroutine of its own: one frame less for every chunk).
            try:
                out = await self._read()
            except RelayError as error:
                await self._fail(error)
                out = b""
            except Exception:
                logger.exception("request_id=%s stream failed", self._call.request_id)
                await self._fail(RelayError("The relay failed while streaming the answer."))
                out = b""
            except BaseException:
                await self.aclose()
                raise
            if out:
                return out
        if self._tail:
            tail, self._tail = self._tail, b""
            return tail
        raise StopAsyncIteration

    async def _read(self) -> bytes:
        translator = self._translator
        while True:
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                if not translator.done and not self._recorded:
                    raise UpstreamProtocolError("The provider's stream ended before its final event.") from None
                self._tail = translator.close()
                if self._tail and not self._recorded:
                    self._keep(self._tail)  # given to the caller next, after the record
                self._record(200, None)
                await self._release()
                await self._settle()
                return b""
            try:  # (StreamTranslator.feed's guard, without its extra call for every chunk)
                out = translator._feed(chunk)
            except BROKEN as exc:
                raise broken(exc) from exc
            if out:
                call = self._call
                if call.ttfb_ms is None:
                    call.ttfb_ms = call.elapsed_ms()
                if not self._recorded:
                    # _keep(out), inline: it runs for every chunk
                    sent, size = self._sent, len(out)
                    sent.total += size
                    if sent.sampled < sent.SAMPLE:
                        sent.pieces.append(out)
                        sent.sampled += size
                    output = call.output
                    if output is not None:
                        self._kept += size
                        if self._kept > self._limit:
                            call.output = None
                        else:
                            output.append(out)
                if translator.done:
                    self._record(200, None)
                    if call.settle is not None:
                        await self._settle()
                return out

    async def _settle(self) -> None:
        """Wait (bounded) for the work the request's recording started that the caller's next
        request may depend on (``call.settle``), before the caller gets the last piece."""
        work, self._call.settle = self._call.settle, None
        if work is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(work), SETTLE_WAIT)
        except TimeoutError:
            logger.warning("request_id=%s: the final event went out before its response was stored", self._call.request_id)

    def _keep(self, piece: bytes) -> None:
        self._sent.add(piece)
        output = self._call.output
        if output is not None:
            self._kept += len(piece)
            if self._kept > self._limit:
                self._call.output = None
            else:
                output.append(piece)

    async def _fail(self, error: RelayError) -> None:
        """End the stream with an error event in the caller's format (unless it had completed)."""
        if not self._recorded:
            self._tail = self._call.format.stream_error(error)
            self._record(error.status_code, error)
        await self._release()

    async def aclose(self) -> None:
        """The caller is gone (or done): release the upstream connection, record the request."""
        self._record(CLIENT_CLOSED, None)
        await self._release()

    def _record(self, status: int, error: RelayError | None) -> None:
        if self._recorded:
            return
        self._recorded = True
        if status == 200 and getattr(self._translator, "failed", False):
            error = UpstreamError("The provider reported an error inside the stream.")
            status = error.status_code
        call = self._call
        call.status = status
        call.error = error
        call.usage = self._translator.usage
        if call.ttfb_ms is None and status == 200:
            call.ttfb_ms = call.elapsed_ms()
        self._relay.finish(call)

    async def _release(self) -> None:
        if self._closed:
            return
        self._closed = True
        close = getattr(self._chunks, "aclose", None)
        try:
            if close is not None:
                await close()
        finally:
            await self._upstream.aclose()
            if self.on_end is not None:
                try:
                    await self.on_end(self._call.error)
                except Exception:
                    logger.exception("request_id=%s stream end hook failed", self._call.request_id)
