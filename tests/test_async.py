"""The async API of the engine, with in-memory clients (no Django, no network).

Sync pools used from async code (``aacquire``/``aconnection``/``arelease``) and
:class:`AsyncPool` for async backends: waiting never blocks the loop, cancellation never
loses a client, and clients never cross event loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import random
import threading
import time
import weakref
from typing import Any

import pytest

from pooled_clients.aio import AsyncClientBackend, AsyncPool
from pooled_clients.exceptions import (
    ClientCreationError,
    PoolClosed,
    PoolError,
    PoolExhausted,
    PoolTimeout,
)
from pooled_clients.pool import Pool, PoolSettings
from tests.fakes import FakeBackend, FakeClient
from tests.waiting import async_wait_until, wait_until


class AsyncFake(AsyncClientBackend[FakeClient]):
    """An async backend whose clients insist on being used on their own loop."""

    def __init__(self) -> None:
        super().__init__("afake", {})
        self.numbers = itertools.count()
        self.created: list[FakeClient] = []
        self.fail_create: BaseException | None = None
        self.wrong_loop_uses = 0
        self.lock = threading.Lock()

    def _on_own_loop(self, client: FakeClient) -> None:
        if client.loop is not asyncio.get_running_loop():
            self.wrong_loop_uses += 1
            raise RuntimeError("client used on another event loop")

    async def create(self) -> FakeClient:
        await asyncio.sleep(0)
        if self.fail_create is not None:
            raise self.fail_create
        client = FakeClient(next(self.numbers), asyncio.get_running_loop())
        with self.lock:
            self.created.append(client)
        return client

    async def close(self, client: FakeClient) -> None:
        self._on_own_loop(client)
        await asyncio.sleep(0)
        client.closed = True

    def close_nowait(self, client: FakeClient) -> None:
        client.closed = client.closed_nowait = True

    async def check(self, client: FakeClient) -> None:
        self._on_own_loop(client)
        await asyncio.sleep(0)
        if not client.healthy:
            raise ConnectionError("client is dead")

    async def reset(self, client: FakeClient) -> bool:
        self._on_own_loop(client)
        await asyncio.sleep(0)
        return client.healthy and not client.dirty

    def is_broken(self, client: FakeClient) -> bool:
        return not client.healthy

    def open_count(self) -> int:
        with self.lock:
            return sum(1 for c in self.created if not c.closed)


def sync_pool(**settings: Any) -> tuple[Pool[FakeClient], FakeBackend]:
    backend = FakeBackend()
    settings.setdefault("connect_retries", 0)
    return Pool("fake", backend, PoolSettings(**settings)), backend


def async_pool(**settings: Any) -> tuple[AsyncPool[FakeClient], AsyncFake]:
    backend = AsyncFake()
    settings.setdefault("connect_retries", 0)
    return AsyncPool("afake", backend, PoolSettings(**settings)), backend




def at_rest(pool: Pool[Any]) -> bool:
    stats = pool.stats()
    return (stats.in_use == 0 and stats.waiting == 0 and stats.creating == 0
            and stats.size == stats.idle)


# --------------------------------------------------------------------------- sync pools


def test_aconnection_hands_out_a_client_and_counts_it_like_the_sync_path() -> None:
    pool, _ = sync_pool()

    async def main() -> tuple[FakeClient, FakeClient]:
        async with pool.aconnection() as first:
            assert pool.stats().in_use == 1
            assert pool.stats().leases[0].where.endswith("in main")
        client = await pool.aacquire(timeout=1.0)
        await pool.arelease(client)
        return first, client

    first, second = asyncio.run(main())
    assert first is second  # the idle client is reused
    stats = pool.stats()
    assert (stats.size, stats.idle, stats.in_use) == (1, 1, 0)
    assert (stats.acquired_total, stats.released_total, stats.created_total) == (2, 2, 1)


def test_a_waiting_task_leaves_the_loop_free_and_gets_the_released_client() -> None:
    pool, _ = sync_pool(max_size=1, timeout=5.0)

    async def main() -> None:
        holder = await pool.aacquire()
        waiter = asyncio.create_task(pool.aacquire())
        await async_wait_until(lambda: pool.stats().waiting == 1)
        # The loop runs other work while the waiter waits.
        ticks = 0
        for _ in range(5):
            await asyncio.sleep(0.001)
            ticks += 1
        assert ticks == 5 and not waiter.done()
        await pool.arelease(holder)
        got = await asyncio.wait_for(waiter, 5.0)
        assert got is holder
        await pool.arelease(got)

    asyncio.run(main())
    assert at_rest(pool)
    assert pool.stats().acquired_total == 2


@pytest.mark.parametrize("make", [sync_pool, async_pool], ids=["sync", "async"])
def test_each_waiting_task_times_out_at_its_own_deadline(make: Any) -> None:
    """Tasks waiting on one loop share one timer per pool: a task queued later with a
    shorter timeout still gives up on time, and every queued task gives up in turn."""
    pool, _ = make(max_size=1)

    async def wait(timeout: float) -> float:
        began = time.monotonic()
        with pytest.raises(PoolTimeout):
            await pool.aacquire(timeout=timeout)
        return time.monotonic() - began

    async def main() -> None:
        held = await pool.aacquire()
        slow = asyncio.create_task(wait(30.0))
        await async_wait_until(lambda: pool.stats().waiting == 1)
        # Queued behind a 30 s wait, each shorter one ends at its own deadline.
        waits = await asyncio.wait_for(
            asyncio.gather(wait(0.3), wait(0.1), wait(0.5), wait(0.2)), 10.0)
        for timeout, waited in zip((0.3, 0.1, 0.5, 0.2), waits, strict=True):
            assert timeout <= waited < timeout + 1.0
        slow.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await slow
        await pool.arelease(held)

    asyncio.run(main())
    assert pool.stats().timeouts_total == 4
    assert at_rest(pool)


@pytest.mark.parametrize("make", [sync_pool, async_pool], ids=["sync", "async"])
def test_a_task_served_by_a_hand_over_holds_a_lease_naming_its_own_line(make: Any) -> None:
    """A waiting task gets the released client leased to it at the hand-over: the lease
    names where that task acquired, and only that task may release it."""
    pool, _ = make(max_size=1, timeout=5.0)

    got: list[FakeClient] = []
    done = asyncio.Event

    async def waiting_task(finish: asyncio.Event) -> None:
        got.append(await pool.aacquire())
        await finish.wait()
        await pool.arelease(got[0])

    async def main() -> None:
        held = await pool.aacquire()
        finish = done()
        task = asyncio.create_task(waiting_task(finish))
        await async_wait_until(lambda: pool.stats().waiting == 1)
        await pool.arelease(held)
        await async_wait_until(lambda: bool(got))
        assert got[0] is held
        (lease,) = pool.stats().leases
        assert lease.where.endswith("in waiting_task"), lease.where
        with pytest.raises(PoolError, match="released twice"):
            await pool.arelease(held)  # released already, and the waiting task holds it
        finish.set()
        await asyncio.wait_for(task, 5.0)  # which returns it itself

        # A task served by a hand-over that ends and passes its client on: whoever it
        # passed it to may release it (its holder is gone), this task included.
        held = await pool.aacquire()
        passer = asyncio.create_task(pool.aacquire())
        await async_wait_until(lambda: pool.stats().waiting == 1)
        await pool.arelease(held)
        assert await asyncio.wait_for(passer, 5.0) is held
        await pool.arelease(held)

    asyncio.run(main())
    assert at_rest(pool)


def test_loops_that_closed_with_a_wait_timer_pending_are_let_go() -> None:
    """Under WSGI each async view runs in an event loop of its own: a loop that had a task
    waiting (and so a pending timer) is not kept alive by the pool once it closed."""
    pool, _ = sync_pool(max_size=1, timeout=30.0)
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def request() -> None:
        held = await pool.aacquire()
        waiter = asyncio.create_task(pool.aacquire())
        await async_wait_until(lambda: pool.stats().waiting == 1)
        await pool.arelease(held)
        await pool.arelease(await waiter)
        loops.append(weakref.ref(asyncio.get_running_loop()))

    for _ in range(3):
        asyncio.run(request())
    pool.maintain(time.monotonic())
    gc.collect()
    # The last loop is remembered as the pool's last one; the others are gone.
    assert [ref() for ref in loops[:-1]] == [None, None]
    assert at_rest(pool)


def test_threads_and_tasks_wait_in_one_queue() -> None:
    pool, _ = sync_pool(max_size=1, timeout=5.0)
    held = pool.acquire()
    results: list[str] = []

    def thread_waiter() -> None:
        client = pool.acquire()
        results.append("thread")
        pool.release(client)

    async def main() -> None:
        thread = threading.Thread(target=thread_waiter)
        thread.start()
        await async_wait_until(lambda: pool.stats().waiting == 1)
        task = asyncio.create_task(pool.aacquire())
        await async_wait_until(lambda: pool.stats().waiting == 2)
        pool.release(held)  # first come, first served: the thread, then the task
        client = await asyncio.wait_for(task, 5.0)
        results.append("task")
        await pool.arelease(client)
        await asyncio.to_thread(thread.join, 5.0)

    asyncio.run(main())
    assert results == ["thread", "task"]
    assert at_rest(pool)


def test_async_timeout_raises_pool_timeout_naming_the_state() -> None:
    pool, _ = sync_pool(max_size=1)
    held = pool.acquire()

    async def main() -> None:
        with pytest.raises(PoolTimeout) as info:
            await pool.aacquire(timeout=0.1)
        message = str(info.value)
        assert "'fake'" in message and "0.1s" in message and "in use 1" in message

    asyncio.run(main())
    pool.release(held)
    assert pool.stats().timeouts_total == 1
    assert at_rest(pool)


def test_async_max_waiting_raises_pool_exhausted() -> None:
    pool, _ = sync_pool(max_size=1, max_waiting=1)
    held = pool.acquire()

    async def main() -> None:
        first = asyncio.create_task(pool.aacquire(timeout=5.0))
        await async_wait_until(lambda: pool.stats().waiting == 1)
        with pytest.raises(PoolExhausted):
            await pool.aacquire(timeout=5.0)
        pool.release(held)
        await pool.arelease(await first)

    asyncio.run(main())
    assert at_rest(pool)


def test_async_acquire_raises_client_creation_error_when_the_service_is_down() -> None:
    pool, backend = sync_pool(timeout=2.0)
    backend.fail_create = ConnectionRefusedError("connection refused")

    async def main() -> None:
        with pytest.raises(ClientCreationError) as info:
            await pool.aacquire()
        assert isinstance(info.value.__cause__, ConnectionRefusedError)

    asyncio.run(main())


def test_closing_the_pool_fails_async_waiters_with_pool_closed() -> None:
    pool, _ = sync_pool(max_size=1)
    held = pool.acquire()

    async def main() -> None:
        waiter = asyncio.create_task(pool.aacquire(timeout=5.0))
        await async_wait_until(lambda: pool.stats().waiting == 1)
        pool.begin_close()
        with pytest.raises(PoolClosed):
            await asyncio.wait_for(waiter, 5.0)
        with pytest.raises(PoolClosed):
            await pool.aacquire()

    asyncio.run(main())
    pool.release(held)


def test_releasing_twice_from_async_code_raises_pool_error() -> None:
    pool, _ = sync_pool()

    async def main() -> None:
        client = await pool.aacquire()
        await pool.arelease(client)
        with pytest.raises(PoolError):
            await pool.arelease(client)

    asyncio.run(main())
    assert pool.stats().released_total == 1


def test_a_sync_check_on_checkout_runs_off_the_event_loop() -> None:
    pool, backend = sync_pool(check="always")
    client = pool.acquire()
    pool.release(client)
    gate = backend.check_gate = threading.Event()

    async def main() -> None:
        opener = asyncio.get_running_loop().call_later(0.01, gate.set)
        got = await pool.aacquire(timeout=10.0)
        opener.cancel()
        assert got is client  # the check passed: the loop ran while it waited
        await pool.arelease(got)

    asyncio.run(main())
    assert backend.gate_failures == 0


def test_a_sync_reset_on_release_runs_off_the_event_loop() -> None:
    pool, backend = sync_pool()
    gate = backend.reset_gate = threading.Event()

    async def main() -> None:
        client = await pool.aacquire()
        asyncio.get_running_loop().call_later(0.01, gate.set)
        await pool.arelease(client)

    asyncio.run(main())
    assert backend.gate_failures == 0
    assert pool.stats().idle == 1


def test_a_client_handed_to_a_cancelled_waiter_goes_back_to_the_pool() -> None:
    pool, backend = sync_pool(max_size=1)

    async def main() -> None:
        holder = await pool.aacquire()
        waiter = asyncio.create_task(pool.aacquire(timeout=5.0))
        await async_wait_until(lambda: pool.stats().waiting == 1)
        # The hand-over happens (the waiter's future is resolved) and the task is
        # cancelled before it gets to run: the client must not be lost.
        pool.release(holder)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter

    asyncio.run(main())
    assert at_rest(pool)
    stats = pool.stats()
    assert (stats.size, stats.idle) == (1, 1)
    assert backend.open_count() == 1


async def _cancel_storm(pool: Pool[Any], tasks: int = 100) -> None:
    """``tasks`` tasks use the pool; each is cancelled at a random point (waiting or using)."""
    rng = random.Random(9)

    async def worker() -> None:
        async with pool.aconnection(timeout=10.0):
            await asyncio.sleep(rng.uniform(0.0, 0.02))

    running = [asyncio.create_task(worker()) for _ in range(tasks)]
    await async_wait_until(lambda: pool.stats().in_use > 0)
    for task in running:
        await asyncio.sleep(rng.uniform(0.0, 0.0005))
        task.cancel()
    results = await asyncio.gather(*running, return_exceptions=True)
    assert all(r is None or isinstance(r, asyncio.CancelledError) for r in results), results
    assert sum(isinstance(r, asyncio.CancelledError) for r in results) > tasks // 2


def test_cancelled_tasks_mid_wait_and_mid_use_leak_nothing_from_a_sync_pool() -> None:
    pool, backend = sync_pool(max_size=5)
    asyncio.run(_cancel_storm(pool))
    wait_until(lambda: at_rest(pool))
    stats = pool.stats()
    assert stats.size == stats.idle and stats.leases == ()
    assert backend.open_count() == stats.size
    assert stats.acquired_total == stats.released_total


def test_cancelled_tasks_mid_wait_and_mid_use_leak_nothing_from_an_async_pool() -> None:
    pool, backend = async_pool(max_size=5)
    asyncio.run(_cancel_storm(pool))
    wait_until(lambda: at_rest(pool))
    stats = pool.stats()
    assert stats.size == stats.idle and stats.leases == ()
    assert backend.open_count() == stats.size
    assert stats.acquired_total == stats.released_total
    assert backend.wrong_loop_uses == 0


# --------------------------------------------------------------------------- async pools


def test_an_async_pool_refuses_the_sync_api_and_names_the_async_one() -> None:
    pool, _ = async_pool()
    with pytest.raises(PoolError, match=r"aconnection\(\)"):
        pool.acquire()
    with pytest.raises(PoolError, match="aacquire"):
        pool.connection()
    with pytest.raises(PoolError, match="arelease"):
        pool.release(FakeClient(0))
    assert pool.stats().size == 0


def test_an_async_pool_reuses_clients_on_one_loop() -> None:
    pool, backend = async_pool(max_size=3)

    async def main() -> set[int]:
        seen: set[int] = set()

        async def use() -> None:
            async with pool.aconnection() as client:
                assert client.loop is asyncio.get_running_loop()
                seen.add(client.number)
                await asyncio.sleep(0.005)

        for _ in range(3):
            await asyncio.gather(*(use() for _ in range(6)))
        return seen

    seen = asyncio.run(main())
    assert len(seen) <= 3
    assert backend.wrong_loop_uses == 0
    stats = pool.stats()
    assert stats.acquired_total == 18 and stats.created_total == len(seen)


def test_an_async_pool_never_hands_out_a_client_of_a_dead_loop() -> None:
    pool, backend = async_pool(max_size=2, check="always")

    async def request() -> FakeClient:
        async with pool.aconnection() as client:
            assert client.loop is asyncio.get_running_loop()
            return client

    # Django runs an async view under WSGI in a new loop per request.
    first = asyncio.run(request())
    second = asyncio.run(request())
    assert first is not second
    assert first.closed_nowait  # closed without awaiting on its dead loop
    assert backend.wrong_loop_uses == 0
    assert pool.stats().size == 1 and backend.open_count() == 1


def test_maintenance_drops_idle_clients_of_closed_loops() -> None:
    pool, backend = async_pool(max_size=2)

    async def request() -> None:
        async with pool.aconnection():
            pass

    asyncio.run(request())
    assert pool.stats().idle == 1
    pool.maintain(time.monotonic())
    assert pool.stats().size == 0
    assert backend.open_count() == 0


def test_async_pool_timeout_and_max_waiting_match_the_sync_errors() -> None:
    pool, _ = async_pool(max_size=1, max_waiting=1)

    async def main() -> None:
        held = await pool.aacquire()
        waiter = asyncio.create_task(pool.aacquire(timeout=0.2))
        await async_wait_until(lambda: pool.stats().waiting == 1)
        with pytest.raises(PoolExhausted):
            await pool.aacquire()
        with pytest.raises(PoolTimeout, match="in use 1"):
            await waiter
        await pool.arelease(held)

    asyncio.run(main())
    assert pool.stats().timeouts_total == 1
    assert at_rest(pool)


def test_async_pool_raises_client_creation_error_when_create_fails() -> None:
    pool, backend = async_pool()
    backend.fail_create = ConnectionRefusedError("refused")

    async def main() -> None:
        with pytest.raises(ClientCreationError) as info:
            await pool.aacquire(timeout=2.0)
        assert isinstance(info.value.__cause__, ConnectionRefusedError)

    asyncio.run(main())
    assert pool.stats().size == 0


def test_async_pool_discards_a_client_that_fails_its_reset_or_breaks() -> None:
    pool, backend = async_pool()

    async def main() -> None:
        client = await pool.aacquire()
        client.dirty = True
        await pool.arelease(client)
        assert pool.stats().size == 0
        client = await pool.aacquire()
        client.healthy = False
        await pool.arelease(client)
        await async_wait_until(lambda: backend.open_count() == 0)

    asyncio.run(main())
    stats = pool.stats()
    assert stats.size == 0 and stats.errors_total == 1
    assert backend.wrong_loop_uses == 0


def test_async_pool_check_opens_a_client_on_a_fresh_loop() -> None:
    pool, backend = async_pool()
    pool.check(timeout=2.0)
    assert backend.created and backend.created[0].closed
    assert at_rest(pool) and pool.stats().size == 0
    failing, backend = async_pool()
    backend.fail_create = ConnectionRefusedError("refused")
    with pytest.raises(ClientCreationError):
        failing.check(timeout=2.0)
    assert failing.stats().size == 0


def test_health_probes_of_an_async_pool_outside_its_loop_do_not_churn_connections() -> None:
    # A WSGI worker: no loop of the pool runs where /health/ probes it.
    pool, backend = async_pool()
    for _ in range(4):
        pool.check(timeout=2.0)
    stats = pool.stats()
    assert (stats.created_total, stats.acquired_total, len(backend.created)) == (1, 0, 1)
    assert stats.healthy
    # A failure since the last answer is not trusted: the next probe opens again, and fails.
    backend.fail_create = ConnectionRefusedError("refused")
    with pytest.raises(ClientCreationError):
        asyncio.run(pool.aacquire(timeout=2.0))
    with pytest.raises(ClientCreationError):
        pool.check(timeout=2.0)
    assert not pool.stats().healthy


def test_async_pool_check_borrows_an_idle_client_on_its_running_loop() -> None:
    pool, backend = async_pool()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        async def use() -> None:
            async with pool.aconnection():
                pass

        asyncio.run_coroutine_threadsafe(use(), loop).result(5.0)
        pool.check(timeout=2.0)
        assert len(backend.created) == 1  # the idle client was checked, not a new one
        assert backend.wrong_loop_uses == 0
        assert pool.stats().idle == 1
        backend.created[0].healthy = False
        with pytest.raises(ClientCreationError, match="failed its check"):
            pool.check(timeout=2.0)
        wait_until(lambda: pool.stats().size == 0)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5.0)
        loop.close()
