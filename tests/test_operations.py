"""Operating pools: callable OPTIONS (rotated credentials), drain() and wait(), against real
servers."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.test import override_settings
from psycopg.rows import dict_row

from devservers.http import UpstreamServer
from devservers.postgres import PostgresCluster
from pooled_clients import pools
from pooled_clients.exceptions import ClientCreationError, PoolError, PoolTimeout
from tests.waiting import wait_until

PG = "pooled_clients.backends.postgres.PostgresBackend"


@pytest.fixture
def role(postgres: PostgresCluster) -> Iterator[tuple[str, list[str]]]:
    """A login role of its own whose password the test rotates; ``[current password]``."""
    name = f"rot_{uuid.uuid4().hex[:8]}"
    password = [f"old-{uuid.uuid4().hex}"]
    postgres.execute(f"create role {name} login password '{password[0]}'")
    yield name, password
    postgres.execute("select pg_terminate_backend(pid) from pg_stat_activity "
                     "where usename = %s", (name,))
    postgres.execute(f"drop role if exists {name}")


def _sessions(postgres: PostgresCluster, app: str) -> list[tuple[int, Any]]:
    return [(int(pid), started) for pid, started in postgres.execute(
        "select pid, backend_start from pg_stat_activity where application_name = %s",
        (app,))]


def _rotating_pool(postgres: PostgresCluster, user: str, password: list[str], app: str,
                   **keys: Any) -> dict[str, Any]:
    return {
        "BACKEND": PG,
        "OPTIONS": {"host": postgres.host, "port": postgres.port, "dbname": "app",
                    "user": user, "password": lambda: password[0], "autocommit": True,
                    "application_name": app},
        "MAX_SIZE": 4, "TIMEOUT": 5.0, **keys,
    }


def test_password_rotation_and_drain_replace_every_session(
        postgres: PostgresCluster, role: tuple[str, list[str]]) -> None:
    user, password = role
    app = f"pc-rot-{uuid.uuid4().hex[:8]}"
    errors: list[BaseException] = []
    done = threading.Event()
    with override_settings(POOLED_CLIENTS={"warehouse": _rotating_pool(
            postgres, user, password, app, MIN_SIZE=2)}):
        pool = pools["warehouse"]
        pool.wait(timeout=10)
        held = pool.acquire()  # in use across the rotation: closed only when released

        def load() -> None:
            while not done.is_set():
                try:
                    with pool.connection() as conn:
                        conn.execute("select 1")
                except BaseException as exc:  # every failure counts
                    errors.append(exc)

        workers = [threading.Thread(target=load) for _ in range(3)]
        for worker in workers:
            worker.start()
        try:
            wait_until(lambda: pool.stats().acquired_total > 20, timeout=10)
            old = {pid for pid, _ in _sessions(postgres, app)}
            password[0] = f"new-{uuid.uuid4().hex}"
            postgres.execute(f"alter role {user} password '{password[0]}'")
            drained_at = postgres.execute("select clock_timestamp()")[0][0]
            pool.drain()
            # The old password no longer opens anything; the sessions it opened still work.
            with pytest.raises(psycopg.OperationalError):
                psycopg.connect(host=postgres.host, port=postgres.port, dbname="app",
                                user=user, password="old-does-not-matter", connect_timeout=5)
            assert held.execute("select 2").fetchone() == (2,)
            before = pool.stats().acquired_total
            wait_until(lambda: pool.stats().acquired_total > before + 50, timeout=10)
        finally:
            done.set()
            for worker in workers:
                worker.join(10)
        assert errors == []
        pool.release(held)

        def only_new_sessions() -> bool:
            rows = _sessions(postgres, app)
            return bool(rows) and all(started > drained_at for _, started in rows)

        wait_until(only_new_sessions, timeout=10,
                   message="sessions opened before the drain are still open")
        assert not old & {pid for pid, _ in _sessions(postgres, app)}
        stats = pool.stats()
        assert stats.drains_total == 1 and stats.last_drained_at is not None
        # The new password is a secret like any other.
        assert password[0] not in pool.mask(f"login with {password[0]} failed")
        pool.close(timeout=1)


def test_a_drain_while_callers_wait_fails_none_of_them(
        postgres: PostgresCluster, role: tuple[str, list[str]]) -> None:
    user, password = role
    app = f"pc-wait-{uuid.uuid4().hex[:8]}"
    with override_settings(POOLED_CLIENTS={"warehouse": _rotating_pool(
            postgres, user, password, app, MAX_SIZE=1)}):
        pool = pools["warehouse"]
        first = pool.acquire()
        got: list[Any] = []
        waiter = threading.Thread(target=lambda: got.append(pool.acquire(timeout=10)))
        waiter.start()
        wait_until(lambda: pool.stats().waiting == 1)
        pool.drain()
        pool.release(first)  # condemned: closed, and a new client goes to the waiter
        waiter.join(10)
        assert len(got) == 1 and got[0] is not first
        assert got[0].execute("select 1").fetchone() == (1,)
        pool.release(got[0])
        pool.close(timeout=1)


def test_a_failing_callable_fails_the_creation_with_its_reason_masked(
        postgres: PostgresCluster) -> None:
    def token() -> str:
        raise RuntimeError("token service said no to token=abc123secret")

    options = {**postgres.kwargs(dbname="app"), "password": token}
    with override_settings(POOLED_CLIENTS={"warehouse": {
            "BACKEND": PG, "OPTIONS": options, "TIMEOUT": 2.0, "CONNECT_RETRIES": 0}}):
        start = time.monotonic()
        with pytest.raises(ClientCreationError) as caught:
            pools["warehouse"].acquire()
        assert time.monotonic() - start < 2.5
        message = str(caught.value)
        assert "OPTIONS['password']" in message and "RuntimeError" in message
        assert "abc123secret" not in message
        assert "abc123secret" not in (pools["warehouse"].stats().last_error or "x")


def test_a_hanging_callable_is_bounded_by_connect_timeout(postgres: PostgresCluster) -> None:
    release = threading.Event()
    options = {**postgres.kwargs(dbname="app"), "password": lambda: release.wait(30)}
    with override_settings(POOLED_CLIENTS={"warehouse": {
            "BACKEND": PG, "OPTIONS": options, "TIMEOUT": 5.0, "CONNECT_TIMEOUT": 0.5,
            "CONNECT_RETRIES": 0, "MAX_SIZE": 1}}):
        start = time.monotonic()
        try:
            with pytest.raises(ClientCreationError, match="did not return within "
                                                          "CONNECT_TIMEOUT"):
                pools["warehouse"].acquire()
            assert time.monotonic() - start < 2.0
            # The slot came back: the pool is not stuck with a creation that never ends.
            assert pools["warehouse"].stats().creating == 0
        finally:
            release.set()


def test_what_a_callable_returns_is_masked_in_library_errors(
        postgres: PostgresCluster) -> None:
    # libpq quotes a bad sslmode value in its error: the value came from a callable.
    options = {**postgres.kwargs(dbname="app"), "sslmode": lambda: "zz-provided-value"}
    with override_settings(POOLED_CLIENTS={"warehouse": {
            "BACKEND": PG, "OPTIONS": options, "TIMEOUT": 2.0, "CONNECT_RETRIES": 0}}):
        with pytest.raises(ClientCreationError) as caught:
            pools["warehouse"].acquire()
        assert "zz-provided-value" in str(caught.value.__cause__)  # the library echoed it
        assert "zz-provided-value" not in str(caught.value)
        assert "zz-provided-value" not in (pools["warehouse"].stats().last_error or "")


def test_factories_are_options_never_called_by_the_pool(postgres: PostgresCluster) -> None:
    options = {**postgres.kwargs(dbname="app"), "password": lambda: postgres.password,
               "row_factory": dict_row, "autocommit": True}
    with (override_settings(POOLED_CLIENTS={"warehouse": {"BACKEND": PG, "OPTIONS": options}}),
          pools["warehouse"].connection() as conn):
        assert conn.execute("select 1 as one").fetchone() == {"one": 1}


def test_wait_blocks_until_min_size_clients_are_open(postgres: PostgresCluster) -> None:
    app = f"pc-warm-{uuid.uuid4().hex[:8]}"
    options = {"conninfo": postgres.conninfo(dbname="app"), "application_name": app}
    with override_settings(POOLED_CLIENTS={"warehouse": {
            "BACKEND": PG, "OPTIONS": options, "MIN_SIZE": 3, "MAX_SIZE": 5}}):
        pools["warehouse"].wait(timeout=10)
        assert pools["warehouse"].stats().idle == 3
        assert len(_sessions(postgres, app)) == 3
        pools["warehouse"].close(timeout=1)


def test_wait_raises_pool_timeout_when_min_size_cannot_be_reached(
        postgres: PostgresCluster) -> None:
    options = {**postgres.kwargs(dbname="app"), "password": "wrong-password"}
    with override_settings(POOLED_CLIENTS={"warehouse": {
            "BACKEND": PG, "OPTIONS": options, "MIN_SIZE": 1, "CONNECT_RETRIES": 0}}):
        with pytest.raises(PoolTimeout, match="0 of MIN_SIZE 1") as caught:
            pools["warehouse"].wait(timeout=0.5)
        assert "wrong-password" not in str(caught.value)


def test_http_token_callable_upstream_sees_only_the_new_token_after_a_drain(
        upstream: UpstreamServer) -> None:
    token = ["old-token-1111"]
    seen_after: list[str] = []
    with override_settings(POOLED_CLIENTS={"payments": {
            "BACKEND": "pooled_clients.backends.http.HTTPBackend",
            "OPTIONS": {"base_url": upstream.url,
                        "headers": {"Authorization": lambda: f"Bearer {token[0]}",
                                    "Accept": "application/json"}},
            "MAX_SIZE": 3}}):
        pool = pools["payments"]
        clients = [pool.acquire() for _ in range(3)]
        for client in clients:
            seen = client.get("echo").json()["headers"]["Authorization"]
            assert seen == "Bearer old-token-1111"
        for client in clients[1:]:
            pool.release(client)
        token[0] = "new-token-2222"
        pool.drain()
        pool.release(clients[0])  # in use during the drain: closed, never handed out again

        def request() -> None:
            with pool.connection() as http:
                seen_after.append(http.get("echo").json()["headers"]["Authorization"])

        threads = [threading.Thread(target=lambda: [request() for _ in range(10)])
                   for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert len(seen_after) == 40
        assert set(seen_after) == {"Bearer new-token-2222"}
        assert "new-token-2222" not in pool.mask("Authorization: Bearer new-token-2222")
        pool.close(timeout=1)


def test_pools_drain_drains_one_alias_or_every_built_pool(upstream: UpstreamServer) -> None:
    definition = {"BACKEND": "pooled_clients.backends.http.HTTPBackend",
                  "OPTIONS": {"base_url": upstream.url}}
    with override_settings(POOLED_CLIENTS={"a": definition, "b": definition}):
        pools["a"].check()
        pools["b"].check()
        pools.drain("a")
        assert (pools["a"].stats().drains_total, pools["b"].stats().drains_total) == (1, 0)
        pools.drain()
        assert (pools["a"].stats().drains_total, pools["b"].stats().drains_total) == (2, 1)
        with pytest.raises(PoolError):
            pools.drain("missing")


@pytest.mark.django_db
def test_warm_up_opens_nothing_in_check_or_migrate_and_min_size_on_the_first_request(
        settings: Any, postgres: PostgresCluster, monkeypatch: pytest.MonkeyPatch,
        pooled_clients_settings: Any) -> None:
    from django.core.management import call_command
    from django.core.signals import request_started
    from django.test import Client

    from pooled_clients import lifecycle

    settings.POOLED_CLIENTS_WARM_UP = True
    app = f"pc-warmup-{uuid.uuid4().hex[:8]}"
    pooled_clients_settings("warehouse", {
        "BACKEND": PG, "MIN_SIZE": 2,
        "OPTIONS": {"conninfo": postgres.conninfo(dbname="app"), "application_name": app}})
    monkeypatch.setattr(lifecycle, "_warmed_pid", 0)
    call_command("check", verbosity=0)
    call_command("migrate", verbosity=0)
    assert not pools["warehouse"].started() and _sessions(postgres, app) == []
    # ready() connected the receiver only if the setting was on then: as it is in production.
    request_started.connect(lifecycle.warm_up, dispatch_uid="pooled_clients_warm_up")
    try:
        Client().get("/no-such-page/")
    finally:
        request_started.disconnect(dispatch_uid="pooled_clients_warm_up")
    wait_until(lambda: len(_sessions(postgres, app)) == 2, timeout=10)
    pools["warehouse"].close(timeout=1)


def test_a_creation_under_way_during_a_drain_is_replaced_before_anyone_uses_it(
        postgres: PostgresCluster, role: tuple[str, list[str]]) -> None:
    user, password = role
    app = f"pc-inflight-{uuid.uuid4().hex[:8]}"
    calls: list[float] = []
    resume = threading.Event()

    def slow_password() -> str:
        calls.append(time.monotonic())
        if len(calls) == 1:
            resume.wait(5)  # the first creation is under way while the pool is drained
        return password[0]

    definition = _rotating_pool(postgres, user, password, app, MAX_SIZE=1,
                                CONNECT_TIMEOUT=10.0, TIMEOUT=10.0)
    definition["OPTIONS"]["password"] = slow_password
    with override_settings(POOLED_CLIENTS={"warehouse": definition}):
        pool = pools["warehouse"]
        got: list[Any] = []
        caller = threading.Thread(target=lambda: got.append(pool.acquire()))
        caller.start()
        wait_until(lambda: len(calls) == 1)
        pool.drain()
        drained_at = postgres.execute("select clock_timestamp()")[0][0]
        resume.set()
        caller.join(10)
        assert len(got) == 1 and len(calls) == 2  # created again, after the drain
        started = got[0].execute("select backend_start from pg_stat_activity "
                                 "where pid = pg_backend_pid()").fetchone()[0]
        assert started > drained_at
        stats = pool.stats()
        assert (stats.created_total, stats.closed_total) == (2, 1)
        pool.release(got[0])
        pool.close(timeout=1)


def test_a_target_given_by_a_callable_is_described_as_such(upstream: UpstreamServer) -> None:
    with override_settings(POOLED_CLIENTS={"payments": {
            "BACKEND": "pooled_clients.backends.http.HTTPBackend",
            "OPTIONS": {"base_url": lambda: upstream.url}}}):
        pool = pools["payments"]
        assert pool.target == "(base_url provided by a callable)"
        with pool.connection() as http:
            assert http.get("health").status_code == 200
        pool.check()  # the check reaches the session's own base URL


def test_every_built_in_backend_creates_its_clients_from_callables(
        postgres: PostgresCluster, upstream: UpstreamServer, redis_server: Any,
        ws_server: Any, grpc_server: Any) -> None:
    import asyncio

    calls: dict[str, int] = {}

    def counted(name: str, value: Any) -> Any:
        def provide() -> Any:
            calls[name] = calls.get(name, 0) + 1
            return value
        return provide

    definitions = {
        "tcp": {"BACKEND": "pooled_clients.backends.tcp.TCPBackend",
                "OPTIONS": {"host": counted("tcp", "127.0.0.1"),
                            "port": int(upstream.url.rsplit(":", 1)[1].strip("/"))}},
        "redis": {"BACKEND": "pooled_clients.backends.redis.RedisBackend",
                  "OPTIONS": {"url": counted("redis", redis_server.url)}},
        "ws": {"BACKEND": "pooled_clients.backends.websocket.WebSocketBackend",
               "OPTIONS": {"url": counted("ws", ws_server.url)}},
        "grpc": {"BACKEND": "pooled_clients.backends.grpc.GRPCChannelBackend",
                 "OPTIONS": {"target": counted("grpc", grpc_server.target),
                             "health_service": ""}},
        "apg": {"BACKEND": "pooled_clients.backends.postgres.AsyncPostgresBackend",
                "OPTIONS": {**postgres.kwargs(dbname="app"),
                            "password": counted("apg", postgres.password)}},
        "ahttp": {"BACKEND": "pooled_clients.backends.async_http.AsyncHTTPBackend",
                  "OPTIONS": {"base_url": upstream.url,
                              "headers": {"X-Token": counted("ahttp", "tok-123456")}}},
    }
    with override_settings(POOLED_CLIENTS=definitions):
        for alias in ("tcp", "redis", "ws", "grpc"):
            pools[alias].check()
            pools[alias].drain()
            pools[alias].check()
            assert calls[alias] == 2, alias  # once per creation: before and after the drain
        with pools["redis"].connection() as client:
            assert client.ping() is True

        async def use() -> None:
            async with pools["apg"].aconnection() as conn:
                assert await (await conn.execute("select 1")).fetchone() == (1,)
            async with pools["ahttp"].aconnection() as http:
                seen = (await http.get("echo")).json()["headers"]
                assert seen["X-Token"] == "tok-123456"

        asyncio.run(use())
        assert calls["apg"] == 1 and calls["ahttp"] == 1
        assert "tok-123456" not in pools["ahttp"].mask("X-Token: tok-123456")
        for alias in definitions:
            pools[alias].close(timeout=1)
