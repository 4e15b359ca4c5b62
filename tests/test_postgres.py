"""The PostgreSQL backend against a real private cluster."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.test import override_settings

from devservers.postgres import PostgresCluster
from pooled_clients import pools
from pooled_clients.backends.base import deadline_scope
from pooled_clients.exceptions import ClientCreationError, PoolTimeout


@pytest.fixture
def app_name() -> str:
    return f"pc-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def pg_pool(postgres: PostgresCluster, app_name: str) -> Iterator[Any]:
    definition = {
        "BACKEND": "pooled_clients.backends.postgres.PostgresBackend",
        "OPTIONS": {"conninfo": postgres.conninfo(dbname="app"), "autocommit": True,
                    "application_name": app_name},
        "MAX_SIZE": 4,
        "TIMEOUT": 2.0,
    }
    with override_settings(POOLED_CLIENTS={"warehouse": definition}):
        yield pools["warehouse"]
        pools["warehouse"].close(timeout=1)


def sessions(postgres: PostgresCluster, app_name: str) -> int:
    rows = postgres.execute(
        "select count(*) from pg_stat_activity where application_name = %s", (app_name,)
    )
    return int(rows[0][0])


def test_query_through_pool(pg_pool: Any) -> None:
    with pg_pool.connection() as conn:
        assert isinstance(conn, psycopg.Connection)
        assert conn.execute("select 1 + 1").fetchone() == (2,)


def test_invariants_under_32_threads(pg_pool: Any, postgres: PostgresCluster,
                                     app_name: str) -> None:
    errors: list[BaseException] = []
    in_flight: dict[int, int] = {}
    lock = threading.Lock()
    peak_sessions = 0

    def worker() -> None:
        try:
            for _ in range(40):
                with pg_pool.connection(timeout=10) as conn:
                    with lock:
                        assert id(conn) not in in_flight, "one client in two threads"
                        in_flight[id(conn)] = threading.get_ident()
                    conn.execute("select 1").fetchone()
                    with lock:
                        del in_flight[id(conn)]
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def watch(stop: threading.Event) -> None:
        nonlocal peak_sessions
        while not stop.is_set():
            peak_sessions = max(peak_sessions, sessions(postgres, app_name))
            stats = pg_pool.stats()
            assert stats.size <= 4
            stop.wait(0.02)

    stop = threading.Event()
    watcher = threading.Thread(target=watch, args=(stop,))
    watcher.start()
    threads = [threading.Thread(target=worker) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    watcher.join()
    assert not errors, errors[:3]
    stats = pg_pool.stats()
    assert peak_sessions <= 4
    assert stats.acquired_total == stats.released_total + stats.in_use == 32 * 40
    assert stats.created_total - stats.closed_total == stats.size <= 4


def test_connection_returned_inside_transaction_comes_back_clean(pg_pool: Any) -> None:
    with override_settings(POOLED_CLIENTS={"tx": {
        "BACKEND": "pooled_clients.backends.postgres.PostgresBackend",
        "OPTIONS": dict(pg_pool.backend.options, autocommit=False),
        "MAX_SIZE": 1,
    }}):
        pool = pools["tx"]
        conn = pool.acquire()
        conn.execute("create temp table if not exists t (x int)")
        conn.commit()
        conn.execute("insert into t values (1)")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        pool.release(conn)
        again = pool.acquire()
        assert again is conn
        assert again.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert again.execute("select count(*) from t").fetchone() == (0,)
        pool.release(again)
        pool.close(1)


def test_failed_transaction_is_rolled_back_on_return(pg_pool: Any) -> None:
    with pytest.raises(psycopg.errors.DivisionByZero), pg_pool.connection() as conn:
        conn.execute("begin")
        conn.execute("select 1 / 0")
    with pg_pool.connection() as again:
        assert again is conn
        assert again.execute("select 1").fetchone() == (1,)


def test_killed_connection_is_never_handed_out_with_check_always(
    postgres: PostgresCluster, app_name: str
) -> None:
    definition = {
        "BACKEND": "pooled_clients.backends.postgres.PostgresBackend",
        "OPTIONS": {"conninfo": postgres.conninfo(dbname="app"), "autocommit": True,
                    "application_name": app_name},
        "MAX_SIZE": 2,
        "CHECK": "always",
    }
    with override_settings(POOLED_CLIENTS={"checked": definition}):
        pool = pools["checked"]
        with pool.connection() as conn:
            victim = conn.info.backend_pid
        postgres.execute("select pg_terminate_backend(%s)", (victim,))
        for _ in range(5):
            with pool.connection() as conn:
                assert conn.info.backend_pid != victim
                assert conn.execute("select 1").fetchone() == (1,)
        assert pool.stats().check_failures_total == 1
        pool.close(1)


def test_broken_connection_is_discarded_on_return(pg_pool: Any,
                                                  postgres: PostgresCluster) -> None:
    with pytest.raises(psycopg.OperationalError), pg_pool.connection() as conn:
        postgres.execute("select pg_terminate_backend(%s)", (conn.info.backend_pid,))
        conn.execute("select 1")
    assert conn.closed
    with pg_pool.connection() as fresh:
        assert fresh is not conn
        assert fresh.execute("select 1").fetchone() == (1,)
    assert pg_pool.stats().errors_total >= 1


def test_saturated_pool_raises_pool_timeout_in_about_timeout(pg_pool: Any) -> None:
    held = [pg_pool.acquire() for _ in range(4)]
    start = time.monotonic()
    with pytest.raises(PoolTimeout) as info:
        pg_pool.acquire(timeout=0.5)
    elapsed = time.monotonic() - start
    assert 0.45 <= elapsed < 1.5
    assert "'warehouse'" in str(info.value)
    assert "in use 4 / idle 0 / max 4" in str(info.value)
    for conn in held:
        pg_pool.release(conn)


def test_unreachable_server_raises_client_creation_error_with_cause() -> None:
    from devservers.ports import free_port

    port = free_port()
    with override_settings(POOLED_CLIENTS={"down": {
        "BACKEND": "pooled_clients.backends.postgres.PostgresBackend",
        "OPTIONS": {"conninfo": f"postgresql://app:pw@127.0.0.1:{port}/app"},
        "CONNECT_RETRIES": 1,
        "RETRY_BACKOFF": 0.05,
    }}):
        start = time.monotonic()
        with pytest.raises(ClientCreationError) as info:
            pools["down"].acquire()
        assert time.monotonic() - start < 3
        assert isinstance(info.value.__cause__, psycopg.OperationalError)
        assert f"127.0.0.1:{port}" in str(info.value)


def test_check_is_a_bounded_round_trip(pg_pool: Any) -> None:
    pg_pool.check(timeout=2)
    with pg_pool.connection() as conn:
        pg_pool.backend.check(conn)
        # A server that stops answering (its backend process stopped) costs the check
        # its bound, not a hang.
        backend_pid = conn.info.backend_pid
        os.kill(backend_pid, signal.SIGSTOP)
        try:
            start = time.monotonic()
            with deadline_scope(start + 0.5), pytest.raises(Exception) as info:
                pg_pool.backend.check(conn)
            elapsed = time.monotonic() - start
        finally:
            os.kill(backend_pid, signal.SIGCONT)
        assert 0.4 <= elapsed < 2.0, elapsed
        assert "time" in str(info.value).lower(), info.value


def test_wrong_password_is_reported_without_the_password(postgres: PostgresCluster) -> None:
    with override_settings(POOLED_CLIENTS={"badpw": {
        "BACKEND": "pooled_clients.backends.postgres.PostgresBackend",
        "OPTIONS": {"conninfo": f"postgresql://app:Wr0ngSecretValue@127.0.0.1:{postgres.port}/app"},
        "CONNECT_RETRIES": 0,
    }}):
        with pytest.raises(ClientCreationError) as info:
            pools["badpw"].acquire()
        assert "Wr0ngSecretValue" not in str(info.value)
        assert "Wr0ngSecretValue" not in repr(pools["badpw"].stats())
