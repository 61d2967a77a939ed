"""The example FastAPI service, unchanged, with two meters for the agent benchmark.

``GET /__meters`` answers (and resets) what was seen since the last call:

* event-loop lag: a task sleeps 5 ms again and again and records how late it wakes (the time
  every callback on the loop waits behind the others), p50 / p99 / max in ms;
* garbage collections: count, total and longest pause per generation, in ms, and the objects
  the collector tracks (frozen ones apart).

Every other request goes to ``example_projects/fastapi_service/main.py``'s app.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "example_projects" / "fastapi_service"))
from main import app as service  # noqa: E402

TICK = 0.005
_lags: list[float] = []
_gc: dict[int, list[float]] = {0: [], 1: [], 2: []}
_gc_start = [0.0]
_task: list[asyncio.Task[None]] = []


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _gc_start[0] = time.perf_counter()
    else:
        _gc[info["generation"]].append((time.perf_counter() - _gc_start[0]) * 1000)


gc.callbacks.append(_on_gc)
if os.environ.get("BENCH_GC_THRESHOLD"):  # e.g. "50000,20,10": the collector's thresholds for this run
    gc.set_threshold(*(int(x) for x in os.environ["BENCH_GC_THRESHOLD"].split(",")))


async def _ticker() -> None:
    while True:
        t = time.perf_counter()
        await asyncio.sleep(TICK)
        _lags.append((time.perf_counter() - t - TICK) * 1000)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q / 100 * len(s)))], 3)


def _meters() -> bytes:
    out = {
        "loop_lag_ms": {"p50": _pct(_lags, 50), "p99": _pct(_lags, 99), "max": _pct(_lags, 100), "samples": len(_lags)},
        "gc": {str(g): {"count": len(v), "total_ms": round(sum(v), 1), "max_ms": round(max(v), 2) if v else 0.0}
               for g, v in _gc.items()},
        "gc_tracked_objects": len(gc.get_objects()),
        "gc_frozen_objects": gc.get_freeze_count(),
    }  # fmt: skip
    _lags.clear()
    for v in _gc.values():
        v.clear()
    return json.dumps(out).encode()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http" and scope["path"] == "/__meters":
        if not _task:
            _task.append(asyncio.get_running_loop().create_task(_ticker()))
        body = _meters()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
        return
    await service(scope, receive, send)
