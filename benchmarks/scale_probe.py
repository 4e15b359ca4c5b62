"""Child process: what many pools and many idle clients cost when nothing happens.

``python -m benchmarks.scale_probe --pools 1000 --seconds 5`` prints one JSON line with

- the CPU time the maintenance thread spends per second of wall time with ``--pools`` pools
  idle, each started (used once) and holding one idle client;
- the memory one idle client costs the pool beyond the client's own size (tracemalloc), for
  a bare Python object and for a ``requests.Session``;
- for keyed pools, with 1, 100 and 10,000 live keys beside a hand-rolled dict of as many
  pools: bytes per idle key over its client's own size, and one checkout + return; and the
  maintenance thread's CPU with the most keys idle.

Each run is a fresh interpreter so that nothing else in the process allocates or runs.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
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
    cpu = _idle_cpu(seconds)
    for pool in pools:
        pool.close()
    return {"cpu_per_second": cpu, "pools": float(n)}


def _idle_cpu(seconds: float) -> float:
    """The maintenance thread's CPU seconds per second of wall time while nothing happens.

    The thread starts on a pool's first slow-path use (the first checkout of each pool);
    the first rounds after the fill are let pass before measuring."""
    time.sleep(min(1.0, seconds / 4))
    thread = _maintenance_thread()
    assert thread.ident is not None
    clock = time.pthread_getcpuclockid(thread.ident)
    c0, t0 = time.clock_gettime(clock), time.perf_counter()
    time.sleep(seconds)
    if not thread.is_alive():
        raise RuntimeError("the maintenance thread died while it was measured")
    c1, t1 = time.clock_gettime(clock), time.perf_counter()
    return (c1 - c0) / (t1 - t0)


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


class KeyBackend(ClientBackend[Any]):
    """In-memory clients for any key."""

    def create(self) -> Any:
        return Bare()

    def key_options(self, key: Any) -> dict[str, Any]:
        return {}


def _per_op(checkout: Callable[[Any], None], keys: list[Any], seconds: float) -> float:
    """Microseconds per checkout + return, cycling through ``keys`` (at least 20 of them)."""
    n, i, count = len(keys), 0, 0
    clock = time.perf_counter
    start = clock()
    deadline = start + seconds
    while count < 20 or clock() < deadline:
        checkout(keys[i])
        i = i + 1 if i + 1 < n else 0
        count += 1
    return (clock() - start) / count * 1e6


def keyed(n: int, seconds: float, idle_seconds: float) -> dict[str, float]:
    """A keyed pool with ``n`` live keys (one idle client each) beside a hand-rolled dict of
    ``n`` pools: bytes per key over the client's own size, the cost of one checkout, and
    (when ``idle_seconds``) the maintenance thread's CPU with the keys idle."""
    from pooled_clients.keyed import KeyedPool

    keys = [f"tenant-{i}" for i in range(n)]
    settings = PoolSettings(min_size=0, max_size=2)

    def build_keyed() -> Any:
        pool: KeyedPool[Any] = KeyedPool("keyed", KeyBackend, {}, settings, max_keys=n,
                                         idle_timeout=None)
        for k in keys:
            pool.release(pool.acquire(key=k))
        return pool

    def build_dict() -> dict[str, Pool[Any]]:
        pools: dict[str, Pool[Any]] = {}
        for k in keys:
            pool = pools[k] = Pool(f"d-{k}", BareBackend(k, Bare), settings)
            pool.release(pool.acquire())
        return pools

    own, bare = _traced(lambda: [Bare() for _ in keys])
    del bare
    t0 = time.perf_counter()
    keyed_bytes, kpool = _traced(build_keyed)
    build_s = time.perf_counter() - t0
    dict_bytes, dpools = _traced(build_dict)

    def keyed_checkout(k: Any) -> None:
        kpool.release(kpool.acquire(key=k))

    def dict_checkout(k: Any) -> None:
        pool = dpools[k]
        pool.release(pool.acquire())

    result = {
        "keys": float(n),
        "keyed_bytes": (keyed_bytes - own) / n,
        "dict_bytes": (dict_bytes - own) / n,
        "keyed_us": _per_op(keyed_checkout, keys, seconds),
        "dict_us": _per_op(dict_checkout, keys, seconds),
        "keyed_build_s": build_s,
    }
    for pool in dpools.values():
        pool.close()
    if idle_seconds > 0:
        result["maintenance_cpu"] = _idle_cpu(idle_seconds)
    kpool.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pools", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--keys", default="1,100,10000", help="live key counts")
    parser.add_argument("--op-seconds", type=float, default=0.5,
                        help="seconds of checkouts per keyed cell")
    args = parser.parse_args(argv)
    key_counts = [int(k) for k in args.keys.split(",") if k.strip()]

    import requests

    result: dict[str, Any] = {
        "memory_bare": memory_per_client(Bare, args.clients),
        "memory_session": memory_per_client(requests.Session, min(args.clients, 200)),
        "maintenance": maintenance_cpu(args.pools, args.seconds),
    }
    if importlib.util.find_spec("pooled_clients.keyed") is not None:
        result["keyed"] = [
            keyed(n, args.op_seconds, args.seconds if n == max(key_counts) else 0.0)
            for n in key_counts
        ]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
