"""What a contended checkout costs under the GIL, without a database.

With more threads than clients, every checkout queues and every return hands its client to
the oldest waiter. Against PostgreSQL that cost hides in the noise of the server sharing the
machine's cores; here each operation is a checkout, a fixed amount of Python (standing in for
a driver's work on a query, which holds the GIL), a GIL release (standing in for the wait on
the server) and a return, on in-memory clients. pooled_clients' ``Pool`` runs beside the
FIFO hand-off floor of the main benchmark, interleaved, and the ratio is what the pool's own
code adds to a contended operation::

    python -m benchmarks.contention [--threads 16,64] [--rounds 4] [--duration 1.0] [--work 300]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

from benchmarks.contestants import FairFloorPool

POOL_SIZE = 10


class Client:
    """An in-memory client."""


def _work(steps: int) -> None:
    """Python that holds the GIL, as a driver does while it builds and parses a query."""
    total = 0
    for i in range(steps):
        total += i


def measure(acquire: Callable[[], Any], release: Callable[[Any], None], threads: int,
            duration: float, steps: int) -> float:
    """Operations per second of ``threads`` threads looping for ``duration`` seconds."""
    running = [True]
    counts = [0] * threads
    pause = time.sleep

    def worker(i: int) -> None:
        n = 0
        while running[0]:
            client = acquire()
            _work(steps)
            pause(0)  # the wait on the server: the GIL goes to another thread
            release(client)
            n += 1
        counts[i] = n

    workers = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    start = time.perf_counter()
    for t in workers:
        t.start()
    time.sleep(duration)
    running[0] = False
    for t in workers:
        t.join(30.0)
    return sum(counts) / (time.perf_counter() - start)


def run(thread_counts: list[int], rounds: int, duration: float,
        steps: int) -> dict[int, tuple[float, float]]:
    """thread count -> (median ops/s of the FIFO floor, of pooled_clients' Pool)."""
    from pooled_clients.backends.base import ClientBackend
    from pooled_clients.pool import Pool, PoolSettings

    class Backend(ClientBackend[Client]):
        def create(self) -> Client:
            return Client()

    pool: Pool[Client] = Pool("contention", Backend("contention", {}),
                              PoolSettings(min_size=0, max_size=POOL_SIZE))
    held = [pool.acquire() for _ in range(POOL_SIZE)]
    for client in held:
        pool.release(client)
    floor = FairFloorPool([Client() for _ in range(POOL_SIZE)])
    results: dict[int, tuple[float, float]] = {}
    try:
        for threads in thread_counts:
            ours: list[float] = []
            fifo: list[float] = []
            for r in range(rounds):
                pair = [(fifo, floor.acquire, floor.release), (ours, pool.acquire, pool.release)]
                for samples, acquire, release in (pair if r % 2 == 0 else pair[::-1]):
                    samples.append(measure(acquire, release, threads, duration, steps))
            results[threads] = (statistics.median(fifo), statistics.median(ours))
    finally:
        pool.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.contention",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="16,64")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=1.0)
    parser.add_argument("--work", type=int, default=300,
                        help="loop steps of Python per operation (300: about 10-30 us)")
    args = parser.parse_args(argv)
    counts = [int(t) for t in args.threads.split(",") if t.strip()]
    results = run(counts, args.rounds, args.duration, args.work)
    print(f"{POOL_SIZE} in-memory clients, {args.work} steps of Python per operation, "
          f"{args.rounds} rounds x {args.duration:g} s, median ops/s")
    print("| threads | floor, FIFO hand-off | pooled_clients | ratio |")
    print("|---|---|---|---|")
    for threads, (fifo, ours) in results.items():
        print(f"| {threads} | {fifo:,.0f} | {ours:,.0f} | {ours / fifo:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
