"""Stage 7: a provider's stream, re-chunked into the caller's format as it arrives.

:class:`RelayStream` is what every adapter iterates. It records the request exactly once,
whichever way the stream ends: the provider's terminal event (recorded before the caller sees
it, so the ledger is never behind a client), a provider failure (the caller gets an error event
in its own format, never a silent hang), or the caller going away (``aclose``, which also
closes the upstream connection so the provider stops generating).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from ..errors import RelayError

if TYPE_CHECKING:
    from ..call import Call
    from ..providers.base import UpstreamResponse
    from ..relay import Relay
    from .translate import StreamTranslator

__all__ = ["CLIENT_CLOSED", "RelayStream"]

logger = logging.getLogger("asgi_ai_relay")

#: Status recorded for a stream the caller abandoned (nginx's convention).
CLIENT_CLOSED = 499


class RelayStream:
    __slots__ = ("_call", "_chunks", "_closed", "_recorded", "_relay", "_tail", "_translator", "_upstream")

    def __init__(self, relay: Relay, call: Call, upstream: UpstreamResponse, translator: StreamTranslator) -> None:
        assert upstream.chunks is not None
        self._relay = relay
        self._call = call
        self._upstream = upstream
        self._chunks: AsyncIterator[bytes] = upstream.chunks
        self._translator = translator
        self._recorded = False
        self._closed = False
        self._tail = b""

    def __aiter__(self) -> RelayStream:
        return self

    async def __anext__(self) -> bytes:
        if not self._closed:
            out = await self._next()
            if out:
                return out
        if self._tail:
            tail, self._tail = self._tail, b""
            return tail
        raise StopAsyncIteration

    async def _next(self) -> bytes:
        """The next non-empty piece for the caller, or b"" once the upstream is closed."""
        translator = self._translator
        try:
            while True:
                try:
                    chunk = await self._chunks.__anext__()
                except StopAsyncIteration:
                    self._tail = translator.close()
                    self._record(200, None)
                    await self._release()
                    return b""
                out = translator.feed(chunk)
                if out:
                    if self._call.ttfb_ms is None:
                        self._call.ttfb_ms = self._call.elapsed_ms()
                    if translator.done:
                        self._record(200, None)
                    return out
        except RelayError as error:
            await self._fail(error)
        except Exception:
            logger.exception("request_id=%s stream failed", self._call.request_id)
            await self._fail(RelayError("The relay failed while streaming the answer."))
        except BaseException:
            await self.aclose()
            raise
        return b""

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
