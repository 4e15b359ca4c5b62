"""Test helpers usable with or without pytest."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from pooled_clients.handler import pools
from pooled_clients.stats import Lease

__all__ = ["break_pool", "leaked_leases"]


class ServiceUnavailableForTest(ConnectionError):
    """The error a broken pool's creation attempts raise."""


@contextlib.contextmanager
def break_pool(alias: str, message: str = "service made unavailable by break_pool()"
               ) -> Iterator[None]:
    """Make ``pools[alias]`` behave as if its service were down, then restore it.

    Idle clients are dropped and every creation attempt fails, so acquires raise
    ``ClientCreationError`` and health checks fail, exactly as in an outage.
    """
    pool: Any = pools[alias]
    backends = getattr(pool, "backends", None) or [pool.backend]
    originals: list[tuple[Any, Any]] = []

    def refuse() -> Any:
        raise ServiceUnavailableForTest(message)

    for backend in backends:
        originals.append((backend, backend.__dict__.get("create")))
        backend.create = refuse
    # Every client open now is presumed dead, as after an outage; clients created once the
    # pool is restored are fresh (an infinite cut-off would condemn those too).
    members = getattr(pool, "members", None)
    units = members() if callable(members) else [pool]
    for unit in units:
        unit.presume_dead(time.monotonic())
    try:
        yield
    finally:
        for backend, original in originals:
            if original is None:
                del backend.create
            else:
                backend.create = original
        for unit in units:
            unit.probe_now()


def leaked_leases() -> dict[str, tuple[Lease, ...]]:
    """alias -> clients still checked out, for every pool built in this process."""
    found = {}
    for pool in pools.built():
        leases = pool.stats().leases
        if leases:
            found[pool.alias] = leases
    return found
