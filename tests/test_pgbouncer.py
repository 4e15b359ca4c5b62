"""The PostgreSQL backend through PgBouncer in transaction mode (``prepare_threshold: None``).

The behaviours that make sense through a pooler: queries, transactions, reset on return,
timeouts and the discard of broken clients. PgBouncer is how a fleet of app hosts shares one
server's connections; each host's pool then holds cheap client connections to PgBouncer.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from devservers.pgbouncer import PgBouncer, find_pgbouncer
from devservers.postgres import PostgresCluster
from pooled_clients.backends.postgres import PostgresBackend
from pooled_clients.exceptions import PoolTimeout
from pooled_clients.pool import Pool, PoolSettings

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(find_pgbouncer() is None, reason="pgbouncer is not installed"),
]

TABLE = "bouncer_items"


@pytest.fixture(scope="module")
def bouncer(postgres: PostgresCluster) -> Iterator[PgBouncer]:
    with psycopg.connect(postgres.conninfo("app"), autocommit=True) as conn:
        conn.execute(f"create table if not exists {TABLE} (id serial primary key, name text)")
    with PgBouncer(postgres, pool_mode="transaction") as pgbouncer:
        yield pgbouncer
    with psycopg.connect(postgres.conninfo("app"), autocommit=True) as conn:
        conn.execute(f"drop table if exists {TABLE}")


@pytest.fixture
def make_pool(bouncer: PgBouncer) -> Iterator[Any]:
    made: list[Pool[psycopg.Connection[Any]]] = []

    def make(autocommit: bool = True, **settings: Any) -> Pool[psycopg.Connection[Any]]:
        options = {**bouncer.kwargs("app"), "autocommit": autocommit,
                   "prepare_threshold": None}
        pool = Pool("bounced", PostgresBackend("bounced", options), PoolSettings(**settings))
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.close(timeout=1.0)


def test_queries_through_pgbouncer(make_pool: Any) -> None:
    pool = make_pool()
    with pool.connection() as conn:
        row = conn.execute("select current_user, current_database(), %s::int", [7]).fetchone()
        assert row == ("app", "app", 7)
        # The same parametrised query many times: never prepared, so any server connection
        # PgBouncer picks for the next transaction can run it.
        for n in range(20):
            assert conn.execute("select %s::int * 2", [n]).fetchone() == (n * 2,)


def test_many_threads_share_few_server_connections(make_pool: Any) -> None:
    pool = make_pool(max_size=6)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for n in range(25):
                with pool.connection(timeout=5) as conn:
                    assert conn.execute("select %s::text", [str(n)]).fetchone() == (str(n),)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors[:3]
    assert pool.stats().size <= 6


def test_transactions_commit_and_roll_back(make_pool: Any) -> None:
    pool = make_pool(autocommit=False)
    with pool.connection() as conn:
        conn.execute(f"insert into {TABLE} (name) values ('kept')")
        conn.commit()
        conn.execute(f"insert into {TABLE} (name) values ('undone')")
        conn.rollback()
    with pool.connection() as conn:
        names = {r[0] for r in conn.execute(f"select name from {TABLE}").fetchall()}
        conn.rollback()
    assert "kept" in names and "undone" not in names


def test_open_transaction_is_rolled_back_on_return(make_pool: Any) -> None:
    pool = make_pool(autocommit=False, max_size=1)
    conn = pool.acquire()
    conn.execute(f"insert into {TABLE} (name) values ('abandoned')")
    pool.release(conn)
    with pool.connection() as again:
        assert again is conn
        assert again.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        count = again.execute(f"select count(*) from {TABLE} where name = 'abandoned'")
        assert count.fetchone() == (0,)
        again.rollback()


def test_failed_transaction_is_reset_and_the_client_reused(make_pool: Any) -> None:
    pool = make_pool(autocommit=False, max_size=1)
    with pytest.raises(psycopg.errors.QueryCanceled), pool.connection() as conn:
        conn.execute("set local statement_timeout = '50ms'")
        conn.execute("select pg_sleep(2)")
    with pool.connection() as again:
        assert again is conn
        assert again.execute("select 1").fetchone() == (1,)
        again.rollback()
    assert pool.stats().closed_total == 0


def test_acquire_times_out_when_every_client_is_in_use(make_pool: Any) -> None:
    pool = make_pool(max_size=1, timeout=0.2)
    held = pool.acquire()
    with pytest.raises(PoolTimeout):
        pool.acquire()
    pool.release(held)


def test_broken_clients_are_discarded(make_pool: Any, bouncer: PgBouncer) -> None:
    pool = make_pool(max_size=3, check="always")
    held = [pool.acquire() for _ in range(3)]
    in_use, idle = held[0], held[1:]
    for conn in idle:
        pool.release(conn)
    # PgBouncer's admin console drops every client connection to the database.
    with psycopg.connect(**bouncer.kwargs("pgbouncer"), autocommit=True,
                         prepare_threshold=None) as admin:
        admin.execute("kill app")
        admin.execute("resume app")
    with pytest.raises(psycopg.OperationalError):
        in_use.execute("select 1")
    pool.release(in_use)
    stats = pool.stats()
    assert stats.size == 0 and stats.errors_total == 1
    with pool.connection() as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    assert pool.stats().created_total == 4
