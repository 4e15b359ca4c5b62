"""The pools under test, each holding POOL_SIZE real psycopg connections.

Every contestant is reduced to the two callables a request handler would use (``acquire`` and
``release``), bound as directly as each library allows so that the measuring loop adds the same
small cost to all of them. ``connection`` is set for contestants measured through a ``with`` block.
"""

from __future__ import annotations

import functools
import operator
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import psycopg

POOL_SIZE = 10
OUR_ALIAS = "bench"


@dataclass
class Contestant:
    key: str
    label: str
    acquire: Callable[[], Any]
    release: Callable[[Any], None]
    close: Callable[[], None]
    application_name: str
    connection: Callable[[], AbstractContextManager[Any]] | None = None
    note: str = ""


@dataclass(frozen=True)
class Spec:
    """How to build one contestant: ``build(conninfo, application_name)``."""

    key: str
    label: str
    build: Callable[[str, str], Contestant]
    description: str


def _connector(conninfo: str, application_name: str) -> Callable[[], psycopg.Connection[Any]]:
    def connect() -> psycopg.Connection[Any]:
        return psycopg.connect(conninfo, autocommit=True, application_name=application_name)

    return connect


def _close_all(conns: Iterable[psycopg.Connection[Any]]) -> None:
    for conn in conns:
        conn.close()


# --- floor: one Condition guarding a list ------------------------------------------------------


class FloorPool:
    """The least a blocking pool can do: a list, a Condition, nothing else."""

    def __init__(self, conns: Iterable[Any]) -> None:
        self._items = list(conns)
        self._all = list(self._items)
        self._cond = threading.Condition()

    def acquire(self) -> Any:
        with self._cond:
            while not self._items:
                self._cond.wait()
            return self._items.pop()

    def release(self, conn: Any) -> None:
        with self._cond:
            self._items.append(conn)
            self._cond.notify()

    def close(self) -> None:
        _close_all(self._all)


def build_floor(conninfo: str, application_name: str) -> Contestant:
    connect = _connector(conninfo, application_name)
    pool = FloorPool(connect() for _ in range(POOL_SIZE))
    return Contestant("floor", "floor", pool.acquire, pool.release, pool.close, application_name)


# --- fair floor: FIFO hand-off, no barging ---------------------------------------------------


class FairFloorPool:
    """The least a *fair* blocking pool can do: one Lock, a list and a FIFO of waiters.

    A release with callers waiting hands the connection straight to the oldest of them, so a
    thread that just released cannot take it back ahead of them (the plain floor lets it).
    """

    def __init__(self, conns: Iterable[Any]) -> None:
        self._items = list(conns)
        self._all = list(self._items)
        self._lock = threading.Lock()
        self._waiters: deque[list[Any]] = deque()

    def acquire(self) -> Any:
        with self._lock:
            if self._items and not self._waiters:
                return self._items.pop()
            gate = threading.Lock()
            gate.acquire()
            waiter: list[Any] = [gate, None]
            self._waiters.append(waiter)
        gate.acquire()
        return waiter[1]

    def release(self, conn: Any) -> None:
        with self._lock:
            if self._waiters:
                waiter = self._waiters.popleft()
                waiter[1] = conn
                waiter[0].release()
            else:
                self._items.append(conn)

    def close(self) -> None:
        _close_all(self._all)


def build_fair_floor(conninfo: str, application_name: str) -> Contestant:
    connect = _connector(conninfo, application_name)
    pool = FairFloorPool(connect() for _ in range(POOL_SIZE))
    return Contestant(
        "fair_floor",
        "floor, FIFO hand-off",
        pool.acquire,
        pool.release,
        pool.close,
        application_name,
    )


# --- queue.LifoQueue ---------------------------------------------------------------------------


def build_lifoqueue(conninfo: str, application_name: str) -> Contestant:
    connect = _connector(conninfo, application_name)
    q: queue.LifoQueue[psycopg.Connection[Any]] = queue.LifoQueue()
    conns = [connect() for _ in range(POOL_SIZE)]
    for conn in conns:
        q.put(conn)
    return Contestant(
        "lifoqueue", "queue.LifoQueue", q.get, q.put, lambda: _close_all(conns), application_name
    )


# --- psycopg_pool.ConnectionPool ---------------------------------------------------------------


def build_psycopg_pool(conninfo: str, application_name: str) -> Contestant:
    from psycopg_pool import ConnectionPool

    pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
        conninfo,
        kwargs={"autocommit": True, "application_name": application_name},
        min_size=POOL_SIZE,
        max_size=POOL_SIZE,
        open=True,
        name="bench",
    )
    pool.wait(timeout=30.0)
    return Contestant(
        "psycopg_pool",
        "psycopg_pool",
        pool.getconn,
        pool.putconn,
        pool.close,
        application_name,
        note="getconn()/putconn()",
    )


# --- SQLAlchemy QueuePool ----------------------------------------------------------------------


def build_sqlalchemy(conninfo: str, application_name: str) -> Contestant:
    from sqlalchemy.pool import QueuePool

    creator: Any = _connector(conninfo, application_name)
    pool = QueuePool(creator, pool_size=POOL_SIZE, max_overflow=0)
    held = [pool.connect() for _ in range(POOL_SIZE)]  # open all ten up front
    for fairy in held:
        fairy.close()
    return Contestant(
        "sqlalchemy",
        "SQLAlchemy QueuePool",
        pool.connect,
        operator.methodcaller("close"),
        pool.dispose,
        application_name,
        note="connect()/close() on the pool's connection proxy",
    )


# --- generic-connection-pool ------------------------------------------------------------------


def _gcp_manager(conninfo: str, application_name: str) -> Any:
    from generic_connection_pool.threading import BaseConnectionManager

    connect = _connector(conninfo, application_name)
    idle = psycopg.pq.TransactionStatus.IDLE

    class PsycopgConnectionManager(BaseConnectionManager[str, psycopg.Connection[Any]]):
        """psycopg 3 twin of the library's ``contrib.psycopg2.DbConnectionManager``.

        Its ``check_aliveness`` (a ``SELECT 1`` on every checkout) is left at the base class's
        no-op, so that, like every other contestant here, it does no round trip per checkout.
        """

        def create(self, endpoint: str, timeout: float | None = None) -> psycopg.Connection[Any]:
            return connect()

        def dispose(
            self, endpoint: str, conn: psycopg.Connection[Any], timeout: float | None = None
        ) -> None:
            conn.close()

        def on_acquire(self, endpoint: str, conn: psycopg.Connection[Any]) -> None:
            self._rollback_uncommitted(conn)

        def on_release(self, endpoint: str, conn: psycopg.Connection[Any]) -> None:
            self._rollback_uncommitted(conn)

        @staticmethod
        def _rollback_uncommitted(conn: psycopg.Connection[Any]) -> None:
            if conn.info.transaction_status != idle:
                conn.rollback()

    return PsycopgConnectionManager()


def build_generic_connection_pool(conninfo: str, application_name: str) -> Contestant:
    from generic_connection_pool.threading import ConnectionPool

    pool: Any = ConnectionPool(
        _gcp_manager(conninfo, application_name),
        min_idle=POOL_SIZE,
        max_size=POOL_SIZE,
        total_max_size=POOL_SIZE,
    )
    endpoint = "bench"
    held = [pool.acquire(endpoint) for _ in range(POOL_SIZE)]
    for conn in held:
        pool.release(conn, endpoint)
    return Contestant(
        "generic_connection_pool",
        "generic-connection-pool",
        functools.partial(pool.acquire, endpoint),
        functools.partial(pool.release, endpoint=endpoint),
        pool.close,
        application_name,
        note="threading.ConnectionPool with a psycopg 3 connection manager",
    )


# --- pooled_clients ----------------------------------------------------------------------------

_django_error: str | None = None


def configure_django(conninfo: str, application_name: str) -> str | None:
    """Configure Django once, the way a project would, with one pool for the benchmark.

    Returns None when ``pools`` is usable, else why not (the engine may not be installed yet).
    """
    global _django_error
    from django.conf import settings

    if settings.configured:
        return _django_error
    try:
        import django

        settings.configure(
            DEBUG=False,
            USE_TZ=True,
            SECRET_KEY="benchmarks",
            INSTALLED_APPS=["pooled_clients"],
            DATABASES={},
            POOLED_CLIENTS={
                OUR_ALIAS: {
                    "BACKEND": "pooled_clients.backends.postgres.PostgresBackend",
                    "OPTIONS": {
                        "conninfo": conninfo,
                        "autocommit": True,
                        "application_name": application_name,
                    },
                    "MIN_SIZE": POOL_SIZE,
                    "MAX_SIZE": POOL_SIZE,
                }
            },
        )
        django.setup()
        from pooled_clients import pools

        pools[OUR_ALIAS]  # fails early when the engine is missing
    except Exception as exc:
        _django_error = f"{type(exc).__name__}: {exc}"
    return _django_error


def _our_pool(conninfo: str, application_name: str) -> Any:
    error = configure_django(conninfo, application_name)
    if error:
        raise RuntimeError(f"pooled_clients is not usable: {error}")
    from pooled_clients import pools

    pool = pools[OUR_ALIAS]
    held = [pool.acquire() for _ in range(POOL_SIZE)]  # open all ten up front
    for conn in held:
        pool.release(conn)
    return pool


def build_ours(conninfo: str, application_name: str) -> Contestant:
    pool = _our_pool(conninfo, application_name)
    return Contestant(
        "pooled_clients",
        "pooled_clients",
        pool.acquire,
        pool.release,
        lambda: None,  # closed once, by close_ours()
        application_name,
        note="pools[alias].acquire()/release(c), default settings",
    )


def build_ours_with(conninfo: str, application_name: str) -> Contestant:
    pool = _our_pool(conninfo, application_name)
    return Contestant(
        "pooled_clients_with",
        "pooled_clients (with)",
        pool.acquire,
        pool.release,
        lambda: None,
        application_name,
        connection=pool.connection,
        note="with pools[alias].connection() as c, same pool",
    )


def close_ours() -> None:
    from django.conf import settings

    if settings.configured and _django_error is None:
        from pooled_clients import pools

        pools.close_all(timeout=5.0)


OURS = "pooled_clients"

SPECS: list[Spec] = [
    Spec("floor", "floor", build_floor, "one threading.Condition guarding a list"),
    Spec(
        "fair_floor",
        "floor, FIFO hand-off",
        build_fair_floor,
        "a reference, not a target: one Lock, a list and a FIFO of waiters; a release hands the "
        "connection straight to the oldest waiter, so the releasing thread cannot barge ahead "
        "of them as it can with the floor",
    ),
    Spec("lifoqueue", "queue.LifoQueue", build_lifoqueue, "queue.LifoQueue get()/put()"),
    Spec(
        "psycopg_pool",
        "psycopg_pool",
        build_psycopg_pool,
        "psycopg_pool.ConnectionPool(min_size=10, max_size=10), opened and waited; "
        "getconn()/putconn()",
    ),
    Spec(
        "sqlalchemy",
        "SQLAlchemy QueuePool",
        build_sqlalchemy,
        "sqlalchemy.pool.QueuePool(creator=psycopg.connect, pool_size=10, max_overflow=0); "
        "connect()/close()",
    ),
    Spec(
        "generic_connection_pool",
        "generic-connection-pool",
        build_generic_connection_pool,
        "generic_connection_pool.threading.ConnectionPool(min_idle=10, max_size=10) with a "
        "psycopg 3 connection manager (no per-checkout aliveness round trip, like the "
        "others); acquire()/release()",
    ),
    Spec(
        OURS,
        "pooled_clients",
        build_ours,
        'pools["bench"] with MIN_SIZE=MAX_SIZE=10, otherwise default settings; '
        "acquire()/release(c)",
    ),
    Spec(
        "pooled_clients_with",
        "pooled_clients (with)",
        build_ours_with,
        'the same pool through `with pools["bench"].connection() as c`',
    ),
]

PEERS = ["psycopg_pool", "sqlalchemy", "generic_connection_pool"]


def count_connections(conninfo: str, prefix: str) -> dict[str, int]:
    """Open backends per application_name starting with ``prefix``, from pg_stat_activity."""
    with psycopg.connect(conninfo, autocommit=True, application_name="bench_observer") as conn:
        rows = conn.execute(
            "SELECT application_name, count(*) FROM pg_stat_activity "
            "WHERE application_name LIKE %s GROUP BY application_name",
            (prefix + "%",),
        ).fetchall()
    return {name: int(n) for name, n in rows}


def wait_for_connections(
    conninfo: str, application_name: str, expected: int, timeout: float = 10.0
) -> int:
    deadline = time.monotonic() + timeout
    while True:
        n = count_connections(conninfo, application_name).get(application_name, 0)
        if n == expected or time.monotonic() > deadline:
            return n
        time.sleep(0.05)
