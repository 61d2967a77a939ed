"""A suite-wide watch for secrets: every log record (all loggers, with exception traces), every
answer the relay gives (status line headers, whole bodies, every streamed chunk, on every host,
since all adapters answer through ``Relay.handle``/``Relay.reject``), every ledger row, and every
request the fake upstream received (the caller's relay key must never reach a provider).

Content (a test's prompt text, ``scanner.add_content``) is watched everywhere the relay stores
or reports something (log records, ledger rows, and the spans and metrics a test hands to
:meth:`SecretScanner.scan_telemetry`), but not in the relay's answers, which carry it by design
(the fake upstream echoes the prompt), nor in what the upstream received.

The hooks only look: each wraps the real method and returns exactly what it returned.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Iterable
from dataclasses import astuple
from typing import Any


class SecretScanner:
    """Collects findings: ``(where, secret name, excerpt)``; the secret itself is masked."""

    def __init__(self, secrets: dict[str, str]) -> None:
        self.secrets = dict(secrets)
        #: Prompt text that must not be stored (answers may carry it).
        self.content: dict[str, str] = {}
        self.findings: list[tuple[str, str, str]] = []
        self.checked = 0
        self._lock = threading.Lock()

    def add(self, name: str, value: str) -> None:
        """Watch one more secret (a test that configures its own)."""
        self.secrets[name] = value

    def add_content(self, name: str, value: str) -> None:
        """Watch prompt text: it may be in answers, nowhere the relay stores or reports."""
        self.content[name] = value

    def scan(self, where: str, *texts: Any) -> None:
        with self._lock:
            self.checked += 1
        watched = self.secrets if where in _ANSWERS or not self.content else {**self.secrets, **self.content}
        for text in texts:
            if isinstance(text, bytes):
                text = text.decode("utf-8", "replace")
            elif not isinstance(text, str):
                text = repr(text)
            for name, secret in watched.items():
                index = text.find(secret)
                if index >= 0:
                    excerpt = text[max(0, index - 60) : index + len(secret) + 60].replace(secret, f"<{name}>")
                    with self._lock:
                        self.findings.append((where, name, excerpt))

    def scan_telemetry(self, spans: Iterable[Any] = (), metrics: Any = None) -> None:
        """Exported spans (name, attributes, events) and metric data, as stored by a backend."""
        for span in spans:
            events = [(e.name, dict(e.attributes or {})) for e in getattr(span, "events", ())]
            self.scan(f"span {span.name}", span.name, dict(span.attributes or {}), events)
        if metrics is not None:
            self.scan("metrics", metrics.to_json() if hasattr(metrics, "to_json") else metrics)

    def scan_requests(self, requests: Iterable[Any], names: tuple[str, ...]) -> None:
        """The fake upstream's recorded requests: headers and bodies, for the ``names`` secrets only."""
        for request in requests:
            text = repr(getattr(request, "headers", "")) + repr(getattr(request, "body", ""))
            for name in names:
                if self.secrets[name] in text:
                    self.findings.append(("upstream request", name, f"{request.method} {request.path}"))


#: Where content is expected: the relay's answers to its caller.
_ANSWERS = ("response", "stream chunk")


class _Handler(logging.Handler):
    def __init__(self, scanner: SecretScanner) -> None:
        super().__init__(logging.DEBUG)
        self.scanner = scanner
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)  # includes the exception trace, if any
        except Exception:  # noqa: BLE001 - a record that cannot format is the test's problem, not ours
            text = repr(record.msg) + repr(record.args)
        self.scanner.scan(f"log {record.name}", text)


def _watch_whole(scanner: SecretScanner, original):
    def scan(response):
        scanner.scan("response", response.status, response.headers, response.body)
        return response

    if _is_async(original):
        @functools.wraps(original)
        async def watched(*args, **kwargs):
            return scan(await original(*args, **kwargs))
    else:
        @functools.wraps(original)
        def watched(*args, **kwargs):
            return scan(original(*args, **kwargs))
    return watched


def _watch_chunks(scanner: SecretScanner, original):
    @functools.wraps(original)
    async def watched(self):
        chunk = await original(self)
        scanner.scan("stream chunk", chunk)
        return chunk

    return watched


def _is_async(function) -> bool:
    import inspect

    return inspect.iscoroutinefunction(function)


def install(scanner: SecretScanner, patch) -> logging.Handler:
    """Hook everything up; ``patch(obj, name, value)`` is a MonkeyPatch's ``setattr``.
    Returns the log handler, for the caller to remove."""
    from asgi_ai_relay.relay import Relay
    from asgi_ai_relay.stages import usage
    from asgi_ai_relay.stages.cache import CacheReplay
    from asgi_ai_relay.stages.stream import RelayStream

    patch(Relay, "handle", _watch_whole(scanner, Relay.handle))
    patch(Relay, "reject", _watch_whole(scanner, Relay.reject))
    for cls in (RelayStream, CacheReplay):
        patch(cls, "__anext__", _watch_chunks(scanner, cls.__anext__))
    row_class = usage.LedgerRow

    def scanned_row(*args, **kwargs):
        row = row_class(*args, **kwargs)
        scanner.scan("ledger row", astuple(row))
        return row

    patch(usage, "LedgerRow", scanned_row)
    handler = _Handler(scanner)
    root = logging.getLogger()
    root.addHandler(handler)
    # Let the relay's debug lines and every library's info lines be written, so they are read.
    patch(root, "level", min(root.level, logging.INFO))
    relay_logger = logging.getLogger("asgi_ai_relay")
    patch(relay_logger, "level", logging.DEBUG)
    logging.getLogger().manager._clear_cache()
    return handler
