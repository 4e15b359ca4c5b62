"""Async views: one holds a pooled connection for 50 ms; one reports the event loop's lag.

The lag probe is a task on the server's loop that asks to wake every 10 ms and records how
late it woke: anything blocking the loop (work on it, or a blocking wait) shows up as lag.
On a shared machine the thread may also wait for a CPU; Linux counts that wait per thread
(``schedstat``: time runnable but not running), so the probe reports the lag without it
too: the time the loop was held by code running on it.
"""

from __future__ import annotations

import asyncio
import threading

from django.http import HttpRequest, JsonResponse

from pooled_clients import pools

_INTERVAL = 0.01
_state: dict[str, float] = {"max_lag": 0.0, "max_held": 0.0, "samples": 0}
_probe: list[asyncio.Task[None]] = []


def _runqueue_wait() -> float:
    """Seconds this thread has spent runnable but waiting for a CPU (0.0 if unknown)."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/schedstat") as stat:
            return int(stat.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


async def _measure_lag() -> None:
    loop = asyncio.get_running_loop()
    while True:
        before, waited_before = loop.time(), _runqueue_wait()
        await asyncio.sleep(_INTERVAL)
        lag = loop.time() - before - _INTERVAL
        held = lag - (_runqueue_wait() - waited_before)
        _state["samples"] += 1
        _state["max_lag"] = max(_state["max_lag"], lag)
        _state["max_held"] = max(_state["max_held"], held)


def _ensure_probe() -> None:
    if not _probe or _probe[0].done():
        _probe[:] = [asyncio.get_running_loop().create_task(_measure_lag())]


async def hold(request: HttpRequest) -> JsonResponse:
    """Hold a pooled connection for 50 ms (a query, then a pause)."""
    _ensure_probe()
    async with pools["db"].aconnection() as conn:
        cursor = await conn.execute("select pg_backend_pid()")
        row = await cursor.fetchone()
        await asyncio.sleep(0.05)
    return JsonResponse({"pid": row[0] if row else None})


async def lag(request: HttpRequest) -> JsonResponse:
    """The largest lag seen since the last ``?reset=1``, in milliseconds, and pool stats."""
    _ensure_probe()
    if request.GET.get("reset"):
        _state["max_lag"] = _state["max_held"] = 0.0
        _state["samples"] = 0
    stats = pools["db"].stats()
    return JsonResponse({
        "max_lag_ms": round(_state["max_lag"] * 1000.0, 3),
        "max_held_ms": round(_state["max_held"] * 1000.0, 3),
        "samples": _state["samples"],
        "size": stats.size, "idle": stats.idle, "in_use": stats.in_use,
        "acquired_total": stats.acquired_total, "created_total": stats.created_total,
    })


async def idle(request: HttpRequest) -> JsonResponse:
    """The same 50 ms without a pooled client: the site's own cost, for comparison."""
    _ensure_probe()
    await asyncio.sleep(0.05)
    return JsonResponse({"pid": None})


async def ws_echo(request: HttpRequest) -> JsonResponse:
    """One round trip over a pooled WebSocket (pool ``ws``, when ASYNC_SITE_WS_URL is set)."""
    async with pools["ws"].aconnection() as ws:
        await ws.send(request.GET.get("say", ""))
        reply = await ws.recv()
    stats = pools["ws"].stats()
    return JsonResponse({"reply": reply, "size": stats.size, "created": stats.created_total})
