"""The engine's rules hold whatever the caller does, from threads and from tasks alike:
the CHECK policy, capacity kept through exceptions in the wait and in creation threads,
stale second releases, and a TOTAL_MAX_SIZE that holds at the server."""

from __future__ import annotations

import asyncio
import math
import signal
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from devservers.tls import EchoServer
from pooled_clients.aio import AsyncPool
from pooled_clients.backends.base import AsyncClientBackend
from pooled_clients.backends.tcp import TCPBackend
from pooled_clients.endpoints import EndpointPool
from pooled_clients.exceptions import ClientCreationError, PoolError
from pooled_clients.groups import SharedCapacity, member_settings
from pooled_clients.pool import Pool, PoolSettings
from tests.fakes import FakeBackend, FakeClient
from tests.waiting import wait_until


def make_pool(**settings: Any) -> tuple[Pool[FakeClient], FakeBackend]:
    backend = FakeBackend()
    settings.setdefault("timeout", 2.0)
    return Pool("rules", backend, PoolSettings(**settings)), backend


def at_rest(pool: Any) -> bool:
    stats = pool.stats()
    return (stats.in_use == 0 and stats.waiting == 0 and stats.creating == 0
            and stats.closing == 0 and stats.size == stats.idle)


# --------------------------------------------------------------------------- CHECK policy


class AsyncFakeBackend(AsyncClientBackend[FakeClient]):
    """FakeBackend's counting, with coroutine methods."""

    def __init__(self) -> None:
        super().__init__("rules", {})
        self.sync = FakeBackend()

    async def create(self) -> FakeClient:
        client = self.sync.create()
        client.loop = asyncio.get_running_loop()
        return client

    async def check(self, client: FakeClient) -> None:
        self.sync.check(client)

    async def reset(self, client: FakeClient) -> bool:
        return self.sync.reset(client)


def checks_after_idle(kind: str, check: str, idle_for: float) -> int:
    """Checks run by a second checkout of the same client after ``idle_for`` seconds."""
    settings = PoolSettings(check=check, check_idle_after=0.05, timeout=2.0)
    if kind == "async pool":
        abackend = AsyncFakeBackend()
        apool: AsyncPool[FakeClient] = AsyncPool("rules", abackend, settings)

        async def run() -> int:
            client = await apool.aacquire()
            await apool.arelease(client)
            await asyncio.sleep(idle_for)
            before = abackend.sync.checks
            again = await apool.aacquire()
            assert again is client
            await apool.arelease(again)
            return abackend.sync.checks - before

        return asyncio.run(run())
    backend = FakeBackend()
    pool = Pool("rules", backend, settings)
    if kind == "sync pool, thread":
        client = pool.acquire()
        pool.release(client)
        time.sleep(idle_for)
        before = backend.checks
        again = pool.acquire()
        assert again is client
        pool.release(again)
        return backend.checks - before

    async def from_task() -> int:
        client = await pool.aacquire()
        await pool.arelease(client)
        await asyncio.sleep(idle_for)
        before = backend.checks
        again = await pool.aacquire()
        assert again is client
        await pool.arelease(again)
        return backend.checks - before

    return asyncio.run(from_task())


@pytest.mark.parametrize("kind", ["sync pool, thread", "sync pool, task", "async pool"])
@pytest.mark.parametrize(("check", "fresh", "stale"), [
    ("always", 1, 1),   # every checkout
    ("idle", 0, 1),     # only past CHECK_IDLE_AFTER (0.05 s here)
    ("never", 0, 0),    # not even past CHECK_IDLE_AFTER
])
def test_every_checkout_path_agrees_on_when_a_check_runs(kind: str, check: str, fresh: int,
                                                         stale: int) -> None:
    assert checks_after_idle(kind, check, 0.0) == fresh
    assert checks_after_idle(kind, check, 0.15) == stale


# --------------------------------------------------------------------------- capacity kept


def test_an_infinite_timeout_waits_and_loses_nothing() -> None:
    pool, _ = make_pool(max_size=1, timeout=math.inf)
    held = pool.acquire()
    got: list[FakeClient] = []
    waiter = threading.Thread(target=lambda: got.append(pool.acquire(timeout=math.inf)))
    waiter.start()
    wait_until(lambda: pool.stats().waiting == 1)
    pool.release(held)
    waiter.join(5.0)
    assert got == [held]
    with pytest.raises(ValueError, match="NaN"):
        pool.acquire(timeout=math.nan)  # the pool is exhausted: the timeout matters
    pool.release(held)
    assert at_rest(pool)


class Interrupted(Exception):
    pass


def test_a_signal_that_raises_in_the_wait_leaves_no_dead_waiter() -> None:
    pool, _ = make_pool(max_size=1, timeout=10.0)
    held = pool.acquire()

    def deadline(signum: int, frame: Any) -> None:
        raise Interrupted("request deadline")

    previous = signal.signal(signal.SIGALRM, deadline)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        with pytest.raises(Interrupted):
            pool.acquire()  # the main thread waits; SIGALRM lands in the wait
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert pool.stats().waiting == 0
    pool.release(held)
    # The released client went to the idle list, not to the waiter that left.
    assert pool.acquire(timeout=0.5) is held
    pool.release(held)
    assert at_rest(pool)


def test_a_creation_thread_that_dies_gives_its_slot_back() -> None:
    pool, backend = make_pool(max_size=1, timeout=0.5, connect_retries=1,
                              retry_backoff=1e300, retry_backoff_max=1e300)
    backend.fail_create = ConnectionRefusedError("down")
    with pytest.raises(ClientCreationError):
        pool.acquire()
    # No retry sleeps past every caller's TIMEOUT holding the slot, and none overflows.
    wait_until(lambda: pool.stats().creating == 0, timeout=2.0)
    stats = pool.stats()
    assert (stats.size, stats.state) == (0, "failing")
    with pytest.raises(ClientCreationError, match="failing fast"):
        pool.acquire()
    backend.fail_create = None
    pool.probe_now()
    client = pool.acquire(timeout=2.0)  # the service is back: the pool is too
    pool.release(client)
    assert at_rest(pool)


def test_a_stale_second_release_is_refused_and_the_holder_keeps_the_client() -> None:
    pool, _ = make_pool(max_size=1)
    client = pool.acquire()
    pool.release(client)
    taken = threading.Event()
    done = threading.Event()

    def other_caller() -> None:
        again = pool.acquire()
        assert again is client
        taken.set()
        done.wait(5.0)
        pool.release(again)

    thread = threading.Thread(target=other_caller)
    thread.start()
    assert taken.wait(5.0)
    with pytest.raises(PoolError, match="released twice"):
        pool.release(client)  # stale: this thread released it already
    assert pool.stats().in_use == 1  # still the other caller's
    done.set()
    thread.join(5.0)
    assert at_rest(pool)


def test_a_client_handed_to_another_thread_may_be_released_there() -> None:
    pool, _ = make_pool(max_size=1)
    for _ in range(3):
        client = pool.acquire()
        releaser = threading.Thread(target=pool.release, args=(client,))
        releaser.start()
        releaser.join(5.0)
    assert at_rest(pool) and pool.stats().released_total == 3


# --------------------------------------------------------------------------- shared cap


class CountingTCPBackend(TCPBackend):
    """Counts sockets from before connect() starts until after close() returns: what the
    server can see open at once, at most."""

    open_now = 0
    most = 0
    lock = threading.Lock()

    def create(self) -> socket.socket:
        with self.lock:
            type(self).open_now += 1
            type(self).most = max(type(self).most, type(self).open_now)
        try:
            return super().create()
        except BaseException:
            with self.lock:
                type(self).open_now -= 1
            raise

    def close(self, client: socket.socket) -> None:
        try:
            super().close(client)
        finally:
            with self.lock:
                type(self).open_now -= 1


@pytest.fixture
def two_echo_servers() -> Iterator[list[EchoServer]]:
    servers = [EchoServer(), EchoServer()]
    for server in servers:
        server.start()
    yield servers
    for server in servers:
        server.stop()


def test_total_max_size_holds_at_the_server_while_endpoints_trade_idle_clients(
        two_echo_servers: list[EchoServer]) -> None:
    CountingTCPBackend.open_now = CountingTCPBackend.most = 0
    capacity = SharedCapacity(5)
    settings = PoolSettings(max_size=4, timeout=5.0, check="never")
    for name, server in zip(("a", "b"), two_echo_servers, strict=True):
        backend = CountingTCPBackend("cap", {"host": "127.0.0.1", "port": server.port})
        capacity.members.append(Pool("cap", backend, member_settings(settings, 4, 0),
                                     capacity=capacity, name=name))
    pool: EndpointPool[socket.socket] = EndpointPool("cap", capacity.members, capacity)
    stop = time.monotonic() + 1.5
    errors: list[BaseException] = []

    def work(number: int) -> None:
        endpoint = "ab"[number % 2]
        try:
            while time.monotonic() < stop:
                with pool.connection(endpoint=endpoint) as sock:
                    sock.sendall(b"x")
                    assert sock.recv(1) == b"x"
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors[:3]
    stats = pool.stats()
    assert stats.acquired_total > 100
    assert CountingTCPBackend.most <= 5, f"{CountingTCPBackend.most} open at once"
    pool.close(1.0)
    assert CountingTCPBackend.open_now == 0


def test_a_member_with_nothing_idle_gets_a_slot_from_an_idle_member() -> None:
    capacity = SharedCapacity(2)
    backends = [FakeBackend(), FakeBackend()]
    for name, backend in zip(("a", "b"), backends, strict=True):
        capacity.members.append(Pool("cap", backend, PoolSettings(max_size=2, timeout=2.0),
                                     capacity=capacity, name=name))
    pool: EndpointPool[FakeClient] = EndpointPool("cap", capacity.members, capacity)
    first = [pool.acquire(endpoint="a") for _ in range(2)]
    for client in first:
        pool.release(client)  # two idle clients on "a": the cap is reached
    start = time.monotonic()
    client = pool.acquire(endpoint="b", timeout=2.0)
    assert time.monotonic() - start < 1.0  # not after "a"'s clients age out
    assert backends[1].open_count() == 1 and backends[0].open_count() == 1
    pool.release(client)
    pool.close(1.0)

