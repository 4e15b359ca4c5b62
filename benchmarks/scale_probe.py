"""Child process: what many pools and many idle clients cost when nothing happens.

``python -m benchmarks.scale_probe --pools 1000 --seconds 5`` prints one JSON line with

- the CPU time the maintenance thread spends per second of wall time with ``--pools`` pools
  idle, each started (used once) and holding one idle client;
- the memory one idle client costs the pool beyond the client's own size (tracemalloc), for
  a bare Python object and for a ``requests.Session``.

Each run is a fresh interpreter so that nothing else in the process allocates or runs.
"""

from __future__ import annotations

import argparse
import gc
import json
import threading
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from pooled_clients.backends.base import ClientBackend
from pooled_clients.core import PoolSettings
from pooled_clients.pool import Pool


class Bare:
    """The smallest client: an object with a ``__dict__``."""


class BareBackend(ClientBackend[Any]):
    def __init__(self, alias: str, factory: Callable[[], Any]) -> None:
        super().__init__(alias, {})
        self._factory = factory

    def create(self) -> Any:
        return self._factory()


def _maintenance_thread() -> threading.Thread:
    for t in threading.enumerate():
        if t.name == "pooled_clients-maintenance":
            return t
    raise RuntimeError("the maintenance thread is not running")


def maintenance_cpu(n: int, seconds: float) -> dict[str, float]:
    pools = [
        Pool(f"idle{i}", BareBackend(f"idle{i}", Bare), PoolSettings(min_size=1, max_size=2))
        for i in range(n)
    ]
    for pool in pools:
        pool.release(pool.acquire())
    # The thread starts on a pool's first slow-path use; the first checkout of each pool was one.
    thread = _maintenance_thread()
    assert thread.ident is not None
    clock = time.pthread_getcpuclockid(thread.ident)
    time.sleep(min(1.0, seconds / 4))  # let the first rounds after the fill pass
    c0, t0 = time.clock_gettime(clock), time.perf_counter()
    time.sleep(seconds)
    c1, t1 = time.clock_gettime(clock), time.perf_counter()
    for pool in pools:
        pool.close()
    return {"cpu_per_second": (c1 - c0) / (t1 - t0), "pools": float(n)}


def _traced(build: Callable[[], Any]) -> tuple[int, Any]:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = build()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return after - before, kept


def memory_per_client(factory: Callable[[], Any], n: int) -> dict[str, float]:
    """Bytes of ``n`` bare clients, and of a pool holding ``n`` idle ones, per client."""
    own, kept = _traced(lambda: [factory() for _ in range(n)])
    del kept

    def pooled() -> Pool[Any]:
        pool: Pool[Any] = Pool("mem", BareBackend("mem", factory),
                               PoolSettings(min_size=0, max_size=n))
        held = [pool.acquire() for _ in range(n)]
        for c in held:
            pool.release(c)
        return pool

    total, pool = _traced(pooled)
    pool.close()
    return {"own": own / n, "pooled": total / n, "overhead": (total - own) / n}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pools", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=1000)
    args = parser.parse_args(argv)

    import requests

    result: dict[str, Any] = {
        "memory_bare": memory_per_client(Bare, args.clients),
        "memory_session": memory_per_client(requests.Session, min(args.clients, 200)),
        "maintenance": maintenance_cpu(args.pools, args.seconds),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
