"""The demo pages: each borrows a client from a pool for as short a time as it needs it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import requests
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from pooled_clients import PoolError, pools


def index(request: HttpRequest) -> HttpResponse:
    """Every pool of this process with its live numbers."""
    return render(request, "example/index.html", {
        "stats": list(pools.stats().values()),
        "asgi_url": settings.ASGI_URL,
    })


def warehouse(request: HttpRequest) -> HttpResponse:
    """Stock levels from the PostgreSQL "warehouse" pool."""
    started = time.perf_counter()
    try:
        with pools["warehouse"].connection() as conn:
            rows = conn.execute(
                "select sku, name, stock from products order by sku"
            ).fetchall()
            backend_pid = conn.info.backend_pid
    except PoolError as exc:
        # The message names the pool and its state, with the target masked: safe to show.
        return _unavailable(request, "warehouse", exc)
    return render(request, "example/warehouse.html", {
        "rows": rows,
        "backend_pid": backend_pid,
        "elapsed_ms": (time.perf_counter() - started) * 1000,
        "stats": pools["warehouse"].stats(),
    })


def payments(request: HttpRequest) -> HttpResponse:
    """A charge fetched through the "payments" HTTP API pool."""
    started = time.perf_counter()
    try:
        with pools["payments"].connection() as http:
            response = http.get("charges/42")
            response.raise_for_status()
            charge: Any = response.json()
    except PoolError as exc:
        return _unavailable(request, "payments", exc)
    except requests.RequestException as exc:
        # requests' own messages may quote URLs; the class name is enough for a visitor.
        return _unavailable(request, "payments", f"the API call failed ({type(exc).__name__})")
    return render(request, "example/payments.html", {
        "charge": charge,
        "status": response.status_code,
        "elapsed_ms": (time.perf_counter() - started) * 1000,
        "stats": pools["payments"].stats(),
    })


async def overview(request: HttpRequest) -> HttpResponse:
    """Stock and a charge fetched concurrently from an async view (served by uvicorn)."""
    started = time.perf_counter()

    async def in_stock() -> list[Any]:
        # An AsyncPostgresBackend pool: psycopg AsyncConnections, no thread involved.
        async with pools["warehouse_async"].aconnection() as conn:
            cursor = await conn.execute(
                "select sku, name, stock from products order by sku"
            )
            return await cursor.fetchall()

    async def charge() -> Any:
        # A sync client from async code: waiting for it never blocks the event loop; the
        # blocking request itself goes to a thread.
        async with pools["payments"].aconnection() as http:
            response = await asyncio.to_thread(http.get, "charges/42")
            response.raise_for_status()
            return response.json()

    try:
        rows, payment = await asyncio.gather(in_stock(), charge())
    except PoolError as exc:
        return _unavailable(request, "warehouse or payments", exc)
    except requests.RequestException as exc:
        return _unavailable(request, "payments", f"the API call failed ({type(exc).__name__})")
    return render(request, "example/overview.html", {
        "rows": rows,
        "charge": payment,
        "elapsed_ms": (time.perf_counter() - started) * 1000,
    })


def _unavailable(request: HttpRequest, alias: str, error: object) -> HttpResponse:
    return render(request, "example/unavailable.html", {"alias": alias, "error": str(error)},
                  status=503)
