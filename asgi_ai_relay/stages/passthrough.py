"""Part of the translate stage: the same-format fast paths, and the guard every translation reads
an upstream's answer behind.

When the caller's format is the provider's, the body goes up with only the model rewritten
and the answer comes back as it was sent, read only for its usage (and, in a stream, for its
terminal and error events). :func:`reading` turns whatever a malformed answer makes the
reading code raise (a ``ValueError`` from a bad field, a ``TypeError`` from a list where an
object belongs, a ``KeyError``...) into :class:`UpstreamProtocolError`: an upstream failure the
retry policy judges, never a 500.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import orjson

from .. import redact
from ..config import ModelConfig
from ..errors import UpstreamProtocolError
from ..protocol import anthropic, gemini, openai
from ..protocol.anthropic_stream import AnthropicDecoder
from ..protocol.gemini_stream import GeminiDecoder
from ..protocol.sse import SSESplitter
from ..types import Usage

__all__ = ["BROKEN", "AnthropicPassThrough", "GeminiPassThrough", "OpenAIPassThrough", "SplitStream", "StreamTranslator", "broken", "load", "reading"]

#: What reading a malformed answer raises in code that expects a well-formed one.
BROKEN = (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError, RecursionError)


def broken(exc: BaseException) -> UpstreamProtocolError:
    """The relay's error for an answer that made the reading code fail (its text is not quoted:
    it may hold anything the upstream sent)."""
    return UpstreamProtocolError(f"The provider's answer could not be read ({type(exc).__name__}).")


class _Reading:
    """``with reading():`` -- :raises UpstreamProtocolError: for anything in :data:`BROKEN`
    raised inside. A plain class, not a generator: it runs on every answer."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> Literal[False]:
        if exc is not None and isinstance(exc, BROKEN):
            raise broken(exc) from exc
        return False


_READING = _Reading()


def reading() -> _Reading:
    """The guard around reading an upstream answer (one shared, stateless instance)."""
    return _READING


def load(raw: bytes) -> dict[str, Any]:
    """A whole answer's JSON object.

    :raises UpstreamProtocolError: when it is not one.
    """
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UpstreamProtocolError("The provider's answer is not valid JSON.") from exc
    if not isinstance(payload, dict):
        raise UpstreamProtocolError("The provider's answer is not a JSON object.")
    return payload


class StreamTranslator:
    """Base of the stream translators: ``feed`` and ``close`` guarded by :func:`broken`.

    Subclasses write ``_feed`` / ``_close``. Translators may also set ``failed`` when the
    provider reported an error inside the stream (the caller has seen it).
    """

    __slots__ = ()

    @property
    def usage(self) -> Usage | None:
        """The usage the provider reported so far (``None`` until it does)."""
        raise NotImplementedError

    @property
    def done(self) -> bool:
        """Set once the provider's terminal event has gone through (the stream is complete)."""
        raise NotImplementedError

    def feed(self, chunk: bytes) -> bytes:
        """Provider bytes in, caller bytes out (possibly empty until an event completes).

        :raises UpstreamError: for an error event, or an event that cannot be read.
        """
        try:
            return self._feed(chunk)
        except BROKEN as exc:
            raise broken(exc) from exc

    def close(self) -> bytes:
        """Whatever the caller still needs once the provider's stream has ended."""
        try:
            return self._close()
        except BROKEN as exc:
            raise broken(exc) from exc

    def _feed(self, chunk: bytes) -> bytes:
        raise NotImplementedError

    def _close(self) -> bytes:
        raise NotImplementedError


class SplitStream(StreamTranslator):
    """A stream whose events an :class:`SSESplitter` splits out, forwarded as they complete:
    a subclass's ``_feed`` reads the usage and the end from them."""

    __slots__ = ("_done", "_usage", "failed", "splitter")

    def __init__(self) -> None:
        self.splitter = SSESplitter()
        self._usage: Usage | None = None
        self._done = False
        self.failed = False

    @property
    def usage(self) -> Usage | None:
        return self._usage

    @property
    def done(self) -> bool:
        return self._done

    def _close(self) -> bytes:
        return b"".join(event.raw for event in self.splitter.flush())


class _OpenAIStream(SplitStream):
    """Forwards OpenAI SSE events as they complete, reading usage from the final chunk.

    The relay always asks the provider for usage; if the caller did not, the usage-only chunk
    is left out so the caller sees exactly what it asked for. An error event goes on with the
    upstream keys taken out of it.
    """

    __slots__ = ("include_usage",)

    def __init__(self, include_usage: bool) -> None:
        super().__init__()
        self.include_usage = include_usage

    def _feed(self, chunk: bytes) -> bytes:
        if chunk[:5] == b"data:" and chunk.endswith(b"\n\n") and self.splitter.at_boundary() and b"\r" not in chunk \
                and b'"usage"' not in chunk and b"[DONE]" not in chunk and b'"error"' not in chunk:
            # Whole events, none of them usage, the end or an error: they go on as they came,
            # unsplit (the common chunk of a stream; split, each cost a parse per event).
            return chunk
        out = []
        for event in self.splitter.feed(chunk):
            raw = event.raw
            if event.data == b"[DONE]":
                self._done = True
            elif b'"usage":{' in event.data or b'"usage": {' in event.data:
                if not self._take_usage(event.data):
                    continue
            elif event.data.startswith(b'{"error"'):
                self.failed = True
                raw = redact.scrub(raw.decode("utf-8", "replace")).encode()
            out.append(raw)
        return b"".join(out)

    def _take_usage(self, data: bytes) -> bool:
        """Read the usage; whether the event should still reach the caller."""
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            return True
        if not isinstance(payload, dict):
            return True
        self._usage = openai.usage_of(payload) or self._usage
        return self.include_usage or bool(payload.get("choices"))


class OpenAIPassThrough:
    """OpenAI in, OpenAI out: only the model name changes on the way up."""

    forward_headers: tuple[str, ...] = ()

    def request(self, body: dict[str, Any], model: ModelConfig, stream: bool) -> dict[str, Any]:
        upstream = dict(body)
        upstream["model"] = model.upstream
        if stream:
            options = body.get("stream_options")
            upstream["stream_options"] = {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}
        return upstream

    def response(self, raw: bytes) -> tuple[bytes, Usage | None]:
        with reading():
            return raw, openai.usage_of(load(raw))

    def stream(self, body: dict[str, Any]) -> StreamTranslator:
        return _OpenAIStream(openai.include_usage(body))


class _DecodedStream(StreamTranslator):
    """Forwards a provider's events untouched, each of those named in ``READ`` (every event
    when ``None``) read by the format's decoder for its usage and its finish; an error event
    becomes the relay's own (recorded) error."""

    __slots__ = ("decoder",)
    READ: ClassVar[frozenset[str] | None] = None

    def __init__(self, decoder: Any) -> None:
        self.decoder = decoder

    @property
    def usage(self) -> Usage | None:
        usage: Usage | None = self.decoder.usage
        return usage

    @property
    def done(self) -> bool:
        return bool(self.decoder.done)

    def _feed(self, chunk: bytes) -> bytes:
        out = []
        decoder, read = self.decoder, self.READ
        for event in decoder.splitter.feed(chunk):
            if read is None or event.event in read:
                decoder.read(event)
            out.append(event.raw)
        return b"".join(out)

    def _close(self) -> bytes:
        return b"".join(event.raw for event in self.decoder.splitter.flush())


class _AnthropicStream(_DecodedStream):
    """Anthropic's events, read from ``message_start`` and ``message_delta`` for the usage."""

    __slots__ = ()
    READ = frozenset({"message_start", "message_delta", "message_stop", "error"})

    def __init__(self) -> None:
        super().__init__(AnthropicDecoder())


class AnthropicPassThrough:
    """Anthropic in, Anthropic out: only the model name changes (and ``max_tokens`` is filled
    in when missing); unknown fields and the ``anthropic-beta`` / ``anthropic-version``
    headers go through untouched."""

    forward_headers: tuple[str, ...] = ("anthropic-version", "anthropic-beta")

    def request(self, body: dict[str, Any], model: ModelConfig, stream: bool) -> dict[str, Any]:
        upstream = dict(body)
        upstream["model"] = model.upstream
        if "max_tokens" not in upstream:
            upstream["max_tokens"] = model.default_max_tokens
        return upstream

    def response(self, raw: bytes) -> tuple[bytes, Usage | None]:
        with reading():
            return raw, anthropic.usage_from_body(load(raw).get("usage"))

    def stream(self, body: dict[str, Any]) -> StreamTranslator:
        return _AnthropicStream()


class _GeminiStream(_DecodedStream):
    """Gemini's events, each read for its usage and its finish."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(GeminiDecoder())


class GeminiPassThrough:
    """Gemini in, Gemini out: the model goes in the URL (the configured upstream name), the
    body as the caller sent it, without the relay's own ``model`` / ``stream`` marks."""

    forward_headers: tuple[str, ...] = ()

    def request(self, body: dict[str, Any], model: ModelConfig, stream: bool) -> dict[str, Any]:
        return {k: v for k, v in body.items() if k not in ("model", "stream")}

    def response(self, raw: bytes) -> tuple[bytes, Usage | None]:
        with reading():
            return raw, gemini.usage_from_metadata(load(raw).get("usageMetadata"))

    def stream(self, body: dict[str, Any]) -> StreamTranslator:
        return _GeminiStream()
