"""What a relay opens and closes: its ledger, cache, providers and upstream client, the start-up
that seeds its budgets, and the shutdown that flushes everything.

Parts open on first use; :meth:`Lifecycle.startup` runs once per process, from the host's
lifespan where it has one and from the first request otherwise (WSGI hosts), behind a lock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from .errors import StorageError
from .providers import Provider, build_provider
from .stages import budget
from .storage import Cache, Ledger, cache_from_uri, ledger_from_uri, spend_totals, wait_ready
from .transport import UpstreamHttp, make_client

if TYPE_CHECKING:
    from .config import RelayConfig
    from .keys.directory import KeyDirectory
    from .storage.responses import ResponseStore
    from .metrics import Metrics
    from .routing import Router
    from .stages.ratelimit import Traffic

__all__ = ["Lifecycle"]

logger = logging.getLogger("asgi_ai_relay")

#: Seconds between two tries at seeding the budgets from a ledger that could not be read.
_RESEED = 5.0


class Lifecycle:
    """The parts of a :class:`~asgi_ai_relay.relay.Relay` and their start and end."""

    config: RelayConfig
    spend: budget.Spend | None
    metrics: Metrics | None
    traffic: Traffic
    router: Router
    background: set[asyncio.Task[None]]
    _transport: Any
    _ledger: Ledger | None
    _cache: Cache | None
    _client: UpstreamHttp | None
    _providers: dict[str, Provider] | None
    responses: ResponseStore
    key_directory: KeyDirectory | None

    def _init_lifecycle(self) -> None:
        self.started = False
        self._unseeded = self.spend is not None
        self._next_seed = 0.0
        self._start_lock: asyncio.Lock | None = None

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            self._ledger = ledger_from_uri(self.config.storage.ledger)
        return self._ledger

    def flush_ledger(self) -> None:
        """Flush and close the ledger if it was ever opened (at a host's process exit); a ledger
        never opened is not opened here."""
        if self._ledger is not None:
            self._ledger.close()

    @property
    def cache(self) -> Cache:
        """The response cache ``storage.cache`` names (opened on first use)."""
        if self._cache is None:
            self._cache = cache_from_uri(self.config.storage.cache)
        return self._cache

    @property
    def providers(self) -> dict[str, Provider]:
        if self._providers is None:
            self._providers = {
                name: build_provider(cfg, self.client, self.config.timeouts)
                for name, cfg in self.config.providers.items()
            }
        return self._providers

    @property
    def client(self) -> UpstreamHttp:
        """The one pooled upstream client of this relay (opened on first use, in the loop)."""
        if self._client is None:
            self._client = make_client(self.config.http, self.config.timeouts, self._transport, self.config.providers)
        return self._client

    async def startup(self) -> None:
        """Open the ledger and the upstream client and seed the budgets, once.

        Called by the host's lifespan where there is one, and by :meth:`handle` on first use
        otherwise (WSGI hosts, hosts without lifespan), behind a lock, so every host starts
        the same way. A part that cannot start is logged and the relay serves degraded: a
        ledger whose database is down spools its rows, and budgets not yet seeded from it are
        seeded on a later request (at most every ``_RESEED`` seconds), never silently reset.
        With ``storage.ledger_required`` it raises instead when the ledger cannot be reached.

        :raises StorageError: only under ``storage.ledger_required``.
        """
        if self.started and not self._unseeded:
            return
        now = time.monotonic()
        if self.started and now < self._next_seed:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self.started and not self._unseeded:
                return
            if not self.started:
                await self._open()
                self.started = True
            self._next_seed = now + _RESEED
            try:
                await self._seed_budgets()
            except Exception as exc:
                logger.error("budgets are not seeded from the ledger yet (%s); admitting with what this "
                             "process has counted, retrying in %.0fs", exc, _RESEED)
            else:
                self._unseeded = False

    async def _open(self) -> None:
        try:
            _ = self.ledger, self.providers
            if self.config.cache.mode != "off":
                _ = self.cache
        except Exception:
            if self.config.storage.ledger_required:
                raise
            logger.exception("the relay failed to start fully; it serves degraded")
            return
        if self.config.storage.ledger_required:
            ready = await asyncio.to_thread(wait_ready, self.ledger, self.config.timeouts.connect)
            if not ready:
                raise StorageError("storage.ledger_required: the ledger's database cannot be reached.")

    async def _seed_budgets(self) -> None:
        if self.spend is not None:
            now = time.time()
            totals = await asyncio.to_thread(spend_totals, self.ledger, budget.month_start(now), budget.day_start(now))
            self.spend.seed(totals, now)

    async def shutdown(self) -> None:
        """Close the upstream client and flush the ledger; nothing recorded is lost."""
        while self.background:  # and what they spawn in turn (a settle's budget alert)
            await asyncio.gather(*list(self.background), return_exceptions=True)
        if self._cache is not None:
            await self._cache.aclose()
            self._cache = None
        if self._providers is not None:
            for provider in self._providers.values():
                await provider.aclose()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
            self._providers = None
        await self.traffic.aclose()
        await self.router.aclose()
        await self.responses.aclose()
        if self.key_directory is not None:
            await self.key_directory.aclose()
        if self.spend is not None:
            await self.spend.aclose()
        if self._ledger is not None:
            # On the loop, not in a thread: at interpreter exit (WSGI hosts) no new thread starts.
            # With its database down the ledger waits for it a bounded while, then spools.
            self._ledger.close()
        self.started = False
        self._unseeded = self.spend is not None
        self._start_lock = None

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background, awaited on shutdown: for a release that needs I/O
        (a Redis refund), scheduled from the synchronous :meth:`finish`."""
        self.spawn_task(work)

    def spawn_task(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """:meth:`spawn`, returning the task (for work something else may wait for)."""
        task = asyncio.get_running_loop().create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task
