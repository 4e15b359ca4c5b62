"""Half-open, slow and vanishing servers, simulated by a TCP proxy on 127.0.0.1.

A server that accepts TCP but never answers, or answers slower than the timeouts, must cost
a caller a clear timeout error within CONNECT_TIMEOUT / TIMEOUT: never a hang.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import requests

from devservers.http import UpstreamServer
from devservers.postgres import PostgresCluster
from devservers.proxy import FaultProxy
from pooled_clients.backends.base import ClientBackend
from pooled_clients.backends.http import HTTPBackend
from pooled_clients.backends.postgres import PostgresBackend
from pooled_clients.exceptions import ClientCreationError, PoolError, PoolTimeout
from pooled_clients.pool import Pool, PoolSettings

pytestmark = pytest.mark.timeout(60)

ProxyFactory = Callable[[str, int], FaultProxy]


@pytest.fixture
def pools() -> Iterator[list[Pool[Any]]]:
    made: list[Pool[Any]] = []
    yield made
    for pool in made:
        pool.close(timeout=0.5)


def pg_pool(pools: list[Pool[Any]], proxy: FaultProxy, postgres: PostgresCluster,
            options: dict[str, Any] | None = None, **settings: Any
            ) -> Pool[psycopg.Connection[Any]]:
    kwargs = {**postgres.kwargs("app"), "host": proxy.host, "port": proxy.port,
              "autocommit": True, **(options or {})}
    pool: Pool[psycopg.Connection[Any]] = Pool(
        "proxied-pg", PostgresBackend("proxied-pg", kwargs), PoolSettings(**settings))
    pools.append(pool)
    return pool


def http_pool(pools: list[Pool[Any]], proxy: FaultProxy, options: dict[str, Any],
              **settings: Any) -> Pool[Any]:
    backend: ClientBackend[Any] = HTTPBackend(
        "proxied-http", {"base_url": f"http://{proxy.host}:{proxy.port}/", **options})
    pool: Pool[Any] = Pool("proxied-http", backend, PoolSettings(**settings))
    pools.append(pool)
    return pool


def elapsed_since(start: float) -> float:
    return time.monotonic() - start


# --- PostgreSQL ---------------------------------------------------------------------------


def test_postgres_half_open_at_connect_times_out_within_timeout(
    postgres: PostgresCluster, fault_proxy_factory: ProxyFactory, pools: list[Pool[Any]]
) -> None:
    proxy = fault_proxy_factory(postgres.host, postgres.port)
    pool = pg_pool(pools, proxy, postgres, timeout=0.5, connect_timeout=2.0)
    proxy.pause()
    start = time.monotonic()
    with pytest.raises(PoolTimeout) as caught:
        pool.acquire()
    assert 0.4 <= elapsed_since(start) < 1.2
    message = str(caught.value)
    assert "'proxied-pg'" in message and "0.5s" in message and "unanswered" in message
    assert postgres.password not in message
    proxy.resume()
    with pool.connection(timeout=5) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_postgres_connect_that_never_answers_fails_as_a_creation_error(
    postgres: PostgresCluster, fault_proxy_factory: ProxyFactory, pools: list[Pool[Any]]
) -> None:
    proxy = fault_proxy_factory(postgres.host, postgres.port)
    # libpq's shortest connect_timeout is 2s: the creation attempt gives up after that.
    pool = pg_pool(pools, proxy, postgres, timeout=4.0, connect_timeout=2.0,
                   connect_retries=0)
    proxy.pause()
    start = time.monotonic()
    with pytest.raises(ClientCreationError) as caught:
        pool.acquire()
    assert 1.5 <= elapsed_since(start) < 3.5
    assert isinstance(caught.value.__cause__, psycopg.OperationalError)
    assert pool.stats().state == "failing"


def test_postgres_check_on_a_silent_server_is_bounded_by_the_acquire_timeout(
    postgres: PostgresCluster, fault_proxy_factory: ProxyFactory, pools: list[Pool[Any]]
) -> None:
    proxy = fault_proxy_factory(postgres.host, postgres.port)
    pool = pg_pool(pools, proxy, postgres, check="always", timeout=0.6, connect_timeout=5.0)
    conn = pool.acquire()
    pool.release(conn)
    proxy.pause()
    start = time.monotonic()
    with pytest.raises(PoolError) as caught:
        pool.acquire()
    # Neither the check (CONNECT_TIMEOUT 5s) nor the reconnect may outlast TIMEOUT.
    assert elapsed_since(start) < 1.2
    assert isinstance(caught.value, PoolTimeout | ClientCreationError)
    assert pool.stats().check_failures_total == 1


def test_postgres_check_on_a_slow_server_fails_within_connect_timeout(
    postgres: PostgresCluster, fault_proxy_factory: ProxyFactory, pools: list[Pool[Any]]
) -> None:
    proxy = fault_proxy_factory(postgres.host, postgres.port)
    pool = pg_pool(pools, proxy, postgres, check="always", timeout=5.0, connect_timeout=0.3)
    conn = pool.acquire()
    pool.release(conn)
    proxy.delay(1.0)
    start = time.monotonic()
    with pytest.raises(PoolError):
        pool.check(0.8)
    assert elapsed_since(start) < 1.3
    # A server slower than usual but within the timeouts still serves.
    proxy.delay(0.02)
    with pool.connection() as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_postgres_release_to_a_silent_server_discards_within_connect_timeout(
    postgres: PostgresCluster, fault_proxy_factory: ProxyFactory, pools: list[Pool[Any]]
) -> None:
    proxy = fault_proxy_factory(postgres.host, postgres.port)
    pool = pg_pool(pools, proxy, postgres, {"autocommit": False}, connect_timeout=0.5)
    conn = pool.acquire()
    conn.execute("select 1")  # leaves a transaction open: release must roll it back
    proxy.pause()
    start = time.monotonic()
    pool.release(conn)
    assert elapsed_since(start) < 1.0
    stats = pool.stats()
    assert stats.size == 0 and stats.closed_total == 1


def test_postgres_dropped_connections_are_replaced(
    postgres: PostgresCluster, fault_proxy_factory: ProxyFactory, pools: list[Pool[Any]]
) -> None:
    proxy = fault_proxy_factory(postgres.host, postgres.port)
    pool = pg_pool(pools, proxy, postgres, max_size=3, check="always")
    held = [pool.acquire() for _ in range(3)]
    for conn in held:
        pool.release(conn)
    proxy.drop()
    start = time.monotonic()
    with pool.connection() as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    assert elapsed_since(start) < 2.0
    stats = pool.stats()
    # One failed check; its two idle peers were presumed dead with it.
    assert stats.check_failures_total == 1 and stats.closed_total == 3


def test_postgres_refused_connections_fail_fast(
    postgres: PostgresCluster, fault_proxy_factory: ProxyFactory, pools: list[Pool[Any]]
) -> None:
    proxy = fault_proxy_factory(postgres.host, postgres.port)
    pool = pg_pool(pools, proxy, postgres, timeout=3.0, connect_retries=1,
                   retry_backoff=0.05, retry_backoff_max=0.2)
    proxy.refuse()
    start = time.monotonic()
    with pytest.raises(ClientCreationError):
        pool.acquire()
    assert elapsed_since(start) < 1.5
    start = time.monotonic()
    with pytest.raises(ClientCreationError):
        pool.acquire()
    assert elapsed_since(start) < 0.5
    proxy.refuse(False)
    deadline = time.monotonic() + 3
    while not pool.stats().healthy:
        assert time.monotonic() < deadline, pool.stats()
        time.sleep(0.02)
    with pool.connection() as conn:
        assert conn.execute("select 1").fetchone() == (1,)


# --- HTTP ---------------------------------------------------------------------------------


def test_http_half_open_upstream_times_out_within_the_request_timeout(
    upstream: UpstreamServer, fault_proxy_factory: ProxyFactory, pools: list[Pool[Any]]
) -> None:
    proxy = fault_proxy_factory(upstream.host, upstream.port)
    pool = http_pool(pools, proxy, {"timeout": 0.4}, connect_timeout=1.0)
    with pool.connection() as http:
        assert http.get("health").status_code == 200
    proxy.pause()
    start = time.monotonic()
    with pool.connection() as http, pytest.raises(requests.Timeout):
        http.get("health")
    assert 0.3 <= elapsed_since(start) < 1.2
    proxy.resume()
    with pool.connection() as http:
        assert http.get("health").json() == {"ok": True}


def test_http_slow_upstream_times_out_and_a_merely_slower_one_serves(
    upstream: UpstreamServer, fault_proxy_factory: ProxyFactory, pools: list[Pool[Any]]
) -> None:
    proxy = fault_proxy_factory(upstream.host, upstream.port)
    pool = http_pool(pools, proxy, {"timeout": 0.3})
    proxy.delay(0.6)
    start = time.monotonic()
    with pool.connection() as http, pytest.raises(requests.Timeout):
        http.get("json/x")
    assert elapsed_since(start) < 1.2
    proxy.delay(0.05)
    with pool.connection() as http:
        assert http.get("json/x").json()["ok"] is True


def test_http_health_check_on_a_silent_upstream_is_bounded(
    upstream: UpstreamServer, fault_proxy_factory: ProxyFactory, pools: list[Pool[Any]]
) -> None:
    proxy = fault_proxy_factory(upstream.host, upstream.port)
    pool = http_pool(pools, proxy, {"health_path": "health", "timeout": 10},
                     check="always", connect_timeout=5.0)
    pool.check(2.0)
    proxy.pause()
    start = time.monotonic()
    with pytest.raises(PoolError):
        pool.check(0.5)
    assert elapsed_since(start) < 1.2


def test_http_refused_and_dropped_connections_raise_connection_errors_then_recover(
    upstream: UpstreamServer, fault_proxy_factory: ProxyFactory, pools: list[Pool[Any]]
) -> None:
    proxy = fault_proxy_factory(upstream.host, upstream.port)
    pool = http_pool(pools, proxy, {"timeout": 2})
    with pool.connection() as http:
        assert http.get("health").status_code == 200
    proxy.drop()
    proxy.refuse()
    start = time.monotonic()
    with pool.connection() as http, pytest.raises(requests.ConnectionError):
        http.get("health")
    assert elapsed_since(start) < 1.0
    proxy.refuse(False)
    with pool.connection() as http:
        assert http.get("health").status_code == 200
