"""PostgreSQL pools under production faults, against a private cluster restarted at will.

Every test here owns the module's cluster (never the shared session ``postgres`` fixture):
it stops, restarts or kills it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from devservers.postgres import PostgresCluster
from pooled_clients.backends.postgres import PostgresBackend
from pooled_clients.exceptions import ClientCreationError, PoolError
from pooled_clients.pool import Pool, PoolSettings
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    """A cluster of this module's own, destroyed at the end."""
    pg = PostgresCluster("faults")
    try:
        pg.start()
        yield pg
    finally:
        pg.destroy()


@pytest.fixture
def running(cluster: PostgresCluster) -> PostgresCluster:
    """The module cluster, started if a previous test left it down."""
    cluster.start()
    return cluster


PoolFactory = Callable[..., Pool[psycopg.Connection[Any]]]


@pytest.fixture
def make_pool() -> Iterator[PoolFactory]:
    """Build PostgreSQL pools over ``cluster``; all are closed when the test ends."""
    made: list[Pool[psycopg.Connection[Any]]] = []

    def make(cluster: PostgresCluster, alias: str = "faults",
             **settings: Any) -> Pool[psycopg.Connection[Any]]:
        options = {**cluster.kwargs("app"), "autocommit": True}
        backend = PostgresBackend(alias, options)
        pool = Pool(alias, backend, PoolSettings(**settings))
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.close(timeout=1.0)



def select_one(pool: Pool[psycopg.Connection[Any]], timeout: float | None = None) -> None:
    with pool.connection(timeout=timeout) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


class Load:
    """``threads`` threads running ``select 1`` through the pool until stopped.

    Each request is recorded as (start, end, error or None).
    """

    def __init__(self, pool: Pool[psycopg.Connection[Any]], threads: int) -> None:
        self.pool = pool
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.requests: list[tuple[float, float, BaseException | None]] = []
        self.threads = [threading.Thread(target=self._run, daemon=True, name=f"load-{i}")
                        for i in range(threads)]

    def _run(self) -> None:
        while not self.stop.is_set():
            start = time.monotonic()
            error: BaseException | None = None
            try:
                with self.pool.connection() as conn:
                    conn.execute("select pg_sleep(0.002)")
            except (PoolError, psycopg.Error) as exc:
                error = exc
            end = time.monotonic()
            with self.lock:
                self.requests.append((start, end, error))
            if error is not None:
                # A failing client would spin; real callers back off a little too.
                time.sleep(0.01)

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)
        assert not any(t.is_alive() for t in self.threads)

    def completed_after(self, moment: float) -> int:
        with self.lock:
            return sum(1 for start, _, error in self.requests if start >= moment and not error)

    def errors(self) -> list[tuple[float, float, BaseException]]:
        with self.lock:
            return [(s, e, err) for s, e, err in self.requests if err is not None]


def accepting_connections(cluster: PostgresCluster) -> bool:
    try:
        with psycopg.connect(**cluster.kwargs("app"), connect_timeout=1):
            return True
    except psycopg.Error:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_restart_under_load_recovers_without_errors_after_the_server_is_back(
    running: PostgresCluster, make_pool: PoolFactory, mode: str
) -> None:
    pool = make_pool(running, max_size=8, check="idle", timeout=5.0, connect_timeout=2.0,
                     connect_retries=6, retry_backoff=0.1, retry_backoff_max=0.5)
    with Load(pool, threads=16) as load:
        wait_until(lambda: load.completed_after(0) >= 200, 10)
        stopped_at = time.monotonic()
        running.stop(mode)
        running.start()
        # wait_ready() polls every 0.1s: the server accepted connections at most that long ago.
        back_at = time.monotonic() - 0.1
        # Fully healthy within 2s of the server accepting connections.
        wait_until(lambda: pool.stats().state == "open"
                          and load.completed_after(back_at) >= 32, 2.0), pool.stats()
        healthy_after = time.monotonic() - back_at
        wait_until(lambda: load.completed_after(back_at) >= 300, 10)
    errors = load.errors()
    # The restart did hit the load: requests in flight failed, every old client was replaced.
    assert errors and pool.stats().closed_total >= 8
    # At most one failure per thread: the request it had in flight at the restart. The next
    # ones wait for the connection retries to cover the downtime.
    assert len(errors) <= 16, [str(e) for _, _, e in errors]
    late = [(start - back_at, err) for start, _, err in errors if start >= back_at]
    assert not late, late[:3]
    # Only requests in flight at the restart, or started while the server was down, failed:
    # and no caller waited out its whole TIMEOUT on a pool full of dead clients.
    assert all(start < back_at for start, _, _ in errors)
    assert all(end - start < 4.0 for start, end, _ in errors), errors[:3]
    assert healthy_after < 2.0
    assert stopped_at < back_at
    # Every client now open works: nothing stale is left behind.
    clients = [pool.acquire(timeout=2) for _ in range(8)]
    try:
        for conn in clients:
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        for conn in clients:
            pool.release(conn)
    stats = pool.stats()
    assert stats.healthy and stats.size == stats.idle == 8


def test_a_restart_purges_every_stale_idle_client_at_once(
    running: PostgresCluster, make_pool: PoolFactory
) -> None:
    pool = make_pool(running, max_size=4, check="always", timeout=3.0)
    clients = [pool.acquire() for _ in range(4)]
    for conn in clients:
        pool.release(conn)
    assert pool.stats().idle == 4
    running.restart("fast")
    before = pool.stats()
    started = time.monotonic()
    select_one(pool)
    elapsed = time.monotonic() - started
    after = pool.stats()
    # One client failed its check; the other three were presumed dead without a round trip.
    assert after.check_failures_total - before.check_failures_total == 1
    assert after.closed_total - before.closed_total == 4
    assert after.created_total - before.created_total == 1
    assert elapsed < 2.0


def test_client_broken_in_use_is_discarded_and_stale_ones_purged(
    running: PostgresCluster, make_pool: PoolFactory
) -> None:
    pool = make_pool(running, max_size=3, check="never", timeout=3.0)
    a, b, c = (pool.acquire() for _ in range(3))
    pool.release(b)
    pool.release(c)
    running.restart("immediate")
    with pytest.raises(psycopg.OperationalError):
        a.execute("select 1")
    pool.release(a)
    stats = pool.stats()
    # The broken client and both idle ones created before it are gone, unchecked.
    assert stats.size == 0 and stats.idle == 0 and stats.errors_total >= 1
    select_one(pool)
    assert pool.stats().created_total == 4


def test_client_released_after_a_purge_is_not_handed_out_again(
    running: PostgresCluster, make_pool: PoolFactory
) -> None:
    pool = make_pool(running, max_size=2, check="never", timeout=3.0)
    a = pool.acquire()
    b = pool.acquire()
    running.restart("fast")
    with pytest.raises(psycopg.OperationalError):
        a.execute("select 1")
    pool.release(a)  # broken: purges everything created before now
    # ``b`` looks fine to psycopg (no I/O since the restart), but it predates the purge.
    pool.release(b)
    for _ in range(3):
        select_one(pool)
    assert pool.stats().errors_total == 1


def test_server_down_at_startup_fails_fast_then_heals_without_restart(
    cluster: PostgresCluster, make_pool: PoolFactory
) -> None:
    cluster.stop("fast")
    pool = make_pool(cluster, timeout=3.0, connect_timeout=1.0, connect_retries=1,
                     retry_backoff=0.05, retry_backoff_max=0.3)
    # The app starts: building the pool opened nothing and raised nothing.
    assert pool.stats().size == 0
    with pytest.raises(ClientCreationError) as first:
        pool.check(1.0, wait=False)
    assert isinstance(first.value.__cause__, psycopg.OperationalError)
    assert "app-s3cret-pw" not in str(first.value)
    stats = pool.stats()
    assert not stats.healthy and stats.state == "failing"
    assert stats.last_error and "app-s3cret-pw" not in stats.last_error
    # While down, callers fail at once rather than queueing behind hopeless connects.
    for _ in range(5):
        started = time.monotonic()
        with pytest.raises(ClientCreationError) as caught:
            pool.acquire(timeout=3.0)
        # At most one probe's connect (refused at once on 127.0.0.1), never the TIMEOUT.
        assert time.monotonic() - started < 1.0
        assert caught.value.__cause__ is not None
    cluster.start()
    up_at = time.monotonic()
    # One probe per RETRY_BACKOFF_MAX at most: the pool heals by itself.
    wait_until(lambda: pool.stats().healthy, 2.0, message="the pool is not healthy")
    pool.check(2.0)
    select_one(pool)
    assert time.monotonic() - up_at < 3.0
    stats = pool.stats()
    assert stats.state == "open" and stats.last_error is not None


def test_probe_attempts_are_spaced_by_the_backoff(
    cluster: PostgresCluster, make_pool: PoolFactory
) -> None:
    cluster.stop("fast")
    pool = make_pool(cluster, timeout=1.0, connect_timeout=1.0, connect_retries=0,
                     retry_backoff=0.2, retry_backoff_max=0.2)
    with pytest.raises(ClientCreationError):
        pool.acquire()
    rejected = 0
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        try:
            pool.acquire(timeout=0.5)
        except ClientCreationError:
            rejected += 1
        time.sleep(0.01)
    errors = pool.stats().errors_total
    # Around five probes in one second, not one connect per caller.
    assert rejected > 20
    assert 2 <= errors <= 10, errors


def test_keepalive_replaces_dead_idle_clients_in_the_background(
    running: PostgresCluster, make_pool: PoolFactory
) -> None:
    pool = make_pool(running, max_size=3, min_size=3, check="never",
                     keepalive_interval=0.2, timeout=3.0)
    select_one(pool)
    wait_until(lambda: pool.stats().idle == 3, 5)
    pids = {row[0] for row in running.execute(
        "select pid from pg_stat_activity where usename = 'app'")}
    assert len(pids) == 3
    # Kill the server side of every idle client: keepalive must notice without a request.
    running.execute("select pg_terminate_backend(pid) from pg_stat_activity "
                    "where usename = 'app'")
    wait_until(lambda: pool.stats().check_failures_total >= 1, 5, message="no check failed")
    wait_until(lambda: pool.stats().closed_total >= 3 and pool.stats().idle == 3, 5)
    # With CHECK "never", a request would have met a dead client without keepalive.
    errors = pool.stats().errors_total
    for _ in range(6):
        select_one(pool)
    assert pool.stats().errors_total == errors


def test_leak_is_logged_once_with_alias_thread_time_and_stack(
    running: PostgresCluster, make_pool: PoolFactory, caplog: pytest.LogCaptureFixture
) -> None:
    pool = make_pool(running, alias="leaky", leak_timeout=0.2)
    select_one(pool)  # starts the maintenance thread
    held: list[Any] = []
    ready = threading.Event()
    done = threading.Event()

    def forgetful_view() -> None:
        held.append(pool.acquire())
        ready.set()
        done.wait(10)

    thread = threading.Thread(target=forgetful_view, name="worker-leaking")
    with caplog.at_level(logging.WARNING, logger="pooled_clients"):
        thread.start()
        assert ready.wait(5)
        wait_until(lambda: pool.stats().leaks_total == 1, 5)
        # Several more maintenance rounds: still reported once.
        time.sleep(0.5)
        stats = pool.stats()
        done.set()
        thread.join(5)
    assert stats.leaks_total == 1
    [lease] = stats.leases
    assert lease.leaked and lease.thread == "worker-leaking" and lease.held_for >= 0.2
    assert lease.stack and "forgetful_view" in lease.stack
    records = [r for r in caplog.records if "LEAK_TIMEOUT" in r.getMessage()]
    assert len(records) == 1
    message = records[0].getMessage()
    assert "'leaky'" in message and "worker-leaking" in message
    assert "forgetful_view" in message and "held for" in message
    pool.release(held[0])
    # A new lease of the same client is a new chance to leak.
    conn = pool.acquire()
    wait_until(lambda: pool.stats().leaks_total == 2, 5)
    pool.release(conn)
    assert pool.stats().leases == ()
