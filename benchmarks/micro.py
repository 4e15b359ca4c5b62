"""Fixed-duration checkout/return loops, interleaved across contestants and rounds."""

from __future__ import annotations

import gc
import math
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from benchmarks.contestants import Contestant

SQL = "SELECT 1"

WORKLOADS: dict[str, str] = {
    "noquery": "checkout + return, no query",
    "select1": "checkout + SELECT 1 + return",
}


Latencies = list[float]


def _pair_loop(
    acquire: Callable[[], Any],
    release: Callable[[Any], None],
    running: list[bool],
    query: bool,
    lat: Latencies,
) -> int:
    # One clock read per operation: each latency runs from the end of the previous operation
    # to the end of this one, so the loop's own few bytecodes are counted alike for everyone.
    clock, record = time.perf_counter, lat.append
    n = 0
    last = clock()
    if query:
        while running[0]:
            conn = acquire()
            try:
                conn.execute(SQL).fetchone()
            finally:
                release(conn)
            now = clock()
            record(now - last)
            last = now
            n += 1
    else:
        while running[0]:
            conn = acquire()
            release(conn)
            now = clock()
            record(now - last)
            last = now
            n += 1
    return n


def _with_loop(
    connection: Callable[[], AbstractContextManager[Any]],
    running: list[bool],
    query: bool,
    lat: Latencies,
) -> int:
    clock, record = time.perf_counter, lat.append
    n = 0
    last = clock()
    if query:
        while running[0]:
            with connection() as conn:
                conn.execute(SQL).fetchone()
            now = clock()
            record(now - last)
            last = now
            n += 1
    else:
        while running[0]:
            with connection():
                pass
            now = clock()
            record(now - last)
            last = now
            n += 1
    return n


def run_loop(contestant: Contestant, running: list[bool], query: bool, lat: Latencies) -> int:
    if contestant.connection is not None:
        return _with_loop(contestant.connection, running, query, lat)
    return _pair_loop(contestant.acquire, contestant.release, running, query, lat)


@dataclass(frozen=True)
class Tail:
    """Latency percentiles of one cell in one round, in milliseconds."""

    p50: float
    p99: float
    p999: float
    max: float


def tail_of(latencies: list[float]) -> Tail | None:
    """Nearest-rank percentiles of ``latencies`` (seconds), as milliseconds."""
    if not latencies:
        return None
    values = sorted(latencies)
    n = len(values)

    def rank(q: float) -> float:
        return values[min(n - 1, max(0, math.ceil(q * n) - 1))] * 1000.0

    return Tail(rank(0.50), rank(0.99), rank(0.999), values[-1] * 1000.0)


def measure(
    contestant: Contestant, query: bool, threads: int, duration: float
) -> tuple[float, Tail | None]:
    """Run ``threads`` threads for ``duration`` seconds; return completed operations per second
    and the latency percentiles of every operation of every thread.

    The clock stops when the last thread has finished its last operation, so every counted
    operation completed inside the measured interval.
    """
    running = [True]
    counts = [0] * threads
    finished = [0.0] * threads
    latencies: list[Latencies] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads + 1)

    def worker(i: int) -> None:
        barrier.wait()
        try:
            counts[i] = run_loop(contestant, running, query, latencies[i])
        except BaseException as exc:
            errors.append(exc)
            running[0] = False
        finished[i] = time.perf_counter()

    workers = [
        threading.Thread(target=worker, args=(i,), name=f"bench-{i}", daemon=True)
        for i in range(threads)
    ]
    for t in workers:
        t.start()
    gc.collect()
    barrier.wait()
    start = time.perf_counter()
    time.sleep(duration)
    running[0] = False
    for t in workers:
        t.join(60.0)
    if any(t.is_alive() for t in workers):
        raise RuntimeError(f"{contestant.label}: a worker thread did not stop")
    if errors:
        raise RuntimeError(f"{contestant.label}: {type(errors[0]).__name__}: {errors[0]}")
    elapsed = max(finished) - start
    return sum(counts) / elapsed, tail_of([x for lat in latencies for x in lat])


@dataclass
class MicroResults:
    rounds: int
    duration: float
    thread_counts: list[int]
    contestants: list[str]
    labels: dict[str, str]
    samples: dict[tuple[str, int, str], list[float]] = field(default_factory=dict)
    errors: dict[tuple[str, int, str], str] = field(default_factory=dict)
    tails: dict[tuple[str, int, str], list[Tail]] = field(default_factory=dict)

    def tail(self, workload: str, threads: int, key: str) -> Tail | None:
        """Median over rounds of p50, p99 and p99.9; the largest max of any round."""
        tails = self.tails.get((workload, threads, key))
        if not tails:
            return None
        return Tail(
            statistics.median(t.p50 for t in tails),
            statistics.median(t.p99 for t in tails),
            statistics.median(t.p999 for t in tails),
            max(t.max for t in tails),
        )

    def median(self, workload: str, threads: int, key: str) -> float | None:
        values = self.samples.get((workload, threads, key))
        return statistics.median(values) if values else None

    def ratio(self, workload: str, threads: int, key: str, base: str) -> float | None:
        """Median over rounds of ``key``'s ops/s divided by ``base``'s in the same round.

        Both ran within seconds of each other in every round, so pairing them cancels most of the
        drift a shared machine adds between rounds.
        """
        a = self.samples.get((workload, threads, key)) or []
        b = self.samples.get((workload, threads, base)) or []
        pairs = [x / y for x, y in zip(a, b, strict=False) if y]
        return statistics.median(pairs) if pairs else None

    def spread(self, workload: str, threads: int, key: str) -> float | None:
        """(max - min) / median over the rounds."""
        values = self.samples.get((workload, threads, key))
        if not values or len(values) < 2:
            return None
        return (max(values) - min(values)) / statistics.median(values)


def run_micro(
    contestants: Sequence[Contestant],
    thread_counts: Sequence[int],
    rounds: int,
    duration: float,
    warmup: float,
    log: Callable[[str], None],
) -> MicroResults:
    results = MicroResults(
        rounds=rounds,
        duration=duration,
        thread_counts=list(thread_counts),
        contestants=[c.key for c in contestants],
        labels={c.key: c.label for c in contestants},
    )
    if warmup > 0:
        for c in contestants:
            for query in (False, True):
                try:
                    measure(c, query, 1, warmup)
                except RuntimeError as exc:
                    log(f"  warm-up failed: {exc}")
    n = len(contestants)
    for r in range(rounds):
        t_round = time.perf_counter()
        for workload in WORKLOADS:
            query = workload == "select1"
            for threads in thread_counts:
                # Rotate the running order every round so drift and position effects even out.
                order = [contestants[(i + r) % n] for i in range(n)]
                for c in order:
                    cell = (workload, threads, c.key)
                    if cell in results.errors:
                        continue
                    try:
                        ops, tail = measure(c, query, threads, duration)
                    except RuntimeError as exc:
                        results.errors[cell] = str(exc)
                        log(f"  {workload} x{threads} {c.label}: {exc}")
                        continue
                    results.samples.setdefault(cell, []).append(ops)
                    if tail is not None:
                        results.tails.setdefault(cell, []).append(tail)
        log(f"  round {r + 1}/{rounds} done in {time.perf_counter() - t_round:.0f} s")
    return results
