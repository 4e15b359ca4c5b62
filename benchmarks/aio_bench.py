"""The async path: N tasks on one event loop loop on checkout + use + return for a fixed time.

Used by ``python -m benchmarks`` and on its own::

    python -m benchmarks.aio_bench [--tasks 1,10,100,1000] [--duration 0.5] [--rounds 3]

which starts its own PostgreSQL and HTTP upstream and prints the table; ``--profile 3`` prints
a cProfile of ``AsyncPool``'s 1-task no-query path instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks.micro import Tail, tail_of

POOL_SIZE = 10
SQL = "SELECT 1"

#: workload -> what one operation does.
WORKLOADS: dict[str, str] = {
    "noquery": "checkout + return, no query",
    "select1": "checkout + SELECT 1 + return",
    "get": "checkout + one GET of a small JSON document + return",
}

#: An operation: ``op(query)`` does one checkout + use + return.
Op = Callable[[], Awaitable[None]]


@dataclass
class AsyncContestant:
    key: str
    label: str
    workloads: dict[str, Op]
    close: Callable[[], Awaitable[None]]
    description: str


# --- the floor ---------------------------------------------------------------------------------


async def build_floor(conninfo: str, upstream: str) -> AsyncContestant:
    import psycopg

    conns = [
        await psycopg.AsyncConnection.connect(
            conninfo, autocommit=True, application_name="bench_aio_floor"
        )
        for _ in range(POOL_SIZE)
    ]
    q: asyncio.LifoQueue[Any] = asyncio.LifoQueue()
    for c in conns:
        q.put_nowait(c)
    get, put = q.get, q.put_nowait

    async def noquery() -> None:
        put(await get())

    async def select1() -> None:
        conn = await get()
        try:
            await (await conn.execute(SQL)).fetchone()
        finally:
            put(conn)

    async def close() -> None:
        for c in conns:
            await c.close()

    return AsyncContestant(
        "floor", "floor (asyncio.LifoQueue)", {"noquery": noquery, "select1": select1}, close,
        "10 psycopg AsyncConnections in an asyncio.LifoQueue: get() / put_nowait()",
    )


# --- psycopg_pool ------------------------------------------------------------------------------


async def build_psycopg_pool(conninfo: str, upstream: str) -> AsyncContestant:
    from psycopg_pool import AsyncConnectionPool

    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        conninfo, min_size=POOL_SIZE, max_size=POOL_SIZE, open=False,
        kwargs={"autocommit": True, "application_name": "bench_aio_psycopg_pool"},
    )
    await pool.open(wait=True)
    getconn, putconn = pool.getconn, pool.putconn

    async def noquery() -> None:
        await putconn(await getconn())

    async def select1() -> None:
        conn = await getconn()
        try:
            await (await conn.execute(SQL)).fetchone()
        finally:
            await putconn(conn)

    async def close() -> None:
        await pool.close()

    return AsyncContestant(
        "psycopg_pool", "psycopg_pool AsyncConnectionPool",
        {"noquery": noquery, "select1": select1}, close,
        "psycopg_pool.AsyncConnectionPool(min_size=10, max_size=10); getconn()/putconn()",
    )


async def build_psycopg_pool_with(conninfo: str, upstream: str) -> AsyncContestant:
    from psycopg_pool import AsyncConnectionPool

    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        conninfo, min_size=POOL_SIZE, max_size=POOL_SIZE, open=False,
        kwargs={"autocommit": True, "application_name": "bench_aio_psycopg_pool_with"},
    )
    await pool.open(wait=True)
    connection = pool.connection

    async def noquery() -> None:
        async with connection():
            pass

    async def select1() -> None:
        async with connection() as conn:
            await (await conn.execute(SQL)).fetchone()

    async def close() -> None:
        await pool.close()

    return AsyncContestant(
        "psycopg_pool_with", "psycopg_pool AsyncConnectionPool (async with)",
        {"noquery": noquery, "select1": select1}, close,
        "the same kind of pool through `async with pool.connection()`",
    )


# --- pooled_clients ----------------------------------------------------------------------------


async def _fill(pool: Any) -> None:
    held = [await pool.aacquire() for _ in range(POOL_SIZE)]
    for c in held:
        await pool.arelease(c)


async def build_ours(conninfo: str, upstream: str) -> AsyncContestant:
    from pooled_clients.aio import AsyncPool
    from pooled_clients.backends.postgres import AsyncPostgresBackend
    from pooled_clients.core import PoolSettings

    backend = AsyncPostgresBackend("bench_aio", {
        "conninfo": conninfo, "autocommit": True, "application_name": "bench_aio_ours",
    })
    pool: AsyncPool[Any] = AsyncPool(
        "bench_aio", backend, PoolSettings(min_size=POOL_SIZE, max_size=POOL_SIZE)
    )
    await _fill(pool)
    aacquire, arelease = pool.aacquire, pool.arelease

    async def noquery() -> None:
        await arelease(await aacquire())

    async def select1() -> None:
        conn = await aacquire()
        try:
            await (await conn.execute(SQL)).fetchone()
        finally:
            await arelease(conn)

    async def close() -> None:
        pool.close()

    return AsyncContestant(
        "pooled_clients", "pooled_clients AsyncPool", {"noquery": noquery, "select1": select1},
        close, "AsyncPool with AsyncPostgresBackend, MIN_SIZE=MAX_SIZE=10; aacquire()/arelease(c)",
    )


async def build_ours_with(conninfo: str, upstream: str) -> AsyncContestant:
    from pooled_clients.aio import AsyncPool
    from pooled_clients.backends.postgres import AsyncPostgresBackend
    from pooled_clients.core import PoolSettings

    backend = AsyncPostgresBackend("bench_aio_with", {
        "conninfo": conninfo, "autocommit": True, "application_name": "bench_aio_ours_with",
    })
    pool: AsyncPool[Any] = AsyncPool(
        "bench_aio_with", backend, PoolSettings(min_size=POOL_SIZE, max_size=POOL_SIZE)
    )
    await _fill(pool)
    aconnection = pool.aconnection

    async def noquery() -> None:
        async with aconnection():
            pass

    async def select1() -> None:
        async with aconnection() as conn:
            await (await conn.execute(SQL)).fetchone()

    async def close() -> None:
        pool.close()

    return AsyncContestant(
        "pooled_clients_with", "pooled_clients AsyncPool (async with)",
        {"noquery": noquery, "select1": select1}, close,
        "the same kind of pool through `async with pool.aconnection()`",
    )


async def build_ours_sync(conninfo: str, upstream: str) -> AsyncContestant:
    from pooled_clients.backends.postgres import PostgresBackend
    from pooled_clients.core import PoolSettings
    from pooled_clients.pool import Pool

    backend = PostgresBackend("bench_aio_sync", {
        "conninfo": conninfo, "autocommit": True, "application_name": "bench_aio_ours_sync",
    })
    pool: Pool[Any] = Pool(
        "bench_aio_sync", backend, PoolSettings(min_size=POOL_SIZE, max_size=POOL_SIZE)
    )
    await _fill(pool)
    aconnection = pool.aconnection

    async def noquery() -> None:
        async with aconnection():
            pass

    async def close() -> None:
        pool.close()

    return AsyncContestant(
        "pooled_clients_sync", "pooled_clients sync Pool (async with)",
        {"noquery": noquery}, close,
        "a sync Pool with PostgresBackend used from async code through "
        "`async with pool.aconnection()` (no query: its connections are blocking ones)",
    )


# --- HTTP --------------------------------------------------------------------------------------


async def build_httpx_shared(conninfo: str, upstream: str) -> AsyncContestant:
    import httpx

    client = httpx.AsyncClient(
        base_url=upstream, timeout=10.0,
        limits=httpx.Limits(max_connections=POOL_SIZE, max_keepalive_connections=POOL_SIZE),
    )

    async def get() -> None:
        (await client.get("json/x")).raise_for_status()

    async def close() -> None:
        await client.aclose()

    return AsyncContestant(
        "httpx_shared", "one shared httpx.AsyncClient", {"get": get}, close,
        "one httpx.AsyncClient for every task, its own pool limited to 10 connections",
    )


async def build_ours_http(conninfo: str, upstream: str) -> AsyncContestant:
    from pooled_clients.aio import AsyncPool
    from pooled_clients.backends.async_http import AsyncHTTPBackend
    from pooled_clients.core import PoolSettings

    backend = AsyncHTTPBackend("bench_aio_http", {"base_url": upstream, "timeout": 10})
    pool: AsyncPool[Any] = AsyncPool(
        "bench_aio_http", backend, PoolSettings(min_size=POOL_SIZE, max_size=POOL_SIZE)
    )
    await _fill(pool)  # creating an httpx.AsyncClient blocks the loop for milliseconds
    aconnection = pool.aconnection

    async def get() -> None:
        async with aconnection() as http:
            (await http.get("json/x")).raise_for_status()

    async def close() -> None:
        pool.close()

    return AsyncContestant(
        "pooled_clients_http", "pooled_clients AsyncPool + AsyncHTTPBackend", {"get": get},
        close, "AsyncPool of 10 httpx.AsyncClients (MIN_SIZE=MAX_SIZE=10, each "
        "with its own connection); `async with pool.aconnection()`",
    )


BUILDERS: list[Callable[[str, str], Awaitable[AsyncContestant]]] = [
    build_floor, build_psycopg_pool, build_psycopg_pool_with, build_ours, build_ours_with,
    build_ours_sync, build_httpx_shared, build_ours_http,
]
OURS = "pooled_clients"


# --- measuring ---------------------------------------------------------------------------------


async def measure(op: Op, tasks: int, duration: float) -> tuple[float, Tail | None]:
    """``tasks`` tasks loop on ``op`` for ``duration`` seconds: operations per second and the
    latency percentiles of every operation (the time inside ``op`` only)."""
    latencies: list[float] = []
    record, clock = latencies.append, time.perf_counter
    started = asyncio.Event()
    deadline = [0.0]
    yield_each, pause = tasks > 1, asyncio.sleep

    async def worker() -> int:
        # Each task checks the clock itself: an operation that never suspends (a fast-path
        # checkout) would never let a timer on the loop stop it. With several tasks each one
        # yields after every operation, as a handler that awaits anything else would, so that
        # a checkout that never suspends does not let one task run the whole cell alone.
        await started.wait()
        n = 0
        end = deadline[0]
        while (t0 := clock()) < end:
            await op()
            record(clock() - t0)
            n += 1
            if yield_each:
                await pause(0)
        return n

    jobs = [asyncio.ensure_future(worker()) for _ in range(tasks)]
    await asyncio.sleep(0)
    gc.collect()
    start = clock()
    deadline[0] = start + duration
    started.set()
    counts = await asyncio.gather(*jobs)
    return sum(counts) / (clock() - start), tail_of(latencies)


@dataclass
class AsyncResults:
    rounds: int
    duration: float
    task_counts: list[int]
    labels: dict[str, str] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)
    workloads: dict[str, list[str]] = field(default_factory=dict)
    samples: dict[tuple[str, int, str], list[float]] = field(default_factory=dict)
    tails: dict[tuple[str, int, str], list[Tail]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def median(self, workload: str, tasks: int, key: str) -> float | None:
        values = self.samples.get((workload, tasks, key))
        return statistics.median(values) if values else None

    def ratio(self, workload: str, tasks: int, key: str, base: str) -> float | None:
        a = self.samples.get((workload, tasks, key)) or []
        b = self.samples.get((workload, tasks, base)) or []
        pairs = [x / y for x, y in zip(a, b, strict=False) if y]
        return statistics.median(pairs) if pairs else None

    def p99(self, workload: str, tasks: int, key: str) -> float | None:
        tails = self.tails.get((workload, tasks, key))
        return statistics.median(t.p99 for t in tails) if tails else None


async def _run(
    conninfo: str, upstream: str, task_counts: Sequence[int], rounds: int, duration: float,
    log: Callable[[str], None],
) -> AsyncResults:
    results = AsyncResults(rounds, duration, list(task_counts))
    built: list[AsyncContestant] = []
    for build in BUILDERS:
        try:
            c = await build(conninfo, upstream)
        except Exception as exc:
            results.errors[build.__name__] = f"{type(exc).__name__}: {exc}"
            log(f"  {build.__name__} failed: {exc}")
            continue
        built.append(c)
        results.labels[c.key] = c.label
        results.descriptions[c.key] = c.description
        for w in c.workloads:
            results.workloads.setdefault(w, []).append(c.key)
    try:
        for c in built:  # warm up: open lazily created clients, fill caches
            for op in c.workloads.values():
                await measure(op, POOL_SIZE, min(0.1, duration))
        for r in range(rounds):
            for workload in WORKLOADS:
                keys = results.workloads.get(workload, [])
                for tasks in task_counts:
                    order = [keys[(i + r) % len(keys)] for i in range(len(keys))]
                    for key in order:
                        c = next(x for x in built if x.key == key)
                        cell = (workload, tasks, key)
                        try:
                            ops, tail = await measure(c.workloads[workload], tasks, duration)
                        except Exception as exc:
                            results.errors[f"{key}, {workload}, {tasks} tasks"] = (
                                f"{type(exc).__name__}: {exc}"
                            )
                            continue
                        results.samples.setdefault(cell, []).append(ops)
                        if tail is not None:
                            results.tails.setdefault(cell, []).append(tail)
            log(f"  async round {r + 1}/{rounds} done")
    finally:
        for c in built:
            with contextlib.suppress(Exception):
                await c.close()
    return results


def run_async(
    conninfo: str, upstream: str, task_counts: Sequence[int], rounds: int, duration: float,
    log: Callable[[str], None],
) -> AsyncResults:
    return asyncio.run(_run(conninfo, upstream, task_counts, rounds, duration, log))


def profile_async(conninfo: str, seconds: float, top: int = 15) -> Any:
    """cProfile of ``AsyncPool`` aacquire/arelease, 1 task, no query."""
    import cProfile

    from benchmarks.hotpath import ProfileResult, profile_result

    async def main() -> ProfileResult:
        c = await build_ours(conninfo, "")
        op = c.workloads["noquery"]
        profiler = cProfile.Profile()
        ops = 0
        deadline = time.perf_counter() + seconds
        try:
            profiler.enable()
            while time.perf_counter() < deadline:
                for _ in range(1000):
                    await op()
                ops += 1000
            profiler.disable()
        finally:
            await c.close()
        return profile_result(profiler, c.label + ", aacquire/arelease", False, ops, seconds,
                              top)

    return asyncio.run(main())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.aio_bench")
    parser.add_argument("--tasks", default="1,10,100,1000")
    parser.add_argument("--duration", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", type=float, default=0.0,
                        help="seconds of cProfile of AsyncPool, 1 task, no query, instead")
    args = parser.parse_args(argv)

    from benchmarks.e2e import _disable_nagle_upstream
    from devservers.http import UpstreamServer
    from devservers.postgres import PostgresCluster

    _disable_nagle_upstream()
    upstream = UpstreamServer()
    upstream.start()
    try:
        with PostgresCluster(name="bench", settings={"max_connections": "200"}) as cluster:
            if args.profile > 0:
                print(profile_async(cluster.conninfo(), args.profile, 25).text)
                return 0
            res = run_async(
                cluster.conninfo(), str(upstream.url).rstrip("/") + "/",
                [int(t) for t in args.tasks.split(",")], args.rounds, args.duration,
                lambda m: print(m, flush=True),
            )
    finally:
        upstream.stop()
    from benchmarks.report import async_tables

    print("\n".join(async_tables(res)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
