"""The engine on its own, with an in-memory client (no Django, no network)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest

from pooled_clients.exceptions import (
    ClientCreationError,
    PoolClosed,
    PoolError,
    PoolExhausted,
    PoolTimeout,
)
from pooled_clients.pool import Pool, PoolSettings
from tests.fakes import FakeBackend, FakeClient
from tests.waiting import wait_until


def make_pool(**settings: Any) -> tuple[Pool[FakeClient], FakeBackend]:
    backend = FakeBackend()
    pool: Pool[FakeClient] = Pool("fake", backend, PoolSettings(**settings))
    return pool, backend



def test_released_client_is_reused_lifo() -> None:
    pool, backend = make_pool()
    first = pool.acquire()
    second = pool.acquire()
    pool.release(first)
    pool.release(second)
    assert pool.acquire() is second
    assert len(backend.created) == 2


def test_connection_context_manager_returns_client() -> None:
    pool, _ = make_pool()
    with pool.connection() as client:
        assert pool.stats().in_use == 1
        assert isinstance(client, FakeClient)
    stats = pool.stats()
    assert (stats.in_use, stats.idle, stats.acquired_total, stats.released_total) == (0, 1, 1, 1)


def test_max_size_is_never_exceeded_under_32_threads() -> None:
    pool, backend = make_pool(max_size=4, timeout=10)
    errors: list[BaseException] = []
    peak = 0
    peak_lock = threading.Lock()

    def worker() -> None:
        nonlocal peak
        try:
            for _ in range(300):
                with pool.connection() as client:
                    assert client.holder is None, "one client in two threads"
                    client.holder = threading.get_ident()
                    with peak_lock:
                        peak = max(peak, backend.open_count())
                    client.holder = None
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert peak <= 4
    stats = pool.stats()
    assert stats.acquired_total == stats.released_total + stats.in_use == 32 * 300
    assert stats.size == stats.idle + stats.in_use <= 4


def test_waiters_are_served_first_come_first_served() -> None:
    pool, _ = make_pool(max_size=1, timeout=5)
    held = pool.acquire()
    order: list[int] = []
    ready = []

    def waiter(number: int) -> None:
        client = pool.acquire()
        order.append(number)
        pool.release(client)

    threads = []
    for number in range(5):
        thread = threading.Thread(target=waiter, args=(number,))
        thread.start()
        threads.append(thread)
        wait_until(lambda n=number: pool.stats().waiting == n + 1)
        ready.append(number)
    pool.release(held)
    for thread in threads:
        thread.join()
    assert order == [0, 1, 2, 3, 4]


def test_timeout_raises_pool_timeout_with_alias_and_state() -> None:
    pool, _ = make_pool(max_size=2, timeout=0.3)
    held = [pool.acquire(), pool.acquire()]
    start = time.monotonic()
    with pytest.raises(PoolTimeout) as info:
        pool.acquire()
    elapsed = time.monotonic() - start
    assert 0.25 <= elapsed < 1.5
    message = str(info.value)
    assert "'fake'" in message and "0.3s" in message
    assert "in use 2 / idle 0 / max 2 / waiting 0" in message
    assert "MainThread" in message and "test_engine.py" in message
    assert isinstance(info.value, TimeoutError)
    assert pool.stats().timeouts_total == 1
    for client in held:
        pool.release(client)


def test_explicit_timeout_overrides_setting() -> None:
    pool, _ = make_pool(max_size=1, timeout=30)
    held = pool.acquire()
    start = time.monotonic()
    with pytest.raises(PoolTimeout):
        pool.acquire(timeout=0.1)
    assert time.monotonic() - start < 1.0
    pool.release(held)


def test_max_waiting_raises_pool_exhausted() -> None:
    pool, _ = make_pool(max_size=1, max_waiting=1, timeout=5)
    held = pool.acquire()
    waiting = threading.Thread(target=lambda: pool.release(pool.acquire()))
    waiting.start()
    wait_until(lambda: pool.stats().waiting == 1)
    with pytest.raises(PoolExhausted, match="MAX_WAITING=1"):
        pool.acquire()
    pool.release(held)
    waiting.join()


def test_release_twice_or_foreign_client_raises_and_changes_nothing() -> None:
    pool, _ = make_pool()
    other, _ = make_pool()
    client = pool.acquire()
    pool.release(client)
    before = pool.stats()
    with pytest.raises(PoolError, match="not checked out"):
        pool.release(client)
    foreign = other.acquire()
    with pytest.raises(PoolError):
        pool.release(foreign)
    after = pool.stats()
    assert (before.idle, before.released_total) == (after.idle, after.released_total)
    other.release(foreign)


def test_client_that_cannot_be_reset_is_discarded() -> None:
    pool, _backend = make_pool()
    client = pool.acquire()
    client.dirty = True
    pool.release(client)
    assert client.closed
    assert pool.stats().size == 0
    assert pool.acquire() is not client


def test_release_with_discard_closes_client() -> None:
    pool, _ = make_pool()
    client = pool.acquire()
    pool.release(client, discard=True)
    assert client.closed
    stats = pool.stats()
    assert (stats.size, stats.closed_total, stats.released_total) == (0, 1, 1)


def test_exception_in_block_discards_client_by_default() -> None:
    pool, _ = make_pool()
    with pytest.raises(ValueError), pool.connection() as client:
        raise ValueError("boom")
    assert client.closed


def test_check_always_discards_dead_client_and_hands_out_a_live_one() -> None:
    pool, _backend = make_pool(check="always")
    client = pool.acquire()
    pool.release(client)
    client.healthy = False
    fresh = pool.acquire()
    assert fresh is not client and fresh.healthy
    assert client.closed
    assert pool.stats().check_failures_total == 1


def test_check_idle_validates_only_after_idle_period() -> None:
    pool, backend = make_pool(check="idle", check_idle_after=0.2)
    pool.release(pool.acquire())
    pool.release(pool.acquire())
    assert backend.checks == 0
    time.sleep(0.25)
    pool.release(pool.acquire())
    assert backend.checks == 1


def test_check_never_does_not_validate() -> None:
    # Idle for longer than CHECK_IDLE_AFTER: "idle" would check here, "never" must not.
    pool, backend = make_pool(check="never", check_idle_after=0.01)
    client = pool.acquire()
    pool.release(client)
    time.sleep(0.05)
    assert pool.acquire() is client
    pool.release(client)
    assert backend.checks == 0


def test_failed_check_presumes_older_idle_clients_dead() -> None:
    pool, backend = make_pool(check="always", max_size=5)
    clients = [pool.acquire() for _ in range(4)]
    for client in clients:
        client.healthy = False
        pool.release(client)
    fresh = pool.acquire()
    assert fresh not in clients
    wait_until(lambda: all(c.closed for c in clients))
    # One failed check, not four: the others were purged without being tested.
    assert backend.checks == 1


def test_creation_retries_with_backoff_then_raises_client_creation_error() -> None:
    pool, backend = make_pool(connect_retries=2, retry_backoff=0.05, timeout=5)
    backend.fail_create = ConnectionRefusedError("refused")
    start = time.monotonic()
    with pytest.raises(ClientCreationError) as info:
        pool.acquire()
    elapsed = time.monotonic() - start
    assert isinstance(info.value.__cause__, ConnectionRefusedError)
    assert 0.05 * 0.8 + 0.1 * 0.8 <= elapsed < 2.0
    assert pool.stats().errors_total == 3


def test_failing_pool_fails_fast_then_heals() -> None:
    pool, backend = make_pool(connect_retries=0, retry_backoff=0.1, retry_backoff_max=0.2)
    backend.fail_create = ConnectionRefusedError("down")
    with pytest.raises(ClientCreationError):
        pool.acquire()
    start = time.monotonic()
    with pytest.raises(ClientCreationError, match="failing fast"):
        pool.acquire()
    assert time.monotonic() - start < 0.05
    stats = pool.stats()
    assert not stats.healthy and stats.state == "failing"
    assert stats.last_error is not None and "down" in stats.last_error
    backend.fail_create = None
    deadline = time.monotonic() + 3
    while True:
        try:
            client = pool.acquire()
            break
        except ClientCreationError:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    pool.release(client)
    assert pool.stats().healthy


def test_acquire_is_bounded_by_timeout_while_creation_hangs() -> None:
    pool, backend = make_pool(timeout=0.2, connect_timeout=5)
    backend.create_delay = 1.0
    start = time.monotonic()
    with pytest.raises(PoolTimeout):
        pool.acquire()
    assert time.monotonic() - start < 0.6
    # The late client is not lost: it lands in the idle list.
    wait_until(lambda: pool.stats().idle == 1)


def test_min_size_is_filled_in_the_background_after_first_use() -> None:
    pool, backend = make_pool(min_size=3, max_size=5)
    assert backend.created == []  # nothing opens before first use
    pool.release(pool.acquire())
    wait_until(lambda: pool.stats().size == 3 and pool.stats().idle == 3)


def test_max_idle_shrinks_down_to_min_size() -> None:
    pool, _ = make_pool(min_size=1, max_size=5, max_idle=0.05)
    clients = [pool.acquire() for _ in range(4)]
    for client in clients:
        pool.release(client)
    time.sleep(0.1)
    pool.maintain(time.monotonic())
    assert pool.stats().size == 1


class CountingPool(Pool[FakeClient]):
    """Counts the maintenance rounds that visit it."""

    rounds = 0

    def maintain(self, now: float) -> float | None:
        self.rounds += 1
        return super().maintain(now)


def test_the_maintenance_thread_skips_a_settled_pool_until_something_is_due() -> None:
    """A pool with nothing to do costs the thread one comparison a round, yet its upkeep
    still comes on time: a client released after the pool settled expires at MAX_IDLE."""
    settled = CountingPool("settled", FakeBackend(), PoolSettings(max_idle=300.0))
    settled.release(settled.acquire())
    busy = CountingPool("busy", FakeBackend(), PoolSettings(max_idle=0.6, max_size=2))
    kept = busy.acquire()  # in use while the pool settles
    busy.release(busy.acquire())
    try:
        time.sleep(1.5)  # the rounds that see the creations end
        seen = settled.rounds
        time.sleep(2.5)
        # The thread runs a round a second at least: none of them visited the settled pool.
        assert settled.rounds == seen, (seen, settled.rounds)
        assert settled.stats().idle == 1
        busy.release(kept)
        # Released after the pool settled: closed at MAX_IDLE, not MAX_QUIET later.
        wait_until(lambda: busy.stats().size == 0, timeout=3.0)
        # A change that needs upkeep (a drain, here with MIN_SIZE) gets it at once.
        refill = CountingPool("refill", FakeBackend(), PoolSettings(min_size=1))
        refill.wait(5.0)
        time.sleep(1.5)
        before = refill.rounds
        refill.drain()
        wait_until(lambda: refill.stats().drains_total == 1
                   and refill.stats().created_total == 2 and refill.stats().idle == 1,
                   timeout=3.0)
        assert refill.rounds > before
        refill.close()
    finally:
        settled.close()
        busy.close()


def test_max_lifetime_replaces_old_clients_with_jitter() -> None:
    pool, _ = make_pool(max_lifetime=0.1)
    client = pool.acquire()
    entry = pool._in_use[id(client)]
    assert entry.created + 0.08 <= entry.expires <= entry.created + 0.1
    pool.release(client)
    time.sleep(0.12)
    assert pool.acquire() is not client
    assert client.closed


def test_close_waits_for_clients_in_use_then_refuses_acquires() -> None:
    pool, _ = make_pool()
    idle = pool.acquire()
    busy = pool.acquire()
    pool.release(idle)
    released = threading.Event()

    def hold() -> None:
        time.sleep(0.2)
        pool.release(busy)
        released.set()

    threading.Thread(target=hold).start()
    start = time.monotonic()
    pool.close(timeout=5)
    assert released.is_set() and time.monotonic() - start < 2
    assert idle.closed and busy.closed
    with pytest.raises(PoolClosed):
        pool.acquire()
    assert pool.stats().size == 0


def test_close_gives_up_waiting_after_timeout() -> None:
    pool, _ = make_pool()
    held = pool.acquire()
    start = time.monotonic()
    pool.close(timeout=0.1)
    assert time.monotonic() - start < 1
    assert held.closed


def test_close_wakes_waiters_with_pool_closed() -> None:
    pool, _ = make_pool(max_size=1, timeout=10)
    held = pool.acquire()
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            pool.acquire()
        except PoolClosed as exc:
            errors.append(exc)

    thread = threading.Thread(target=waiter)
    thread.start()
    wait_until(lambda: pool.stats().waiting == 1)
    pool.close(timeout=0)
    thread.join(2)
    assert len(errors) == 1
    del held


def test_retired_pool_closes_idle_now_and_in_use_on_release() -> None:
    pool, _ = make_pool()
    idle = pool.acquire()
    busy = pool.acquire()
    pool.release(idle)
    start = time.monotonic()
    pool.retire()
    assert time.monotonic() - start < 0.5
    assert idle.closed and not busy.closed
    with pytest.raises(PoolClosed):
        pool.acquire()
    pool.release(busy)
    assert busy.closed


def test_leak_is_logged_once_with_stack(caplog: pytest.LogCaptureFixture) -> None:
    pool, _ = make_pool(leak_timeout=0.05)
    client = pool.acquire()
    time.sleep(0.1)
    with caplog.at_level(logging.WARNING, logger="pooled_clients"):
        pool.maintain(time.monotonic())
        pool.maintain(time.monotonic())
    leak_logs = [r for r in caplog.records if "held for" in r.getMessage()]
    assert len(leak_logs) == 1
    assert "test_leak_is_logged_once_with_stack" in leak_logs[0].getMessage()
    stats = pool.stats()
    assert stats.leaks_total == 1 and stats.leases[0].leaked
    pool.release(client)


def test_stats_lease_records_thread_and_caller() -> None:
    pool, _ = make_pool()
    client = pool.acquire()
    (lease,) = pool.stats().leases
    assert lease.thread == threading.current_thread().name
    assert "test_engine.py" in lease.where
    assert "test_stats_lease_records_thread_and_caller" in lease.where
    pool.release(client)
    assert pool.stats().leases == ()


def test_wait_percentiles_reflect_waiting() -> None:
    pool, _ = make_pool(max_size=1)
    assert pool.stats().wait_ms_p50 is None
    held = pool.acquire()
    threading.Timer(0.1, pool.release, args=(held,)).start()
    pool.release(pool.acquire())
    stats = pool.stats()
    assert stats.wait_ms_p99 is not None and stats.wait_ms_p99 >= 80


def test_keepalive_replaces_dead_idle_clients() -> None:
    pool, backend = make_pool(keepalive_interval=0.01, check="never", min_size=2)
    clients = [pool.acquire() for _ in range(2)]
    for client in clients:
        pool.release(client)
    for client in clients:
        client.healthy = False
    time.sleep(0.02)
    pool.maintain(time.monotonic())
    wait_until(lambda: all(c.closed for c in clients))
    assert pool.stats().check_failures_total >= 1
    # MIN_SIZE brings two new, healthy clients; no checkout ever saw a dead one.
    wait_until(lambda: pool.stats().idle == 2)
    fresh = [pool.acquire() for _ in range(2)]
    assert all(c.healthy and not c.closed and c not in clients for c in fresh)
    assert len(backend.created) == 4
    for client in fresh:
        pool.release(client)


def test_stats_as_dict_is_json_ready() -> None:
    import json

    pool, _ = make_pool()
    client = pool.acquire()
    data = pool.stats().as_dict()
    json.dumps(data)
    assert data["in_use"] == 1 and data["leases"][0]["thread"] == "MainThread"
    pool.release(client)


def test_close_waits_for_a_creation_in_flight_and_closes_its_client() -> None:
    pool, backend = make_pool(timeout=0.05)
    backend.create_delay = 0.3
    with pytest.raises(PoolTimeout):
        pool.acquire()  # gives up; the creation goes on in the background
    assert pool.stats().creating == 1
    pool.close(timeout=5)
    stats = pool.stats()
    assert (stats.size, stats.creating, stats.idle) == (0, 0, 0)
    assert len(backend.created) == 1 and backend.created[0].closed
