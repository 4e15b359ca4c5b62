"""64 threads of random operations on one pool, for a bounded time.

Invariants are sampled throughout (never more clients than MAX_SIZE, never one client in two
threads) and checked at rest (``size == idle + in_use``, every open client accounted for) and
after close (nothing left open).
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from typing import Any

import pytest

from pooled_clients.backends.base import ClientBackend
from pooled_clients.exceptions import PoolClosed, PoolError
from pooled_clients.pool import Pool, PoolSettings
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(60)

THREADS = 64
MAX_SIZE = 8


class Client:
    def __init__(self, number: int) -> None:
        self.number = number
        self.owner: int | None = None
        self.dead = False
        self.dirty = False
        self.closed = False


class FlakyBackend(ClientBackend[Client]):
    """Thread-safe fake clients; creation and checks fail now and then, creation is slowish."""

    def __init__(self) -> None:
        super().__init__("stress", {})
        self.lock = threading.Lock()
        self.open: set[Client] = set()
        self.created = 0
        self.problems: list[str] = []

    def create(self) -> Client:
        time.sleep(random.uniform(0, 0.002))
        if random.random() < 0.03:
            raise ConnectionRefusedError("flaky create")
        with self.lock:
            self.created += 1
            client = Client(self.created)
            self.open.add(client)
        return client

    def close(self, client: Client) -> None:
        with self.lock:
            if client.closed:
                self.problems.append(f"client {client.number} closed twice")
            if client.owner is not None:
                self.problems.append(f"client {client.number} closed while held")
            client.closed = True
            self.open.discard(client)

    def check(self, client: Client) -> None:
        if client.dead or random.random() < 0.01:
            raise ConnectionResetError("flaky check")

    def reset(self, client: Client) -> bool:
        return not client.dirty

    def is_broken(self, client: Client) -> bool:
        return client.dead


class Worker:
    def __init__(self, pool: Pool[Client], backend: FlakyBackend, stop: threading.Event,
                 problems: list[str]) -> None:
        self.pool = pool
        self.backend = backend
        self.stop = stop
        self.problems = problems
        self.ops = 0
        self.errors = 0

    def run(self) -> None:
        ident = threading.get_ident()
        rng = random.Random(ident)
        while not self.stop.is_set():
            self.ops += 1
            try:
                client = self.pool.acquire(timeout=rng.uniform(0.001, 0.05))
            except PoolClosed:
                return
            except PoolError:
                self.errors += 1
                continue
            with self.backend.lock:
                if client.owner is not None:
                    self.problems.append(f"client {client.number} handed to two threads")
                if client.closed or client.dead:
                    self.problems.append(f"client {client.number} handed out closed or dead")
                client.owner = ident
            if rng.random() < 0.3:
                time.sleep(rng.uniform(0, 0.002))
            roll = rng.random()
            with self.backend.lock:
                client.owner = None
            try:
                if roll < 0.05:
                    self.pool.release(client, discard=True)
                elif roll < 0.08:
                    client.dirty = True
                    self.pool.release(client)
                elif roll < 0.10:
                    client.dead = True  # the connection broke while in use
                    self.pool.release(client)
                else:
                    self.pool.release(client)
            except PoolError as exc:
                if not self.pool.closed:
                    self.problems.append(f"release failed: {exc}")
                return
            if rng.random() < 0.02:
                with contextlib.suppress(PoolError):
                    self.pool.check(0.02, wait=False)


def run_phase(pool: Pool[Client], backend: FlakyBackend, seconds: float,
              problems: list[str], during: Any = None) -> list[Worker]:
    stop = threading.Event()
    workers = [Worker(pool, backend, stop, problems) for _ in range(THREADS)]
    threads = [threading.Thread(target=w.run, daemon=True, name=f"stress-{i}")
               for i, w in enumerate(workers)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        stats = pool.stats()
        if stats.state in ("open", "failing"):
            if stats.size > MAX_SIZE:
                problems.append(f"size {stats.size} > MAX_SIZE")
            # Clients taken off the idle list for a check are counted in size only.
            if stats.idle + stats.in_use + stats.creating > stats.size:
                problems.append(f"inconsistent snapshot {stats}")
            if stats.acquired_total - stats.released_total != stats.in_use:
                problems.append(f"acquired - released != in_use: {stats}")
        time.sleep(0.005)
    if during is not None:
        during()
    stop.set()
    for thread in threads:
        thread.join(10)
    assert not any(t.is_alive() for t in threads), "a worker is stuck"
    return workers



def test_64_threads_of_random_operations_keep_every_invariant() -> None:
    backend = FlakyBackend()
    pool: Pool[Client] = Pool("stress", backend, PoolSettings(
        max_size=MAX_SIZE, min_size=2, check="always", timeout=0.05, connect_retries=2,
        retry_backoff=0.001, retry_backoff_max=0.01, max_idle=None, max_lifetime=None,
    ))
    problems: list[str] = []
    try:
        workers = run_phase(pool, backend, 2.0, problems)
        assert sum(w.ops - w.errors for w in workers) > 1000
        # At rest: nothing being created, every open client is idle in the pool.
        wait_until(lambda: pool.stats().creating == 0 and not pool.stats().waiting)
        wait_until(lambda: backend.open == set(pool.iter_idle_clients()),
                   message="the open clients are not exactly the idle ones")
        stats = pool.stats()
        assert stats.size == stats.idle + stats.in_use and stats.in_use == 0
        assert stats.acquired_total == stats.released_total
        assert stats.created_total - stats.closed_total == stats.size
        assert stats.created_total == backend.created
        assert not problems, problems[:5]

        # Close while every thread is still at work: nothing stays open, nobody hangs.
        run_phase(pool, backend, 0.5, problems, during=lambda: pool.close(timeout=1.0))
        wait_until(lambda: not backend.open)
        stats = pool.stats()
        assert stats.state == "closed" and stats.size == 0 and stats.in_use == 0
        assert not problems, problems[:5]
        assert not backend.problems, backend.problems[:5]
    finally:
        pool.close(timeout=0)
